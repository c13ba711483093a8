"""Every Python example of README.md and docs/ runs as printed and shows what its text says.

The examples are the ```python fenced blocks, read from the Markdown itself (CommonMark
fences, indented ones in list items included), so an edit to an example is what gets tested.
Each runs alone in a fresh namespace, in this process (conftest.py has set one thread), as a
script would (``__name__ == "__main__"``), with PyTorch's global RNG restored afterwards; its
tracebacks name the Markdown file and line. A snippet that cannot run alone (it uses names
defined elsewhere) is not an example: it is fenced as a plain ``` block.

Every example has an entry in ``CHECKS``, keyed by its file and the heading above it, that
asserts what the text around it claims. A check reads the example in one of two ways, said in
its docstring: what it printed (the README's examples print what a newcomer reads, and the
check parses those lines), or the variables it left in its namespace (the docs' examples,
which print nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).parents[1]
PYTHON = {"python", "py", "python3"}  # fence info strings of a Python example
OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<title>.*?)(?:\s+#+)?\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # the opening fence's line (1-based)
    key: str  # "FILE#section", the section being the heading above it (slugged)
    info: str  # the fence's language ("" for a plain ```)
    code: str  # the content, the fence's indentation removed


def slug(title: str) -> str:
    """A heading as GitHub anchors it: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def fenced_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced code blocks of ``path`` (or of ``text``, read as that file), in order; an
    unclosed fence is an error."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    name = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    section, seen, i = "", {}, 0
    while i < len(lines):
        heading, opening = HEADING.match(lines[i]), OPENING.match(lines[i])
        if heading:
            section = slug(heading["title"])
        elif opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):
            start, indent, fence = i + 1, len(opening["indent"]), opening["fence"]
            closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
            body = []
            i += 1
            while i < len(lines) and not closing.match(lines[i]):
                # CommonMark: remove up to the opening fence's indentation from each line
                body.append(re.sub(rf"^ {{0,{indent}}}", "", lines[i]))
                i += 1
            if i == len(lines):
                raise ValueError(f"{name}:{start}: the fence opened here is never closed")
            key = f"{name}#{section}"
            seen[key] = seen.get(key, 0) + 1
            key += f"-{seen[key]}" if seen[key] > 1 else ""
            info = opening["info"].strip().split()[0].lower() if opening["info"].strip() else ""
            blocks.append(Block(path, start, key, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


EXAMPLES = [b for path in documents() for b in fenced_blocks(path) if b.info in PYTHON]


def run(block: Block) -> tuple[dict[str, Any], str]:
    """Execute ``block`` as a script in a fresh namespace; its namespace and what it printed."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    # blank lines up to the fence, so that a traceback's line is the Markdown file's
    code = compile("\n" * block.line + block.code, str(block.path), "exec")
    out = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(out):
        exec(code, namespace)
    print(out.getvalue())  # shown by pytest if a check fails
    assert torch.is_grad_enabled(), "the example left autograd disabled"
    return namespace, out.getvalue()


def numbers(pattern: str, out: str) -> list[tuple[float, ...]]:
    """Every match of ``pattern`` (a line, with float groups) in ``out``, as floats."""
    found = re.findall(pattern, out, re.M)
    assert found, f"no line of the output matches {pattern!r}:\n{out}"
    return [tuple(float(v) for v in (m if isinstance(m, tuple) else (m,))) for m in found]


# ---------------------------------------------------------------- what each example claims
def leap_in_your_own_training_loop(block: Block, ns: dict[str, Any], out: str) -> None:
    """Reads what it printed: the mean path length of each meta-step falls (θ⁰ converges,
    where meta lr 0.1 made it diverge), and new tasks end with a lower loss from the learned
    θ⁰ than from the initial one."""
    paths = [p for (p,) in numbers(r"^meta-step +\d+: mean path length +(\S+)$", out)]
    assert len(paths) >= 10 and all(math.isfinite(p) for p in paths), paths
    assert paths[-1] < 0.7 * paths[0], f"the mean path did not fall: {paths}"  # 19.0 → 9.1
    assert max(paths[1:]) < paths[0], f"the mean path rose above its start: {paths}"
    held_out = dict(re.findall(
        r"^held-out loss after \d+ steps from the (initial|learned) θ⁰: (\S+)$", out, re.M))
    assert set(held_out) == {"initial", "learned"}, out
    before, after = float(held_out["initial"]), float(held_out["learned"])
    assert after < 0.75 * before, (before, after)  # 2.21 → 1.05


def every_method_one_interface(block: Block, ns: dict[str, Any], out: str) -> None:
    """Reads what it printed (θ⁰'s slope and the mean loss after adaptation), then runs the
    same example with each method its comment names in place of "reptile": every one moves
    θ⁰ from slope 0 towards the tasks' slopes (1 and 3)."""
    for name in ("reptile", "leap", "fomaml", "maml"):
        if name != "reptile":
            assert block.code.count('"reptile"') == 1
            code = block.code.replace('"reptile"', f'"{name}"')
            ns, out = run(dataclasses.replace(block, code=code))
        [(slope, loss)] = numbers(r"^θ⁰ slope (\S+), mean loss after 5 steps (\S+)$", out)
        assert 0.1 < slope <= 3.0, (name, slope)
        assert math.isfinite(loss), (name, loss)
        assert ns["metrics"]["tasks"] == 2 and ns["metrics"]["dropped"] == 0, ns["metrics"]


def contribution_reduce_apply(block: Block, ns: dict[str, Any], out: str) -> None:
    """Reads its namespace (``c``, ``stats``, ``leap``): the contribution holds the sums its
    comment lists, ``apply`` divides by the count of kept tasks and writes θ⁰'s ``.grad``, and
    the three steps give what ``meta_grad()`` gives (the example rerun with it instead)."""
    c, stats, leap = ns["c"], ns["stats"], ns["leap"]
    assert set(c.sums) == {"grad", "tasks", "dropped", "path"} and not c.buffers
    assert c.count("tasks") == stats.tasks == 2 and c.count("dropped") == stats.dropped == 0
    assert stats.mean_path == pytest.approx(float(c.sums["path"]) / 2)
    grads = [p.grad for p in leap.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    head, found, _ = block.code.partition("c = leap.contribution()")
    assert found
    chained, _ = run(dataclasses.replace(block, code=head + "stats = leap.meta_grad()\n"))
    assert chained["stats"] == stats
    for g, p in zip(grads, chained["leap"].parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def one_task_one_meta_step(block: Block, ns: dict[str, Any], out: str) -> None:
    """Reads its namespace (``contribution``, ``metrics``, ``learner``): three tasks were
    summed and applied, and θ⁰ moved from slope 0 towards the tasks' slopes (1 to 3)."""
    assert ns["contribution"].count("tasks") == 3
    assert ns["metrics"]["tasks"] == 3 and ns["metrics"]["dropped"] == 0, ns["metrics"]
    slope = ns["learner"].initialization()["weight"].item()
    assert 0 < slope < 3, slope


Check = Callable[[Block, dict[str, Any], str], None]
CHECKS: dict[str, Check] = {
    "README.md#leap-in-your-own-training-loop": leap_in_your_own_training_loop,
    "README.md#every-method-one-per-task-interface": every_method_one_interface,
    "docs/leap.md#contribution-reduce-apply": contribution_reduce_apply,
    "docs/architecture.md#one-task-one-meta-step": one_task_one_meta_step,
}


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("block", EXAMPLES, ids=[b.key for b in EXAMPLES])
def test_example_runs_as_printed_and_shows_what_its_text_claims(block: Block) -> None:
    assert block.key in CHECKS, (
        f"{block.path.name}:{block.line}: a new example; add to CHECKS what its text claims "
        "(or fence it as a plain ``` block if it is a schematic snippet)")
    namespace, out = run(block)
    CHECKS[block.key](block, namespace, out)


def test_every_check_has_its_example() -> None:
    """A check whose example was removed, renamed or refenced fails here, not silently."""
    assert sorted(CHECKS) == sorted(b.key for b in EXAMPLES)


def squashed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_schematic_registrations_are_the_code_of_test_extending() -> None:
    """docs/architecture.md's two registration snippets use names that tests/test_extending.py
    defines, so they are plain ``` blocks, not examples: they must still be that file's code."""
    source = squashed((ROOT / "tests" / "test_extending.py").read_text(encoding="utf-8"))
    snippets = [b for b in fenced_blocks(ROOT / "docs" / "architecture.md")
                if b.info == "" and ".register(" in b.code]
    assert len(snippets) == 2
    for block in snippets:
        assert squashed(block.code) in source, f"docs/architecture.md:{block.line}"


def test_the_fence_reader_reads_what_commonmark_does() -> None:
    """Indented fences (in a list item), tildes, longer fences, info strings, headings."""
    text = "\n".join([
        "# Title", "", "```python", "a = 1", "```", "## Two words, here!", "",
        "1. item", "", "   ```py", "   b = 2", "     c = 3", "   ```", "",
        "~~~~ text", "```", "not closed by backticks", "~~~~", "````", "d", "````"]) + "\n"
    blocks = fenced_blocks(ROOT / "tests" / "_fences.md", text)
    assert [(b.key, b.info, b.code) for b in blocks] == [
        ("tests/_fences.md#title", "python", "a = 1\n"),
        ("tests/_fences.md#two-words-here", "py", "b = 2\n  c = 3\n"),
        ("tests/_fences.md#two-words-here-2", "text", "```\nnot closed by backticks\n"),
        ("tests/_fences.md#two-words-here-3", "", "d\n")]

