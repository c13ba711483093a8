"""Data identity by content: the digest in provenance.json, resuming on other bytes, and
``metaleap data check``."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import metaleap
from metaleap.cli import main
from metaleap.runs import RunDir, RunError, portable
from metaleap.tasks import glyphs, multicv
from metaleap.tasks.errors import MissingDependencyError
from metaleap.tasks.glyphs import GlyphAlphabets, tensors_sha256

SMALL = {"alphabets": ["Greek", "Hebrew"], "fonts": "matplotlib", "progress": False,
         "workers": 1}
HERE = {"metaleap": metaleap.__version__, "torch": torch.__version__,
        "python": platform.python_version()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the two-alphabet glyph set (a build of seconds)."""
    folder = tmp_path_factory.mktemp("cache")
    GlyphAlphabets(cache_dir=folder, **SMALL)
    return folder


@pytest.fixture
def small(cache: Path, monkeypatch: pytest.MonkeyPatch) -> GlyphAlphabets:
    """``--data glyphs`` opens the small set from ``cache``, which is this machine's cache."""
    class Small(GlyphAlphabets):
        def __init__(self, size: int = 28, seed: int = 0, version: int = 1, **_: Any) -> None:
            super().__init__(size=size, seed=seed, version=version, **SMALL)

    monkeypatch.setenv("METALEAP_CACHE", str(cache))
    monkeypatch.setattr(glyphs, "GlyphAlphabets", Small)
    return Small()


def _run(path: Path, provenance: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = config or {"protocol": "transfer",
                        "config": {"data": "glyphs", "image_size": 28, "ways": 20}}
    (path / "config.json").write_text(json.dumps(config))
    (path / "provenance.json").write_text(json.dumps(provenance))
    return path


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["data", "check", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


def _other_data(ds: GlyphAlphabets, path: Path, images: int = 3) -> tuple[torch.Tensor, str]:
    """The glyph file of ``ds`` with the first ``images`` drawers of Hebrew's first letter
    inverted, written to ``path`` as the run's own data (same key, its own digest); returns
    the images and the digest."""
    tensors = load_file(str(ds.path))
    hebrew = ds._offsets[ds.names.index("Hebrew")]
    tensors["images"][hebrew, :images] = 255 - tensors["images"][hebrew, :images]
    digest = tensors_sha256(tensors)
    manifest = {**ds.manifest, glyphs.CONTENT_KEY: digest}
    save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest, sort_keys=True)})
    return tensors["images"], digest


def _provenance_of(ds: GlyphAlphabets, images: torch.Tensor, digest: str,
                   **session: str) -> dict[str, Any]:
    """What a run that trained on ``images`` would have recorded."""
    content = ds.content_digest()
    hebrew = slice(*ds._offsets[ds.names.index("Hebrew"):][:2])
    content["alphabets"]["Hebrew"] = hashlib.sha256(images[hebrew].numpy()).hexdigest()
    return {"data": portable(ds.identity()), "data_content": {**content, "sha256": digest},
            "sessions": [{**HERE, **session}]}


# ----------------------------------------------------------------------------- provenance


def test_a_run_records_the_data_content_and_resuming_on_other_bytes_is_refused(
        tmp_path: Path) -> None:
    identity, config = {"kind": "synthetic", "alphabets": ["a", "b"]}, {"protocol": "x"}
    content = {"sha256": "1" * 64, "alphabets": {"a": "2" * 64, "b": "3" * 64}}
    RunDir(tmp_path / "run", config, identity, content=content).close()
    recorded = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert list(recorded) == ["data", "data_content", "sessions"]
    assert recorded["data"] == identity and recorded["data_content"] == content
    RunDir(tmp_path / "run", config, identity, content=content, resume=True).close()
    other = {"sha256": "4" * 64, "alphabets": {"a": "2" * 64, "b": "5" * 64}}
    with pytest.raises(RunError) as refused:
        RunDir(tmp_path / "run", config, identity, content=other, resume=True)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"cannot resume {tmp_path / 'run'}: its "
                                                      "data have the same inputs but other bytes")
    assert "1 of 2 alphabets differ (b)" in message and "metaleap data check" in message
    assert len(json.loads((tmp_path / "run" / "provenance.json").read_text())["sessions"]) == 2


def test_a_run_begun_before_the_digest_gets_it_on_resume(tmp_path: Path) -> None:
    identity, config = {"kind": "synthetic", "alphabets": ["a"]}, {"protocol": "x"}
    RunDir(tmp_path / "run", config, identity).close()  # as before: no content digest
    old = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert "data_content" not in old
    content = {"sha256": "1" * 64}
    RunDir(tmp_path / "run", config, identity, content=content, resume=True).close()
    new = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert new["data"] == old["data"] and new["data_content"] == content
    assert new["sessions"][0] == old["sessions"][0] and len(new["sessions"]) == 2


