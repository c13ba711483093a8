"""Fonts, alphabets and handwriting-like drawing behind :mod:`metaleap.tasks.glyphs`.

Alphabets come from Unicode data (``fontTools.unicodedata`` scripts and blocks, Python's
``unicodedata`` categories and names), not from hand-made lists:

- A letter is a code point of category ``Lu``/``Ll``/``Lo`` without a decomposition (so no
  precomposed accented forms), whose Unicode name does not mark it as archaic, a symbol, a
  sign, a digit, a ligature, a final or a small (subscript) form.
- A script's alphabet is taken from its *main block*: the block, outside extension,
  supplement, compatibility and presentation-form blocks, holding most of its letters. Cased
  scripts keep one case, the one with more letters there (uppercase on a tie), so that letters
  are distinct after cropping.
- Scripts whose main block holds more than 1,000 letters are skipped: logographies (Han,
  Tangut, Egyptian hieroglyphs), Yi and Hangul's precomposed syllables; most of them have a
  single font here.
- A letter is kept when it renders, in every font used for the alphabet, as a distinct glyph
  (not the ``.notdef`` box) at least a quarter of the font size across (no lone marks), and
  when in most of these fonts it has strokes (not dots alone) and is no near copy (after
  cropping and rescaling, as the dataset does) of an earlier letter.
- An alphabet has 20 to 55 letters. Over 55: blocks of up to 150 letters keep their first 55
  (blocks start with the basic letters: Cyrillic, Arabic, Runic, Cherokee, Mongolian); larger
  syllabaries (Ethiopic, Vai, Canadian syllabics...) keep 55 letters spaced evenly through the
  block, so that every consonant series is represented.
- Fonts: those covering at least 20 of the letters, tried by coverage and kept while the letters
  they all render stay at 85% or more of the first font's, up to one font per drawer; an
  alphabet needs ``min_fonts`` of them.

Drawing one image: the font's glyph (Pillow, basic layout) is fitted into a square, thinned to
its centre lines (Zhang-Suen) and redrawn with a round pen of the drawer's width, then warped by
a random rotation (within ±10°), horizontal shear and anisotropic scale plus a smooth elastic
field, cropped to its ink, centred with a margin and resampled to the output size.
"""

from __future__ import annotations

import functools
import hashlib
import math
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from fontTools import unicodedata as ucd
from fontTools.ttLib import TTCollection, TTFont
from PIL import Image, ImageDraw, ImageFont

from metaleap.seeding import generator

DRAWERS = 20
MIN_LETTERS = 20
MAX_LETTERS = 55
MAX_BLOCK_LETTERS = 1000
SAMPLE_ABOVE = 150  # blocks with more letters are syllabaries: sample them evenly
_CHECKED = 70  # letters checked in other blocks (the first ones; 55 are kept)

# Debian packages with many writing systems, and where they install their fonts.
DEBIAN_FONT_DIRS: dict[str, str] = {
    "fonts-noto-core": "/usr/share/fonts/truetype/noto",
    "fonts-dejavu-core/extra": "/usr/share/fonts/truetype/dejavu",
    "fonts-freefont-ttf": "/usr/share/fonts/truetype/freefont",
    "fonts-unifont": "/usr/share/fonts/opentype/unifont",
}
# Files that are no text fonts for our purpose: TeX encodings (cm*), placeholder glyphs for every
# code point (LastResort), private-use and size variants (STIXNonUni*, STIXSiz*, unifont_csur),
# and a duplicate of unifont with Japanese glyph variants (unifont_jp).
_EXCLUDED_PREFIXES = ("cm", "LastResort", "STIXNonUni", "STIXSiz", "unifont_csur", "unifont_jp")
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")

_SKIP_BLOCK_WORDS = ("Extended", "Extension", "Supplement", "Additional", "Presentation",
                     "Compatibility", "Halfwidth", "Fullwidth", "Enclosed", "Phonetic",
                     "Mathematical", "Letterlike", "IPA", "Modifier", "Small Form", "Ideogram",
                     "Symbols", "Numeral")
_SKIP_NAME_WORDS = ("ARCHAIC", "SYMBOL", "LETTER SMALL", "SIGN", "DIGIT", "NUMBER", "LIGATURE",
                    "FINAL")

