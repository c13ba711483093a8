"""Glyph alphabets: the offline stand-in for Omniglot (docs/experiments.md).

Each alphabet is one writing system's main letters (chosen from Unicode data, see
:mod:`metaleap.tasks.glyphs_render`), written by 20 "drawers". Two data versions draw them:

- **Version 1** (the default of every protocol; the committed studies used it): drawer ``j``
  uses one of the fonts that cover the alphabet (``j`` modulo their number), reduced to centre
  lines and redrawn with its own pen, slant, tilt, proportions and wobble, plus per-image
  affine jitter and an elastic field (:mod:`metaleap.tasks.glyphs_render`).
- **Version 2** (``version=2``, ``--data glyphs:v2``): the same alphabets and letters; each
  letter has one skeleton (one font per alphabet, scikit-image's ``skeletonize``) and every
  drawer is an independent writer with its own style per (alphabet, drawer): pen, pressure,
  slant, tilt, proportions, a habitual deformation field, per-image smooth deformation and
  tremor (:mod:`metaleap.tasks.glyphs_render_v2`).

Images are cropped to the ink, centred with a margin and resized to ``size``² pixels (28 by
default).

The set is built once (under two minutes on two cores) and cached in
``$METALEAP_CACHE``, else ``$XDG_CACHE_HOME/metaleap``, else ``~/.cache/metaleap``, as
``glyphs-v<version>-<key>.safetensors`` (uint8 images, labels and the manifest in its metadata)
with the manifest also beside it as JSON. The key hashes every input: format version, the font
files and their SHA-256, seed, size, options, the drawing code and the versions of the libraries
that draw, so a changed input builds a new file and the same inputs load the old one. The same
inputs give a byte-identical file on one machine: every random choice comes from
:mod:`metaleap.seeding`. Another CPU can round otherwise (version 1 draws through MKL's matrix
products, whose code path depends on the CPU), which is what ``metaleap data check`` looks for.

The manifest also records a SHA-256 of the file's tensors (``content_sha256``, see
:func:`tensors_sha256`; left out of :meth:`GlyphAlphabets.identity`, which is therefore what it
was before). A cache file that cannot be loaded, whose tensors do not fit its manifest or its
key, or whose tensors do not match that digest is reported in one line on stderr and rebuilt.
Files written before the digest existed are accepted with the other checks alone (their
content is still hashed on loading, for the run's provenance).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import fontTools
import matplotlib
import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, ImageFont, features
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from metaleap.files import atomic_write
from metaleap.seeding import generator
from metaleap.tasks import glyphs_render as render
from metaleap.tasks import glyphs_render_v2 as render_v2
from metaleap.tasks.base import Task
from metaleap.tasks.errors import DataError

__all__ = ["VERSIONS", "GlyphAlphabets", "available_alphabets", "build_glyphs", "cache_folder",
           "check_version", "glyph_stats", "list_alphabets", "preview_sheet", "read_glyph_file",
           "separation_stats", "stats_table", "tensors_sha256"]

FORMAT_VERSION = 1  # version 1's format number, part of its cache key: never change it
VERSIONS = (1, 2)
T = TypeVar("T")
DRAWERS = render.DRAWERS
#: The manifest's field holding the SHA-256 of the file's tensors (one metadata entry only:
#: safetensors writes several in no fixed order, and the file must be byte-identical).
CONTENT_KEY = "content_sha256"


def cache_folder(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``path``, else ``$METALEAP_CACHE``, ``$XDG_CACHE_HOME/metaleap`` or
    ``~/.cache/metaleap``."""
    if path is not None:
        return Path(path)
    if os.environ.get("METALEAP_CACHE"):
        return Path(os.environ["METALEAP_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "metaleap" if xdg else Path.home() / ".cache" / "metaleap"


def check_version(version: object) -> int:
    """``version`` if it is a glyph data version (1 or 2), else a :class:`DataError`."""
    if version not in VERSIONS or isinstance(version, bool):
        raise DataError(f"unknown glyph data version {version!r}: use "
                        f"{' or '.join(map(str, VERSIONS))}")
    return int(version)  # type: ignore[call-overload]


def _options(size: int, seed: int, fonts: str, alphabets: Sequence[str] | None,
             min_fonts: int | None, version: int = 1
             ) -> tuple[dict[str, object], list[tuple[Path, str, str]]]:
    """Everything the dataset depends on (the cache key's content) and the font files.

    Version 1's content is frozen (its committed results name its key); version 2 adds the
    version, its drawing code and the libraries it draws with.
    """
    version = check_version(version)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, not {size}")
    files = [(p, source, render.sha256(p)) for p, source in render.font_files(fonts)]
    if min_fonts is None:  # matplotlib alone has two families (DejaVu, STIX): ask for less
        min_fonts = 3 if any(source != "matplotlib" for _, source, _ in files) else 2
    options = {
        "format": "metaleap-glyphs", "version": FORMAT_VERSION, "size": int(size),
        "seed": int(seed), "drawers": DRAWERS, "fonts": fonts, "min_fonts": int(min_fonts),
        "alphabets": sorted(alphabets) if alphabets is not None else None,
        # by name and content, not by install location: the same fonts give the same key
        "font_files": [[p.name, digest] for p, _, digest in files],
        "code": _code_hash(),
        "software": {"fonttools": fontTools.version, "pillow": PIL.__version__,
                     "freetype": features.version("freetype2"), "numpy": np.__version__,
                     "torch": torch.__version__.split("+")[0],
                     "unicode": unicodedata.unidata_version},
    }
    if version == 2:
        options["version"] = 2
        options["code"] = _code_hash(2)
        options["software"] = {**options["software"], **render_v2.software()}  # type: ignore
    return options, files


def _code_hash(version: int = 1) -> str:
    """A hash of the code that chooses and draws the glyphs: edits to it rebuild the cache."""
    modules = [render] if version == 1 else [render, render_v2]
    text = b"".join(Path(m.__file__).read_bytes() for m in modules)  # type: ignore[arg-type]
    return hashlib.sha256(text).hexdigest()[:16]


def _key(options: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def _init_worker() -> None:
    torch.set_num_threads(1)


def _run(pool: ProcessPoolExecutor | None, fn: Callable[..., T], args: list[tuple], desc: str,
         progress: bool) -> list[T]:
    """``fn(*a)`` for each ``a`` in order, in the pool if any, with a progress bar."""
    results = pool.map(fn, *zip(*args, strict=True)) if pool and args else (fn(*a) for a in args)
    return list(tqdm(results, total=len(args), desc=desc, unit="alphabet", disable=not progress))


@contextlib.contextmanager
def _pool(workers: int | None) -> Iterator[ProcessPoolExecutor | None]:
    """A process pool of ``workers`` (default: CPU count), or ``None`` to work in-process;
    one torch thread per process either way."""
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        # fork: no re-import of the caller's script (spawn needs a __main__ guard there)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, multiprocessing.get_context(method),
                                 initializer=_init_worker) as pool:
            yield pool
        return
    threads = torch.get_num_threads()
    _init_worker()
    try:
        yield None
    finally:
        torch.set_num_threads(threads)


def _plan(files: list[tuple[Path, str, str]], options: dict, pool: ProcessPoolExecutor | None,
          progress: bool) -> tuple[list[render.FontInfo], list[render.AlphabetSpec]]:
    """The fonts and the alphabets chosen with them."""
    infos, cmaps = render.load_fonts(files)
    jobs = render.alphabet_jobs(infos, cmaps, options["alphabets"])
    chosen = _run(pool, render.select_alphabet, [(job, options["min_fonts"]) for job in jobs],
                  "glyphs: choosing letters", progress)
    specs = [spec for spec in chosen if spec is not None]
    missing = sorted(set(options["alphabets"] or []) - {s.name for s in specs})
    if missing or not specs:
        raise ValueError(f"no glyph alphabet with {render.MIN_LETTERS}+ letters in "
                         f"{options['min_fonts']}+ of the {options['fonts']!r} fonts for "
                         f"{missing or 'any script'}")
    return infos, specs


def available_alphabets(fonts: str = "all", min_fonts: int | None = None,
                        workers: int | None = None) -> dict[str, str]:
    """Alphabet name -> characters that :func:`build_glyphs` would draw (without drawing)."""
    options, files = _options(28, 0, fonts, None, min_fonts)
    with _pool(workers) as pool:
        return {s.name: s.characters for s in _plan(files, options, pool, False)[1]}


def build_glyphs(size: int = 28, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                 fonts: str = "all", alphabets: Sequence[str] | None = None,
                 min_fonts: int | None = None, workers: int | None = None,
                 progress: bool = True, version: int = 1) -> Path:
    """Build the glyph alphabets of data ``version`` (1 or 2) unless cached; return the cache
    file's path.

    ``fonts``: ``"all"`` (matplotlib's and the Debian fonts) or ``"matplotlib"`` (its fonts
    only). ``alphabets``: Unicode script names to restrict to (e.g. ``["Greek", "Latin"]``).
    ``min_fonts``: fonts an alphabet needs (default 3, or 2 with matplotlib's fonts alone).
    ``workers``: processes (default: the CPU count; 1 builds in this process). The output does
    not depend on ``workers``. A cached file that is damaged is reported on stderr and rebuilt.
    """
    return _load_or_build(size, seed, cache_dir, fonts, alphabets, min_fonts, workers, progress,
                          version).path


class _Damaged(Exception):
    """A cache file that cannot be used; the message says why."""


@dataclass(frozen=True)
class _Entry:
    """A loaded cache entry: its file, manifest, tensors and their :func:`tensors_sha256`."""

    path: Path
    manifest: dict
    tensors: dict[str, torch.Tensor]
    content_sha256: str


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over tensors, each its name then its bytes, in name order: a cache file's data,
    not its metadata (whose manifest names where the fonts are installed)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _read(path: Path, key: str | None = None) -> _Entry:
    """The cache file ``path``, checked: it loads, holds ``images`` and ``labels`` that fit its
    manifest (and ``key``, if given), and matches the digest its manifest records (files
    written before the digest existed have none); else :class:`_Damaged`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            names = sorted(f.keys())
            if names != ["images", "labels"]:
                raise _Damaged(f"it holds the tensors {names}, not images and labels")
            tensors = {name: f.get_tensor(name) for name in names}
        text = metadata.get("manifest")
        if text is None:
            raise _Damaged("its metadata has no manifest")
        manifest = json.loads(text)
        chars = [len(a["characters"]) for a in manifest["alphabet_list"]]
        size = manifest["size"]
    except _Damaged:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise _Damaged(f"{type(e).__name__}{': ' + why if why else ''}") from None
    if key is not None and manifest.get("key") != key:
        raise _Damaged(f"its manifest names the key {manifest.get('key')!r}, not {key}")
    images, labels = tensors["images"], tensors["labels"]
    shape = (sum(chars), DRAWERS, size, size)
    if images.dtype != torch.uint8 or tuple(images.shape) != shape:
        raise _Damaged(f"its images are {images.dtype} {tuple(images.shape)}, its manifest "
                       f"says uint8 {shape}")
    if labels.dtype != torch.int32 or tuple(labels.shape) != (shape[0], 2):
        raise _Damaged(f"its labels are {labels.dtype} {tuple(labels.shape)}, not int32 "
                       f"({shape[0]}, 2)")
    content = tensors_sha256(tensors)
    recorded = manifest.get(CONTENT_KEY)
    if recorded is not None and recorded != content:
        raise _Damaged(f"its tensors' SHA-256 is {content[:12]}…, its manifest records "
                       f"{str(recorded)[:12]}…")
    return _Entry(path, manifest, tensors, content)


def read_glyph_file(path: str | os.PathLike[str]) -> tuple[dict, torch.Tensor, str]:
    """A glyph cache file's manifest, images ``(characters, drawers, size, size)`` and the
    SHA-256 of its tensors, checked as the cache checks its entries; :class:`DataError` naming
    the file if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"glyphs: no file {path}")
    try:
        entry = _read(path)
    except _Damaged as e:
        raise DataError(f"glyphs: {path} is not a usable glyph file ({e})") from None
    return entry.manifest, entry.tensors["images"], entry.content_sha256


def _load_or_build(size: int, seed: int, cache_dir: str | os.PathLike[str] | None, fonts: str,
                   alphabets: Sequence[str] | None, min_fonts: int | None,
                   workers: int | None, progress: bool, version: int) -> _Entry:
    """The cache entry of these inputs: loaded if cached and sound, else built and written (a
    damaged entry is reported in one line on stderr first)."""
    options, files = _options(size, seed, fonts, alphabets, min_fonts, version)
    folder = cache_folder(cache_dir)
    key = _key(options)
    path = folder / f"glyphs-v{options['version']}-{key}.safetensors"
    if path.exists():
        try:
            return _read(path, key)
        except _Damaged as e:
            print(f"metaleap: warning: glyphs: cache file {path} is damaged ({e}); rebuilding "
                  "it", file=sys.stderr, flush=True)
    with _pool(workers) as pool:
        infos, specs = _plan(files, options, pool, progress)
        if options["version"] == 1:
            drawn = _run(pool, render.render_alphabet,
                         [(s, [infos[i] for i in s.fonts], seed, size) for s in specs],
                         "glyphs: drawing", progress)
            drawing = [list(s.fonts) for s in specs]
        else:  # one skeleton font per alphabet, chosen among the fonts that chose its letters
            drawing = [[s.fonts[render_v2.skeleton_font([infos[i] for i in s.fonts], s.name)]]
                       for s in specs]
            drawn = _run(pool, render_v2.render_alphabet,
                         [(s, infos[d[0]], seed, size) for s, d in zip(specs, drawing,
                                                                         strict=True)],
                         "glyphs v2: drawing", progress)
    used = sorted({i for s in specs for i in s.fonts})
    position = {i: k for k, i in enumerate(used)}
    alphabet_list: list[dict[str, object]] = [
        {"name": s.name, "script": s.script, "block": s.block, "characters": s.characters,
         "fonts": [position[i] for i in d]} for s, d in zip(specs, drawing, strict=True)]
    if options["version"] == 2:  # "fonts": the skeleton font; these chose the letters
        for entry, s in zip(alphabet_list, specs, strict=True):
            entry["letter_fonts"] = [position[i] for i in s.fonts]
    manifest = {
        **{k: v for k, v in options.items() if k != "font_files"}, "key": key,
        "fonts_considered": len(infos),
        "font_list": [infos[i].to_dict() for i in used],
        "alphabet_list": alphabet_list,
    }
    labels = np.array([(a, c) for a, s in enumerate(specs) for c in range(len(s.characters))])
    tensors = {"images": torch.from_numpy(np.concatenate(drawn)),
               "labels": torch.from_numpy(labels.astype(np.int32))}
    content = manifest[CONTENT_KEY] = tensors_sha256(tensors)
    text = json.dumps(manifest, sort_keys=True, ensure_ascii=False)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"manifest": text}))
    pretty = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(path.with_suffix(".json"),
                  lambda tmp: Path(tmp).write_text(pretty, encoding="utf-8"))
    return _Entry(path, manifest, tensors, content)