def test_the_cli_records_the_digest_checks_it_and_refuses_other_bytes(
        tmp_path: Path, omniglot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}", "--out", str(out),
            "--no-progress", "--set", "methods=scratch"]
    assert main(args) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    content = provenance["data_content"]
    assert list(content["alphabets"]) == ["A0", "A1", "A2", "B0", "B1", "B2"]
    assert re.fullmatch("[0-9a-f]{64}", content["sha256"])
    capsys.readouterr()
    line = _check(capsys, str(out))
    assert line.startswith(f"{out}: byte-identical: this machine's omniglot:") and \
        f"({content['sha256'][:12]}…)" in line
    provenance["data_content"]["sha256"] = "0" * 64
    provenance["data_content"]["alphabets"]["B1"] = "0" * 64
    (out / "provenance.json").write_text(json.dumps(provenance))
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "same inputs but other bytes" in err
    assert "1 of 6 alphabets differ (B1)" in err
    line = _check(capsys, str(out))
    assert "not byte-identical: 1 of 6 alphabets (17 %) have other bytes (B1)" in line


# ----------------------------------------------------------------------------- data check


def test_check_says_byte_identical_and_that_the_software_is_as_recorded(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path / "run", {"data": portable(small.identity()),
                                  "data_content": small.content_digest(), "sessions": [HERE]})
    line = _check(capsys, str(run))
    assert line.startswith(f"{run}: byte-identical: this machine's glyphs data have the content "
                           f"SHA-256 the run recorded ({small.content_digest()['sha256'][:12]}…)")
    assert f"glyph libraries as recorded; the {len(small.content_digest()['fonts'])} fonts " \
        "as recorded" in line
    assert line.endswith(f"session software as here (metaleap {HERE['metaleap']}, torch "
                         f"{HERE['torch']}, python {HERE['python']})")