_CHECK_PX = 32          # font size for the letter checks
_THUMB = 20             # side of the normalised thumbnails compared for near copies
_NEAR_COPY = 0.04       # root mean square thumbnail difference below which letters are one

_warned: set[str] = set()


@dataclass(frozen=True)
class FontInfo:
    """One font face: file, face index in a collection, names and content hash."""

    path: str
    index: int
    name: str
    family: str
    weight: int
    italic: bool
    sha256: str
    source: str  # "matplotlib" or the Debian package

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "family": self.family, "path": self.path,
                "index": self.index, "sha256": self.sha256, "source": self.source}


@dataclass(frozen=True)
class AlphabetSpec:
    """An alphabet: its name (the Unicode script name), letters, block and fonts by index."""

    name: str
    script: str
    block: str
    characters: str
    fonts: tuple[int, ...]


@dataclass(frozen=True)
class AlphabetJob:
    """What choosing one script's alphabet needs: its letters and the fonts that cover them."""

    name: str
    block: str
    letters: str
    sampled: bool  # letters are an even sample of a large syllabary
    fonts: tuple[tuple[int, FontInfo, str], ...]  # (font index, font, letters in its cmap)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=4)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's content, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def font_files(fonts: str = "all") -> list[tuple[Path, str]]:
    """Candidate font files, matplotlib's first, each with its source, in a fixed order.

    ``fonts="matplotlib"`` restricts to the fonts matplotlib ships; ``"all"`` adds the Debian
    fonts of :data:`DEBIAN_FONT_DIRS` that are installed, and warns once when some are not.
    """
    if fonts not in ("all", "matplotlib"):
        raise ValueError(f"fonts must be 'all' or 'matplotlib', not {fonts!r}")
    roots = [(Path(matplotlib.get_data_path()) / "fonts" / "ttf", "matplotlib")]
    if fonts == "all":
        missing = [pkg for pkg, d in DEBIAN_FONT_DIRS.items() if not Path(d).is_dir()]
        if missing:
            _warn_once(f"glyph alphabets: Debian fonts not found ({', '.join(missing)}); using "
                       "fewer fonts and alphabets. Install them with: apt-get install "
                       "fonts-noto-core fonts-dejavu-core fonts-dejavu-extra fonts-freefont-ttf "
                       "fonts-unifont")
        roots += [(Path(d), pkg) for pkg, d in DEBIAN_FONT_DIRS.items() if Path(d).is_dir()]
    return [(p, source) for root, source in roots for p in sorted(root.iterdir())
            if p.suffix.lower() in _FONT_SUFFIXES and not p.name.startswith(_EXCLUDED_PREFIXES)]


def load_fonts(files: list[tuple[Path, str, str]]) -> tuple[list[FontInfo], list[frozenset[int]]]:
    """Font faces of ``(path, source, sha256)`` files and their character maps.

    Faces with the same full name (the DejaVu that both matplotlib and Debian ship) are kept
    once, the first one met.
    """
    infos: list[FontInfo] = []
    cmaps: list[frozenset[int]] = []
    for path, source, digest in files:
        collection = TTCollection(str(path), lazy=True) if path.suffix.lower() == ".ttc" else None
        faces = collection.fonts if collection else [TTFont(str(path), lazy=True)]
        for index, face in enumerate(faces):
            names = face["name"]
            full = names.getDebugName(4) or path.stem
            if all(info.name != full for info in infos):
                os2 = face["OS/2"] if "OS/2" in face else None
                infos.append(FontInfo(str(path), index, full, names.getDebugName(1) or full,
                                      int(os2.usWeightClass) if os2 else 400,
                                      bool(os2.fsSelection & 1) if os2 else False, digest,
                                      source))
                cmaps.append(frozenset(face.getBestCmap() or {}))
            face.close()
    return infos, cmaps


