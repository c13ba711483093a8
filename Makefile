# Quickstart: `make demo` (the main job) and `make test` (the suite). Both set everything up.
PYTHON ?= python3
# CPU build of PyTorch; override (e.g. TORCH='torch>=2.2') on machines with a GPU.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
DEBS := fonts-noto-core fonts-dejavu-core fonts-dejavu-extra fonts-freefont-ttf fonts-unifont \
        dataset-fashion-mnist

.PHONY: demo test lint system-data clean

$(BIN)/metaleap: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[dev,multicv,rl]'
	$(BIN)/pip install -q --no-deps animal-mnist
	touch $@

# Optional Debian data (more glyph alphabets, Fashion-MNIST); skipped with a note when not root.
$(VENV)/.system-data: | $(BIN)/metaleap
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null) \
	    || echo "note: could not install $(DEBS); running with fewer datasets"; \
	else echo "note: not root; install for more datasets: sudo apt-get install $(DEBS)"; fi
	touch $@

system-data: $(VENV)/.system-data

demo: $(BIN)/metaleap system-data
	$(BIN)/metaleap demo

lint: $(BIN)/metaleap
	$(BIN)/ruff check src tests benchmarks

test: lint system-data
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
