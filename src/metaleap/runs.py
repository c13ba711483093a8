"""Run folders: resolved config, metrics log, checkpoints, results and exported weights.

A run folder holds::

    config.json            the protocol and its fully resolved configuration
    provenance.json        the data's identity and content digest, and per session the
                           versions, device, threads
    metrics.jsonl          one JSON line per meta-step and per validation
    checkpoints/KEY.pt     the latest state of an unfinished (seed, method); plain tensors
    results/KEY.json       the finished (seed, method) results
    init/KEY.safetensors   the learned initialization, with its config in the metadata
    results.json, report.md, *.png   the summary (see :mod:`metaleap.protocols.reporting`)

Only one process writes a run folder (rank 0 of a distributed run; the others read it
through :class:`RunReader`). Every file is written atomically (temporary file, then
rename), so an interrupted run (Ctrl-C, ``kill -9``, power loss) leaves the last complete
state. Each checkpoint and result records
the length of ``metrics.jsonl`` when it was written; resuming cuts the log back to the
newest of those, so the resumed log equals an uninterrupted one. Resuming on other data
(another glyph cache, another Omniglot folder) is refused, and so is resuming on data whose
bytes differ from those recorded in ``data_content`` (the same inputs drawn otherwise on
another machine); a run begun before ``data_content`` existed has it recorded on resuming.
"""

from __future__ import annotations

import datetime
import json
import pickle
import shutil
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from metaleap.devices import numerics_changes
from metaleap.files import atomic_write, write_json
from metaleap.models import make_convnet

OFFSET = "log_offset"


class RunError(RuntimeError):
    """A run folder that cannot be used as asked (exists, missing, other config)."""


def _machine_prefixes() -> list[tuple[str, str]]:
    """(prefix, stand-in) for the folders that differ from machine to machine, longest first:
    the Python environment's package folders, its prefix and the home folder."""
    found = {sysconfig.get_paths()[k]: "<site-packages>" for k in ("purelib", "platlib")}
    found[sys.prefix] = "<python>"
    found[str(Path.home())] = "~"
    return sorted(((p.rstrip("/") + "/", name + "/") for p, name in found.items() if p != "/"),
                  key=lambda item: -len(item[0]))


def portable(value: Any) -> Any:
    """``value`` (JSON-able) with every machine path in its strings relativised: the
    environment's package folders → ``<site-packages>/``, its prefix → ``<python>/``, the
    home folder → ``~/``. What a run folder records then names no one machine."""
    if isinstance(value, str):
        for prefix, name in _machine_prefixes():
            value = value.replace(prefix, name)
        return value
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    return value