@functools.lru_cache(maxsize=1)
def script_letters() -> dict[str, tuple[str, str]]:
    """Unicode script name -> (main block, candidate letters), by the rules in the module doc."""
    found: dict[str, dict[str, dict[str, list[str]]]] = defaultdict(
        lambda: defaultdict(lambda: {"Lu": [], "Ll": [], "Lo": []}))
    for cp in range(0x20, 0x20000):
        ch = chr(cp)
        category = unicodedata.category(ch)
        if category not in ("Lu", "Ll", "Lo") or unicodedata.decomposition(ch):
            continue
        block = ucd.block(ch)
        script = ucd.script(ch)
        name = unicodedata.name(ch, "")
        if (script in ("Zyyy", "Zinh", "Zzzz") or any(w in block for w in _SKIP_BLOCK_WORDS)
                or any(w in name for w in _SKIP_NAME_WORDS)):
            continue
        found[script][block][category].append(ch)
    result = {}
    for script, blocks in found.items():
        options = []
        for block, cats in blocks.items():
            cased = cats["Lu"] if len(cats["Lu"]) >= len(cats["Ll"]) else cats["Ll"]
            options.append((cased or cats["Lo"], block))
        letters, block = max(options, key=lambda o: (len(o[0]), -ord(o[0][0])))
        if MIN_LETTERS <= len(letters) <= MAX_BLOCK_LETTERS:
            result[ucd.script_name(script)] = (block, "".join(letters))
    return dict(sorted(result.items()))