class GlyphAlphabets:
    """The glyph alphabets as a task set (:class:`metaleap.tasks.base.TaskSet`).

    Builds the cache on first use (see :func:`build_glyphs` for the arguments) and loads it.
    """

    def __init__(self, size: int = 28, seed: int = 0,
                 cache_dir: str | os.PathLike[str] | None = None, fonts: str = "all",
                 alphabets: Sequence[str] | None = None, min_fonts: int | None = None,
                 workers: int | None = None, progress: bool = True, version: int = 1) -> None:
        entry = _load_or_build(size, seed, cache_dir, fonts, alphabets, min_fonts, workers,
                               progress, version)
        self.path = entry.path
        self.manifest: dict = entry.manifest
        self._images = entry.tensors["images"]
        self._content_sha256 = entry.content_sha256
        counts = [len(a["characters"]) for a in self.manifest["alphabet_list"]]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.size = self.manifest["size"]
        self.seed = self.manifest["seed"]
        self.version: int = self.manifest["version"]

    @property
    def names(self) -> list[str]:
        """Alphabet names (Unicode script names), by index."""
        return [a["name"] for a in self.manifest["alphabet_list"]]

    def __len__(self) -> int:
        return len(self.manifest["alphabet_list"])

    def identity(self) -> dict[str, object]:
        """The cache key, a SHA-256 of the font manifest (font paths reduced to file names, so
        another install location of the same fonts is the same data) and the alphabet names;
        from version 2 on, the data version (version 1's identity is as it always was, so its
        run folders still resume; its file name says ``glyphs-v1``). The manifest's
        ``content_sha256`` is left out, so files written before it existed and after are
        the same data."""
        fonts = [{**f, "path": Path(f["path"]).name} for f in self.manifest["font_list"]]
        inputs = {k: v for k, v in self.manifest.items() if k != CONTENT_KEY}
        text = json.dumps({**inputs, "font_list": fonts}, sort_keys=True, ensure_ascii=False)
        version = {"version": self.version} if self.version != 1 else {}
        return {"kind": "glyphs", **version, "key": self.manifest["key"],
                "file": self.path.name,
                "manifest_sha256": hashlib.sha256(text.encode()).hexdigest(),
                "size": self.size, "alphabets": self.names}

    def content_digest(self) -> dict[str, object]:
        """What the data's bytes are, beside :meth:`identity` (which names the inputs):
        ``sha256``, the SHA-256 of the cache file's tensors (:func:`tensors_sha256`; equal to
        the one its manifest records); ``alphabets``, a SHA-256 of each alphabet's images; and
        what drew them: ``software``, the libraries' versions of the manifest, and ``fonts``,
        each font file used (``source/file name``) with the first 16 hex digits of its
        SHA-256, so that ``metaleap data check`` can name what differs on another machine."""
        alphabets = {name: hashlib.sha256(self.images(i).contiguous().numpy()).hexdigest()
                     for i, name in enumerate(self.names)}
        fonts = {f"{f['source']}/{Path(f['path']).name}": f["sha256"][:16]
                 for f in self.manifest["font_list"]}
        return {"kind": "glyphs", "sha256": self._content_sha256, "alphabets": alphabets,
                "software": dict(self.manifest["software"]), "fonts": dict(sorted(fonts.items()))}

    def characters(self, index: int) -> list[str]:
        """The characters of alphabet ``index``, in label order of :meth:`images`."""
        return list(self.manifest["alphabet_list"][index]["characters"])

    def fonts(self, index: int) -> list[str]:
        """The fonts that alphabet ``index`` is drawn from: version 1, its drawers' fonts
        (drawer ``j`` uses ``j % len``); version 2, its one skeleton font."""
        return [self.manifest["font_list"][i]["name"]
                for i in self.manifest["alphabet_list"][index]["fonts"]]

    def all_images(self) -> torch.Tensor:
        """uint8 images ``(characters of every alphabet, 20 drawers, size, size)``, alphabet by
        alphabet in index order (the cache file's ``images``)."""
        return self._images

    def images(self, index: int) -> torch.Tensor:
        """uint8 images ``(characters, 20 drawers, 1, size, size)`` of alphabet ``index``."""
        lo, hi = self._offsets[index], self._offsets[index + 1]
        return self._images[lo:hi].unsqueeze(2)

    def task(self, index: int, seed: int, ways: int = 20, train_per_class: int = 15,
             test_per_class: int = 5) -> Task:
        """A ``ways``-way task on alphabet ``index`` (docs/experiments.md).

        ``ways`` characters, and for each which drawers train and which test, are drawn from the
        stream ``(seed, "task", alphabet name)``; labels are 0..ways-1 in drawing order.
        """
        name = self.names[index]
        images = self.images(index)
        if ways > len(images):
            raise ValueError(f"alphabet {name!r} has {len(images)} characters, fewer than "
                             f"ways={ways}")
        if train_per_class + test_per_class > DRAWERS:
            raise ValueError(f"{train_per_class} + {test_per_class} images per class exceed "
                             f"the {DRAWERS} drawers")
        g = generator(seed, "task", name)
        chars = torch.randperm(len(images), generator=g)[:ways]
        drawers = torch.stack([torch.randperm(DRAWERS, generator=g) for _ in range(ways)])
        train_idx = drawers[:, :train_per_class]
        test_idx = drawers[:, train_per_class:train_per_class + test_per_class]

        def split(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = images[chars[:, None], idx].flatten(0, 1).float() / 255.0
            return x, torch.arange(ways).repeat_interleave(idx.shape[1])

        train_x, train_y = split(train_idx)
        test_x, test_y = split(test_idx)
        return Task(name, ways, train_x, train_y, test_x, test_y)


def _label_font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(matplotlib.get_data_path(), "fonts", "ttf",
                                       "DejaVuSans.ttf")), 14)