def test_check_measures_the_difference_against_the_runs_own_file(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, digest = _other_data(small, tmp_path / "theirs.safetensors")
    run = _run(tmp_path / "run", _provenance_of(small, images, digest, torch="1.0.0"))
    # without the run's file: the share of alphabets whose digests differ
    line = _check(capsys, str(run))
    assert f"{run}: not byte-identical: 1 of 2 alphabets (50 %) have other bytes (Hebrew)" in line
    assert f"session software differs (run → here): torch 1.0.0 → {torch.__version__}" in line
    # with it: image by image
    line = _check(capsys, str(run), "--against", str(tmp_path / "theirs.safetensors"))
    total = small.all_images().shape[0] * 20
    mean = (images.int() - small.all_images().int()).abs().double().mean().item()
    assert (f"not byte-identical: 3 of {total:,} images ({300 / total:.2f} %) differ, in 1 of 2 "
            f"alphabets; mean absolute pixel difference {mean:.4f} of 255 (against the run's data "
            "file theirs.safetensors)") in line


def test_check_finds_the_runs_file_in_the_cache_and_names_what_drew_it_otherwise(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run drawn elsewhere, with another key: its file, copied into this machine's cache, is
    found by name; the libraries and fonts it recorded are compared with this machine's."""
    name = "glyphs-v1-0123456789abcdef.safetensors"
    images, digest = _other_data(small, glyphs.cache_folder() / name)
    provenance = _provenance_of(small, images, digest)
    provenance["data"] = {**provenance["data"], "key": "0123456789abcdef", "file": name}
    drawn = provenance["data_content"]
    drawn["software"] = {**drawn["software"], "pillow": "9.1.0"}
    drawn["fonts"]["matplotlib/DejaVuSans.ttf"] = "0" * 16
    drawn["fonts"]["fonts-noto-core/NotoSans-Regular.ttf"] = "1" * 16
    try:
        line = _check(capsys, str(_run(tmp_path / "run", provenance)))
    finally:
        (glyphs.cache_folder() / name).unlink()
    assert "images (" in line and f"(against the run's data file {name})" in line
    assert f"key 0123456789abcdef (run) → {small.identity()['key']} (here)" in line
    pillow = small.manifest["software"]["pillow"]
    assert f"glyph libraries differ (run → here): pillow 9.1.0 → {pillow}" in line
    assert ("fonts differ: 1 with other bytes (matplotlib/DejaVuSans.ttf), 1 missing here "
            "(fonts-noto-core/NotoSans-Regular.ttf)") in line


def test_check_of_a_run_without_a_digest_says_what_it_cannot_know(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = _run(tmp_path / "same", {"data": portable(small.identity()), "sessions": [HERE]})
    line = _check(capsys, str(same))
    assert line.startswith(f"{same}: not confirmed: the data's inputs are the run's (same data "
                           f"identity, key {small.identity()['key']}), but the run recorded no "
                           "content digest;")
    assert "the run recorded neither the glyph libraries nor the fonts" in line
    _other_data(small, tmp_path / "theirs.safetensors")
    line = _check(capsys, str(same), "--against", str(tmp_path / "theirs.safetensors"))
    assert line.startswith(f"{same}: not byte-identical: 3 of ")
    assert ("(against theirs.safetensors, a file with the run's key (the run recorded no digest "
            "to confirm its bytes))") in line
    assert f"glyph libraries as recorded; the {len(small.content_digest()['fonts'])} fonts" in line
    other = {**portable(small.identity()), "key": "0" * 16, "file": "glyphs-v1-0.safetensors"}
    line = _check(capsys, str(_run(tmp_path / "other", {"data": other, "sessions": []})))
    assert ("unknown: the run recorded no content digest and its data file "
            "glyphs-v1-0.safetensors is not on this machine") in line
    assert "its sessions recorded no software versions" in line


def test_check_refuses_what_it_cannot_use_in_one_line(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, digest = _other_data(small, tmp_path / "theirs.safetensors")
    run = _run(tmp_path / "run", _provenance_of(small, images, digest))

    def refused(*args: str) -> str:
        assert main(["data", "check", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("metaleap: error: "), err
        return err

    assert "holds no run with data to check (config.json is missing)" in refused(
        str(tmp_path / "nothing"))
    mine = tmp_path / "mine.safetensors"
    shutil.copy(small.path, mine)
    assert re.search(r"--against .*mine\.safetensors is not the run's data: its content "
                     r"SHA-256 is [0-9a-f]{12}…, the run recorded",
                     refused(str(run), "--against", str(mine)))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((tmp_path / "theirs.safetensors").read_bytes()[:1000])
    assert f"glyphs: {bad} is not a usable glyph file (SafetensorError" in refused(
        str(run), "--against", str(bad))
    rl = _run(tmp_path / "rl", {"data": {"kind": "minatar"}, "sessions": []},
              {"protocol": "rl", "config": {}})
    assert "only transfer runs have" in refused(str(rl), "--against", str(bad))


def test_check_of_an_rl_run_says_there_are_no_bytes(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    provenance = {"data": {"kind": "minatar", "packages": {"no-such-package-here": "1.0"},
                           "games": ["breakout", "freeway"]}, "sessions": [HERE]}
    line = _check(capsys, str(_run(tmp_path / "rl", provenance, {"protocol": "rl"})))
    assert ("nothing to compare byte by byte: an RL run's data are the minatar games (breakout, "
            "freeway), generated by the environments' code, not stored; environment packages "
            "differ (run → here): no-such-package-here 1.0 → not installed") in line


def test_check_of_a_multicv_run_compares_each_data_set(tmp_path: Path, monkeypatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def loader(name: str, value: int):
        def load(seed: int = 0) -> multicv.LabeledImages:
            images = torch.full((4, 1, 28, 28), value, dtype=torch.uint8)
            return multicv.LabeledImages(name, images, torch.tensor([0, 1, 0, 1]), 2, "made")
        return load

    def absent(seed: int = 0) -> multicv.LabeledImages:
        raise MissingDependencyError("absent: pip install absent")

    monkeypatch.setattr(multicv, "DATASETS", {"a": loader("a", 1), "b": loader("b", 2),
                                              "glyphs_x": loader("glyphs_x", 3),
                                              "gone": absent})
    sha = {name: multicv.DATASETS[name]().sha256() for name in ("a", "b", "glyphs_x")}
    datasets = {name: {"source": "made", "num_classes": 2, "images": 4, "sha256": digest}
                for name, digest in sha.items()}
    config = {"protocol": "multicv", "config": {"data_seed": 0}}
    same = _run(tmp_path / "same", {"data": {"kind": "multicv", "data_seed": 0,
                                             "datasets": datasets}, "sessions": [HERE]}, config)
    assert "byte-identical: all 3 data sets have the SHA-256 the run recorded" in _check(
        capsys, str(same))
    datasets["glyphs_x"] = {**datasets["glyphs_x"], "sha256": "0" * 64, "num_classes": 3}
    datasets["gone"] = {"sha256": "1" * 64}
    other = _run(tmp_path / "other", {"data": {"kind": "multicv", "data_seed": 0,
                                               "datasets": datasets}, "sessions": [HERE]},
                 config)
    line = _check(capsys, str(other))
    assert ("not byte-identical: 1 of 4 data sets (25 %) have other bytes: glyphs_x (its "
            "num_classes too)") in line
    assert "2 identical: a, b" in line
    assert "1 not compared, not installed here (gone: absent: pip install absent)" in line
    assert "the run recorded neither the glyph libraries nor the fonts of its glyph sets" in line