def _render(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image | None:
    """The glyph of ``ch`` cropped to its ink (``None`` if it has none), ink high."""
    left, top, right, bottom = font.getbbox(ch)
    img = Image.new("L", (max(right - left, 1) + 2, max(bottom - top, 1) + 2))
    ImageDraw.Draw(img).text((1 - left, 1 - top), ch, font=font, fill=255)
    box = img.getbbox()
    return img.crop(box) if box else None


def _fit_square(img: Image.Image, side: int) -> np.ndarray:
    """Scale ``img`` so its longer side is ``side``, centred on a ``side``² square; uint8."""
    w, h = img.size
    nw, nh = max(1, round(w * side / max(w, h))), max(1, round(h * side / max(w, h)))
    out = Image.new("L", (side, side))
    out.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), ((side - nw) // 2,
                                                                (side - nh) // 2))
    return np.asarray(out)


def _check_font(info: FontInfo, letters: str) -> dict[str, np.ndarray]:
    """Letters that render as distinct, non-.notdef glyphs of some size -> thumbnails."""
    font = ImageFont.truetype(info.path, _CHECK_PX, index=info.index,
                              layout_engine=ImageFont.Layout.BASIC)
    seen = {(img.size, img.tobytes()) for img in [_render(font, "\U0010ffff")] if img}
    thumbs: dict[str, np.ndarray] = {}
    for ch in letters:
        img = _render(font, ch)
        if img is None or max(img.size) < _CHECK_PX / 4 or (img.size, img.tobytes()) in seen:
            continue  # no ink, a mark too small to stand alone, .notdef or a copy
        seen.add((img.size, img.tobytes()))
        thumbs[ch] = _fit_square(img, _THUMB)
    return thumbs


def _near_copies(thumbs: np.ndarray) -> np.ndarray:
    """For each row, whether it nearly equals an earlier row (root mean square difference)."""
    sq = (thumbs ** 2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * thumbs @ thumbs.T) / thumbs.shape[1]
    earlier = np.tri(len(thumbs), k=-1, dtype=bool)
    return ((dist < _NEAR_COPY ** 2) & earlier).any(1)


def _family_round_robin(infos: list[tuple[int, FontInfo]]) -> list[int]:
    """Font indices ordered so that consecutive drawers use different families."""
    families: dict[str, list[tuple[int, FontInfo]]] = {}
    for i, info in infos:
        families.setdefault(info.family, []).append((i, info))
    styles = [sorted(v, key=lambda t: (t[1].italic, t[1].weight, t[1].name))
              for v in families.values()]
    order = []
    for rank in range(max(len(s) for s in styles)):
        order += [s[rank][0] for s in styles if rank < len(s)]
    return order


def alphabet_jobs(fonts: list[FontInfo], cmaps: list[frozenset[int]],
                  only: list[str] | None = None) -> list[AlphabetJob]:
    """One job per script (or per script named in ``only``) that enough fonts cover."""
    scripts = script_letters()
    if only is not None:
        unknown = sorted(set(only) - scripts.keys())
        if unknown:
            raise ValueError(f"no glyph alphabet for {unknown}; scripts: {', '.join(scripts)}")
    jobs = []
    for name, (block, letters) in scripts.items():
        if only is not None and name not in only:
            continue
        sampled = len(letters) > SAMPLE_ABOVE
        if sampled:  # a large syllabary: check an even sample only
            picks = np.linspace(0, len(letters) - 1, 2 * MAX_LETTERS).round().astype(int)
            letters = "".join(letters[k] for k in picks)
        else:
            letters = letters[:_CHECKED]
        covering = []
        for i, (info, cmap) in enumerate(zip(fonts, cmaps, strict=True)):
            covered = "".join(c for c in letters if ord(c) in cmap)
            if len(covered) >= MIN_LETTERS:
                covering.append((i, info, covered))
        if covering:
            jobs.append(AlphabetJob(name, block, letters, sampled, tuple(covering)))
    return jobs


def select_alphabet(job: AlphabetJob, min_fonts: int) -> AlphabetSpec | None:
    """The alphabet of one script, or ``None`` when too few letters or fonts remain.

    Fonts are tried by coverage (ties: one family after another) and kept, up to one per
    drawer, while the letters that all kept fonts render stay at 85% or more of the first
    font's. Letters that are dots alone (no stroke half across) or near copies of an earlier
    letter in most of these fonts are then dropped, and the 55-letter limit applied.
    """
    if len(job.fonts) < min_fonts:
        return None
    infos = {i: info for i, info, _ in job.fonts}
    rank = {i: r for r, i in enumerate(_family_round_robin(list(infos.items())))}
    used: list[int] = []
    checked: dict[int, dict[str, np.ndarray]] = {}
    keep: set[str] = set()
    for i, info, covered in sorted(job.fonts, key=lambda f: (-len(f[2]), rank[f[0]])):
        valid = _check_font(info, covered)
        both = keep & valid.keys() if used else set(valid)
        if len(both) >= MIN_LETTERS and (not used or len(both) >= 0.85 * len(checked[used[0]])):
            used.append(i)
            checked[i] = valid
            keep = both
        if len(used) == DRAWERS:
            break
    if len(used) < min_fonts:
        return None

    def majority(test: Callable[[np.ndarray], np.ndarray], chars: list[str]) -> list[str]:
        """The letters that ``test`` (thumbnails -> flags) flags in at most half the fonts."""
        if not chars:
            return chars
        votes = sum(test(np.stack([checked[i][c] for c in chars])).astype(int) for i in used)
        return [c for c, v in zip(chars, votes, strict=True) if 2 * v <= len(used)]

    chars = [c for c in job.letters if c in keep]
    chars = majority(lambda t: _skeleton(t > 64).sum((1, 2)) < _THUMB / 2, chars)  # dots only
    chars = majority(lambda t: _near_copies(t.reshape(len(t), -1) / 255.0), chars)
    if len(chars) > MAX_LETTERS:
        picks = np.linspace(0, len(chars) - 1, MAX_LETTERS).round().astype(int)
        chars = [chars[k] for k in picks] if job.sampled else chars[:MAX_LETTERS]
    if len(chars) < MIN_LETTERS:
        return None
    return AlphabetSpec(job.name, ucd.script(chars[0]), job.block, "".join(chars),
                        tuple(sorted(used, key=rank.__getitem__)))


# --- rendering -------------------------------------------------------------------------------

def _geometry(size: int) -> tuple[int, int, int, int]:
    """Pixels for an output of ``size``²: glyph side and canvas side while drawing, margin of
    the output, and the pooling factor before the final resampling (power of two)."""
    margin = max(1, round(size / 14))
    glyph = max(48, 2 * (size - 2 * margin))
    pool = 2 ** int(math.log2(glyph / (size - 2 * margin)))
    return glyph, 8 * math.ceil(2.2 * glyph / 8), margin, pool


def _thinning_tables() -> np.ndarray:
    """Zhang-Suen deletion rules for both sub-steps, indexed by the 8-neighbour code."""
    tables = np.zeros((2, 256), bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # P2..P9, clockwise from north
        count = sum(p)
        turns = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))
        if 2 <= count <= 6 and turns == 1:
            tables[0, code] = p[0] * p[2] * p[4] == 0 and p[2] * p[4] * p[6] == 0
            tables[1, code] = p[0] * p[2] * p[6] == 0 and p[0] * p[4] * p[6] == 0
    return tables


_THINNING = _thinning_tables()