def preview_sheet(ds: GlyphAlphabets, path: str | os.PathLike[str],
                  alphabets: Sequence[int | str] | None = None, drawers: int = 20,
                  chars: int = 1) -> Path:
    """A PNG contact sheet: per alphabet (index or name; default all) ``chars`` rows, characters
    spread over the alphabet, one column per drawer, alphabet names as row labels; dark ink."""
    picks = [ds.names.index(a) if isinstance(a, str) else a
             for a in (alphabets if alphabets is not None else range(len(ds)))]
    cell, label_w = max(2 * ds.size, 48), 190
    rows = [(i, int((k + 0.5) * len(ds.characters(i)) / chars)) for i in picks
            for k in range(chars)]
    sheet = Image.new("L", (label_w + drawers * (cell + 2), len(rows) * (cell + 2)), 255)
    draw, font = ImageDraw.Draw(sheet), _label_font()
    for r, (i, c) in enumerate(rows):
        y = r * (cell + 2)
        draw.text((6, y + cell // 2), f"{ds.names[i]} ({len(ds.characters(i))})", fill=0,
                  font=font, anchor="lm")
        for j, img in enumerate(ds.images(i)[c, :drawers, 0].numpy()):
            tile = Image.fromarray(255 - img).resize((cell, cell), Image.Resampling.BILINEAR)
            sheet.paste(tile, (label_w + j * (cell + 2), y))
    path = Path(path)
    sheet.save(path, format="PNG")
    return path


def list_alphabets(ds: GlyphAlphabets) -> str:
    """A printable table: alphabet, number of characters, Unicode block, fonts."""
    lines = [f"{'alphabet':<24} {'chars':>5}  {'block':<38} fonts"]
    for i, name in enumerate(ds.names):
        fonts = ds.fonts(i)
        shown = ", ".join(fonts[:4]) + (f", … ({len(fonts)})" if len(fonts) > 4 else "")
        block = ds.manifest["alphabet_list"][i]["block"]
        lines.append(f"{name:<24} {len(ds.characters(i)):>5}  {block:<38} {shown}")
    total = sum(len(ds.characters(i)) for i in range(len(ds)))
    lines.append(f"{len(ds)} alphabets, {total} characters × {DRAWERS} drawers, "
                 f"{ds.size}×{ds.size} px, seed {ds.seed}, data version {ds.version}")
    return "\n".join(lines)


def separation_stats(images: torch.Tensor, ways: int = 20) -> dict[str, float]:
    """How far apart one alphabet's characters are, from its images (characters, drawers, ...).

    ``ways`` characters spread evenly over the alphabet (all if it has fewer) are compared, each
    image flattened and scaled to [0, 1]:

    - ``within``: mean L2 distance between two drawers of the same character;
    - ``between``: mean L2 distance between images of two different characters;
    - ``ratio``: within / between (lower: characters easier to tell apart);
    - ``nn_accuracy``: leave-one-drawer-out 1-nearest-neighbour accuracy: each image is
      classified as the character of its nearest image among the other drawers' images
      (``ways``-way; ties go to the first in (character, drawer) order).
    """
    n, drawers = images.shape[:2]
    picks = [int((k + 0.5) * n / ways) for k in range(ways)] if n > ways else list(range(n))
    x = images[picks].reshape(len(picks) * drawers, -1).double()
    x = x / 255.0 if images.dtype == torch.uint8 else x
    sq = (x * x).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0).sqrt()
    char = torch.arange(len(picks)).repeat_interleave(drawers)
    drawer = torch.arange(drawers).repeat(len(picks))
    same_char = char[:, None] == char[None, :]
    same_drawer = drawer[:, None] == drawer[None, :]
    within = dist[same_char & ~same_drawer].mean()
    between = dist[~same_char].mean()
    nearest = dist.masked_fill(same_drawer, float("inf")).argmin(1)
    accuracy = (char[nearest] == char).double().mean()
    return {"within": float(within), "between": float(between),
            "ratio": float(within / between), "nn_accuracy": float(accuracy)}