def check_run_folder(path: Path, config: dict[str, Any], identity: dict[str, Any] | None,
                     resume: bool, overwrite: bool,
                     content: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Raise :class:`RunError` unless ``path`` can be used as asked; reads, never writes.

    Returns the recorded provenance of a run to resume (None otherwise). ``config`` and
    ``identity`` are compared as they are recorded, :func:`portable`; ``content`` (the data's
    digest, :meth:`~metaleap.protocols.base.StudyProtocol.data_digest`) by its ``sha256``,
    where both the run and this session have one.
    """
    config, identity = portable(config), portable(identity)
    if resume and overwrite:
        raise RunError("choose one of --resume and --overwrite")
    if not resume:
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise RunError(f"{path} exists and is not empty: "
                           "pass --resume to continue it or --overwrite to replace it")
        return None
    if not (path / "config.json").is_file():
        raise RunError(f"cannot resume: {path} holds no run (no config.json)")
    saved = _read_json(path / "config.json")
    if saved != config:
        diff = _differing_keys(saved, config)
        if "config" in diff and isinstance(saved.get("config"), dict):
            diff = _differing_keys(saved["config"], config.get("config", {}))
        raise RunError(f"cannot resume {path}: its config differs in {diff}")
    provenance = _read_json(path / "provenance.json") if (
        path / "provenance.json").is_file() else {"data": identity, "sessions": []}
    if provenance.get("data") != identity:
        raise RunError(f"cannot resume {path}: it ran on other data "
                       f"({_data_difference(provenance.get('data'), identity)}); "
                       "resume it with the data it started with")
    recorded = provenance.get("data_content")
    if isinstance(recorded, dict) and content is not None and (
            recorded.get("sha256") != content.get("sha256")):
        raise RunError(f"cannot resume {path}: its data have the same inputs but other bytes "
                       f"here ({_content_difference(recorded, content)}); `metaleap data check "
                       f"{path}` says how they differ; resume it where the data are "
                       "byte-identical, or start afresh with --overwrite")
    return provenance


class RunReader:
    """A run folder as a ``Store`` that only reads: checkpoints and results, never a write.

    What processes other than rank 0 of a distributed run use: they resume from the same
    files and leave every write to rank 0.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def log(self, record: dict[str, Any]) -> None:
        """Nothing: rank 0 logs."""

    def save_state(self, key: str, state: dict[str, Any]) -> None:
        """Nothing: rank 0 checkpoints."""

    def save_result(self, key: str, result: dict[str, Any]) -> None:
        """Nothing: rank 0 saves results."""

    def export_initialization(self, key: str, tensors: dict[str, Tensor],
                              metadata: dict[str, str]) -> None:
        """Nothing: rank 0 exports."""

    def load_state(self, key: str) -> dict[str, Any] | None:
        path = self.path / "checkpoints" / f"{key}.pt"
        if not path.is_file():
            return None
        state = load_checkpoint(path)
        state.pop(OFFSET)
        return state

    def load_result(self, key: str) -> dict[str, Any] | None:
        path = self.path / "results" / f"{key}.json"
        if not path.is_file():
            return None
        result = _read_json(path)
        result.pop(OFFSET, None)
        return result

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunDir(RunReader):
    """A run folder; implements the protocols' ``Store``.

    Args:
        path: the folder.
        config: the protocol and its resolved configuration (a JSON-able dict).
        identity: what identifies the data (``TaskSet.identity()``).
        environment: the versions, device and threads of this session
            (:func:`metaleap.devices.describe`).
        resume: continue the run in ``path``; its config and data must equal these.
        overwrite: delete whatever ``path`` holds and start afresh.
        tensorboard: also write the numeric fields of each record as TensorBoard scalars
            (``path/tensorboard``; needs ``pip install tensorboard``).
        content: the data's digest (``StudyProtocol.data_digest()``), recorded as
            ``data_content``; a resumed run without one gets it, one with another ``sha256``
            is refused.
    Without either flag, an existing non-empty ``path`` is an error: nothing is overwritten.
    """

    def __init__(self, path: str | Path, config: dict[str, Any],
                 identity: dict[str, Any] | None = None,
                 environment: dict[str, Any] | None = None, resume: bool = False,
                 overwrite: bool = False, tensorboard: bool = False,
                 content: dict[str, Any] | None = None) -> None:
        super().__init__(path)
        config, identity, environment = portable(config), portable(identity), portable(environment)
        content = portable(content)
        provenance = check_run_folder(self.path, config, identity, resume, overwrite, content)
        session = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), **(environment or {})}
        if provenance is not None:
            self._truncate_log()
            changed = numerics_changes(provenance["sessions"][0], session) if provenance[
                "sessions"] else []
            if changed:
                session["changed"] = changed
                print(f"metaleap: resuming {self.path} with {', '.join(changed)}: the continued "
                      "run will not match an uninterrupted one bit for bit (recorded in "
                      "provenance.json)", file=sys.stderr, flush=True)
        else:
            if self.path.exists() and any(self.path.iterdir()):
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / "config.json", config)
            provenance = {"data": identity, "sessions": []}
        if content is not None and "data_content" not in provenance:  # new, or begun before it
            provenance = {"data": provenance["data"], "data_content": content,
                          **{k: v for k, v in provenance.items() if k != "data"}}
        provenance["sessions"].append(session)
        write_json(self.path / "provenance.json", provenance)
        self._log = open(self.path / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RunError("--tensorboard needs: pip install tensorboard") from None
            self._tb = SummaryWriter(str(self.path / "tensorboard"))

    # ---------------------------------------------------------------- Store
    def log(self, record: dict[str, Any]) -> None:
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        if self._tb is not None:
            prefix = f"{record.get('method')}/seed{record.get('seed')}/{record.get('event')}"
            for k, v in record.items():
                if isinstance(v, float):
                    self._tb.add_scalar(f"{prefix}/{k}", v, record.get("step", 0))

    def save_state(self, key: str, state: dict[str, Any]) -> None:
        state = {**state, OFFSET: self._offset()}
        atomic_write(self.path / "checkpoints" / f"{key}.pt", lambda tmp: torch.save(state, tmp))

    def save_result(self, key: str, result: dict[str, Any]) -> None:
        write_json(self.path / "results" / f"{key}.json", {**result, OFFSET: self._offset()})
        (self.path / "checkpoints" / f"{key}.pt").unlink(missing_ok=True)

    def export_initialization(self, key: str, tensors: dict[str, Tensor],
                              metadata: dict[str, str]) -> None:
        tensors = {k: tensors[k].detach().contiguous().cpu() for k in sorted(tensors)}
        atomic_write(self.path / "init" / f"{key}.safetensors",
                     lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    # ---------------------------------------------------------------- helpers
    def _offset(self) -> int:
        self._log.flush()
        return self._log.tell()

    def _truncate_log(self) -> None:
        """Cut ``metrics.jsonl`` back to what the newest checkpoint or result had seen."""
        offsets = [0]
        for path in (self.path / "checkpoints").glob("*.pt"):
            offsets.append(load_checkpoint(path)[OFFSET])
        for path in (self.path / "results").glob("*.json"):
            offsets.append(_read_json(path).get(OFFSET, 0))
        log = self.path / "metrics.jsonl"
        if log.exists():
            with open(log, "rb+") as f:
                f.truncate(max(offsets))

    def close(self) -> None:
        self._log.close()
        if self._tb is not None:
            self._tb.close()


CHECKPOINT_KEYS = {"step", "module", "extra", OFFSET}
#: Slots a checkpoint holds when the run has them: its own state, and progress inside a step.
OPTIONAL_KEYS = {"run", "progress", "tally"}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint of this run folder, or :class:`RunError` naming the file and the fix.

    Loads with ``weights_only=True``: a file holding arbitrary pickled objects is refused,
    never executed. A truncated, corrupt or foreign file is refused in one line.
    """
    fix = "delete it to restart that (seed, method) from its start, or restore it"
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a class or function the weights-only loader refused
            raise RunError(f"{path} holds objects other than tensors and plain data, so it is "
                           f"not a metaleap checkpoint and was not loaded: {fix}") from None
        raise RunError(f"{path} is truncated or corrupt (UnpicklingError): {fix}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise RunError(f"{path} is truncated or corrupt ({type(e).__name__}): {fix}") from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state) <= (
            CHECKPOINT_KEYS | OPTIONAL_KEYS) or not isinstance(state["step"], int):
        raise RunError(f"{path} is not a metaleap checkpoint (expected the keys "
                       f"{sorted(CHECKPOINT_KEYS)}, and maybe {sorted(OPTIONAL_KEYS)}): {fix}")
    return state


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path} cannot be read ({type(e).__name__}): restore it, or start "
                       "the run afresh with --overwrite") from None


def _differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _content_difference(recorded: dict[str, Any], now: dict[str, Any]) -> str:
    """How two data digests differ, in a few words: the share of per-task digests that differ
    where both have them."""
    text = (f"content SHA-256 {str(recorded.get('sha256'))[:12]}… recorded, "
            f"{str(now.get('sha256'))[:12]}… here")
    for part in ("alphabets", "datasets"):
        a, b = recorded.get(part), now.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            shown = ", ".join(differ[:3]) + (", …" if len(differ) > 3 else "")
            text += f"; {len(differ)} of {len(set(a) | set(b))} {part} differ ({shown})"
    return text


def _data_difference(saved: Any, now: Any) -> str:
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return f"recorded {saved!r}, now {now!r}"
    return "differs in " + ", ".join(_differing_keys(saved, now))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a partial last line is ignored)."""
    records = []
    with open(Path(path) / "metrics.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                records.append(json.loads(line))
    return records


def load_initialization(path: str | Path) -> nn.Module:
    """A fresh ConvNet with an exported initialization loaded (its head too, if learned).

    ``path`` is an ``init/KEY.safetensors`` file of a run. Parameters the method does not
    learn (finetuning's head) keep the fresh model's seeded values.
    """
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    model = make_convnet(int(metadata["num_classes"]), int(metadata["seed"]),
                         image_size=config["image_size"],
                         block_order=config.get("block_order", "bn-relu-pool"))
    loaded = model.load_state_dict(load_file(str(path)), strict=False)
    if loaded.unexpected_keys:
        raise RunError(f"{path} does not fit a ConvNet: unexpected {loaded.unexpected_keys}")
    return model