def _skeleton(ink: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of boolean images (batch, H, W) to one-pixel centre lines (0/1)."""
    img = np.pad(ink, ((0, 0), (1, 1), (1, 1))).astype(np.uint8)
    centre = img[:, 1:-1, 1:-1]
    changed = True
    while changed:
        changed = False
        for table in _THINNING:
            code = (img[:, :-2, 1:-1] | img[:, :-2, 2:] << 1 | img[:, 1:-1, 2:] << 2
                    | img[:, 2:, 2:] << 3 | img[:, 2:, 1:-1] << 4 | img[:, 2:, :-2] << 5
                    | img[:, 1:-1, :-2] << 6 | img[:, :-2, :-2] << 7)
            drop = table[code] & (centre == 1)
            if drop.any():
                centre[drop] = 0
                changed = True
    return centre


def _pen(lines: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
    """Redraw centre lines (batch, H, W) with round pens about ``pen`` (batch,) pixels wide;
    (batch, 1, H, W) in [0, 1].

    The lines grow by alternate square and cross dilations (an octagon: the same width along
    any direction, and dots as big as strokes), then a blur and a soft threshold round the
    outline and set the width to within a pixel.
    """
    radius = ((pen - 1) / 2).round().clamp_min(1)
    ink = lines[:, None]
    for step in range(int(radius.max())):
        if step % 2 == 0:
            grown = F.max_pool2d(ink, 3, 1, 1)
        else:
            grown = torch.maximum(F.max_pool2d(ink, (3, 1), 1, (1, 0)),
                                  F.max_pool2d(ink, (1, 3), 1, (0, 1)))
        ink = torch.where((radius > step)[:, None, None, None], grown, ink)
    x = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-0.5 * x ** 2)
    kernel = (kernel[:, None] * kernel[None, :] / kernel.sum() ** 2)[None, None]
    soft = F.conv2d(ink, kernel, padding=2)
    level = 0.5 - 0.4 * ((pen - 1) / 2 - radius).clamp(-0.5, 0.5)  # +-1/2 pixel of width
    return ((soft - level[:, None, None, None]) / 0.25 + 0.5).clamp(0, 1)


@functools.lru_cache(maxsize=16)
def _basis(knots: int, side: int) -> torch.Tensor:
    """(side, knots): Gaussian bumps on evenly spaced knots, a smooth basis of unit variance."""
    x = (2 * np.arange(side) + 1) / side - 1
    bumps = np.exp(-0.5 * ((x[:, None] - np.linspace(-1, 1, knots)) * (knots - 1) / 2) ** 2)
    return torch.from_numpy(bumps / np.sqrt((bumps ** 2).sum(1).mean())).float()


def _warp_grid(linear: np.ndarray, fields: list[torch.Tensor], side: int) -> torch.Tensor:
    """Sampling grid (batch, side, side, 2) for ``grid_sample``: the inverse of the linear maps
    (batch, 2, 2) plus smooth displacements from knot values (batch, 2, k, k)."""
    x = (2 * torch.arange(side, dtype=torch.float32) + 1) / side - 1
    inv = torch.from_numpy(np.linalg.inv(linear)).float()[:, :, :, None, None]
    grid = torch.stack([inv[:, 0, 0] * x[None, None, :] + inv[:, 0, 1] * x[None, :, None],
                        inv[:, 1, 0] * x[None, None, :] + inv[:, 1, 1] * x[None, :, None]], 1)
    for knots in fields:
        m = _basis(knots.shape[-1], side)
        grid += m @ knots @ m.T
    return grid.permute(0, 2, 3, 1)


def _linear_maps(angle: np.ndarray, shear: np.ndarray, sx: np.ndarray, sy: np.ndarray
                 ) -> np.ndarray:
    """Rotation · horizontal shear · anisotropic scale, one 2×2 matrix per sample."""
    cos, sin, zero, one = np.cos(angle), np.sin(angle), np.zeros_like(angle), np.ones_like(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shr = np.stack([np.stack([one, shear], -1), np.stack([zero, one], -1)], -2)
    scale = np.stack([np.stack([sx, zero], -1), np.stack([zero, sy], -1)], -2)
    return rot @ shr @ scale


def _crop_resize(warped: torch.Tensor, size: int, margin: int, pool: int) -> np.ndarray:
    """Crop images (batch, 1, side, side) to their ink's bounding box, centre it with
    ``margin``, resample to ``size``² and scale the darkest ink to 1; uint8 (batch, size, size).
    """
    side = warped.shape[-1]
    idx = torch.arange(side)

    def extent(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.where(mask, idx, side).amin(1)
        high = torch.where(mask, idx + 1, 0).amax(1)
        return (low + high) / 2, (high - low).clamp_min(1)

    cy, h = extent(warped[:, 0].amax(2) > 0.1)
    cx, w = extent(warped[:, 0].amax(1) > 0.1)
    half = torch.maximum(h, w)[:, None] / 2
    inner = size - 2 * margin
    t = (2 * torch.arange(inner) + 1) / inner - 1  # output pixel centres in [-1, 1]
    gx = 2 * (cx[:, None] + t * half) / side - 1
    gy = 2 * (cy[:, None] + t * half) / side - 1
    grid = torch.stack([gx[:, None, :].expand(-1, inner, -1),
                        gy[:, :, None].expand(-1, -1, inner)], -1)
    out = F.grid_sample(F.avg_pool2d(warped, pool), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    out = out / out.amax((2, 3), keepdim=True).clamp_min(1e-6)
    return (F.pad(out[:, 0], (margin,) * 4) * 255).round().to(torch.uint8).numpy()


def render_alphabet(spec: AlphabetSpec, fonts: list[FontInfo], seed: int, size: int
                    ) -> np.ndarray:
    """All drawers of all letters: uint8 array (letters, DRAWERS, size, size), ink high.

    Each font's glyph is thinned to centre lines. Drawer ``j`` writes with font
    ``fonts[j % len(fonts)]`` and a personal style (pen width, slant, tilt, proportions, wobble)
    from the stream ``(seed, "glyphs", alphabet, "style", j)``; each image adds its own pen,
    affine jitter and elastic field from the stream ``(seed, "glyphs", alphabet, char, j)``.
    """
    glyph, canvas, margin, pool = _geometry(size)
    faces = [ImageFont.truetype(f.path, round(1.5 * glyph), index=f.index,
                                layout_engine=ImageFont.Layout.BASIC) for f in fonts]
    low = torch.tensor([0.05, -0.2, -4.0, -0.1, 0.03])
    high = torch.tensor([0.13, 0.2, 4.0, 0.1, 0.07])
    style = torch.stack([low + (high - low) * torch.rand(5, generator=generator(
        seed, "glyphs", spec.name, "style", j)) for j in range(DRAWERS)]).double()
    pen, slant, tilt, aspect, wobble = style.T
    pad = (canvas - glyph) // 2
    out = np.zeros((len(spec.characters), DRAWERS, size, size), np.uint8)
    for c, ch in enumerate(spec.characters):  # fonts <= DRAWERS: each font has a drawer
        ink = np.stack([_fit_square(_render(face, ch), glyph) > 64 for face in faces])
        lines = torch.from_numpy(_skeleton(ink)).float()[[j % len(fonts)
                                                          for j in range(DRAWERS)]]
        streams = [generator(seed, "glyphs", spec.name, ch, j) for j in range(DRAWERS)]
        jitter = torch.stack([2 * torch.rand(5, generator=g) - 1 for g in streams]).double()
        amp = (wobble * 2 * glyph / canvas).float()[:, None, None, None]  # of the glyph side
        coarse = torch.stack([torch.randn(2, 4, 4, generator=g) for g in streams])
        fine = torch.stack([torch.randn(2, 8, 8, generator=g) for g in streams])
        drawn = _pen(lines, (pen * glyph * (1 + 0.1 * jitter[:, 0])).float())
        linear = _linear_maps(torch.deg2rad((tilt + 6 * jitter[:, 1]).clamp(-10, 10)).numpy(),
                              (slant + 0.1 * jitter[:, 2]).numpy(),
                              torch.exp(aspect + 0.1 * jitter[:, 3]).numpy(),
                              torch.exp(-aspect + 0.1 * jitter[:, 4]).numpy())
        grid = _warp_grid(linear, [coarse.clamp(-2, 2) * amp, fine.clamp(-2, 2) * amp / 3],
                          canvas)
        batch = F.pad(drawn, (pad, canvas - glyph - pad, pad, canvas - glyph - pad))
        warped = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        out[c] = _crop_resize(warped, size, margin, pool)
    return out