def glyph_stats(ds: GlyphAlphabets, ways: int = 20) -> list[dict[str, float]]:
    """:func:`separation_stats` of every alphabet of ``ds``."""
    return [separation_stats(ds.images(i), ways) for i in range(len(ds))]


def stats_table(stats: dict[int, list[dict[str, float]]]) -> str:
    """A printable table of :func:`glyph_stats` per data version: mean ± standard deviation
    over alphabets of each statistic, and the range of the 1-NN accuracy."""
    head = (f"{'version':<8} {'alphabets':>9}  {'within L2':>12}  {'between L2':>12}  "
            f"{'within/between':>14}  {'1-NN accuracy (20-way)':>28}")
    lines = [head]
    for version, rows in stats.items():
        values = {k: np.array([r[k] for r in rows]) for k in rows[0]}

        def cell(k: str, width: int, values: dict[str, np.ndarray] = values) -> str:
            return f"{values[k].mean():.3f} ± {values[k].std():.3f}".rjust(width)

        acc = values["nn_accuracy"]
        lines.append(f"{version:<8} {len(rows):>9}  {cell('within', 12)}  "
                     f"{cell('between', 12)}  {cell('ratio', 14)}  {cell('nn_accuracy', 13)} "
                     f"[{acc.min():.3f}, {acc.max():.3f}]")
    lines.append("mean ± std over alphabets (range in brackets); L2 between images in [0, 1]; "
                 "1-NN: each drawer's image against the other 19 drawers' images")
    return "\n".join(lines)
