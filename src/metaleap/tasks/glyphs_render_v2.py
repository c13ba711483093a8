"""Handwriting-like drawing of the glyph alphabets, data version 2 (:mod:`metaleap.tasks.glyphs`).

Version 2 keeps version 1's alphabets and letters (:func:`metaleap.tasks.glyphs_render.
select_alphabet`), so the two versions differ in the drawing alone, and draws each letter as 20
independent writers would:

- **One skeleton per letter.** The alphabet's *skeleton font* is one face of the fonts that
  chose its letters: an outline font before a bitmap one (Unifont only where no outline font
  covers the script), then the upright regular face of a sans design. Its glyph is smoothed,
  thresholded and reduced to one-pixel centre lines by scikit-image's ``skeletonize``; the
  lines become a graph of points (one per skeleton pixel, joined to their 8 neighbours) sampled
  densely along its edges. All 20 drawers redraw this one skeleton: no drawer has a font.
- **A style per (alphabet, drawer).** Drawer ``j`` of an alphabet draws its style from the
  stream ``(seed, "glyphs-v2", alphabet, "drawer", j)``: pen width, pressure variation, slant,
  tilt, proportions, the strength of its deformation and pen tremor, and a habitual smooth
  deformation field of its own. No style is shared across alphabets.
- **Intricate letters** are written with a thinner pen (:func:`pen_scale`), as a writer draws
  them larger against the pen.
- **Each image** (stream ``(seed, "glyphs-v2", alphabet, letter, j)``) adds a smooth
  deformation field of the drawer's strength, a fine tremor field, small jitter of the style's
  linear map and width. The transformed points are drawn with a round pen whose width varies
  smoothly along the strokes (pressure): an exact Euclidean distance transform
  (``scipy.ndimage``) on a canvas 4× the output, anti-aliased, box-filtered to the output size,
  cropped to the ink and centred with a margin like version 1.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy
import skimage
from PIL import ImageFont
from scipy import ndimage
from skimage.morphology import skeletonize

from metaleap.seeding import numpy_rng
from metaleap.tasks import glyphs_render as v1

DRAWERS = v1.DRAWERS
SUPERSAMPLE = 4  # drawing canvas side / output side
_SKELETON_PX = 64  # side of the square the skeleton is taken in
_STEPS = 3  # points per skeleton edge (spacing under half a skeleton pixel)
_SPUR = 5  # skeleton branches from an end to a junction shorter than this are dropped

#: style ranges, (low, high): drawn uniformly per (alphabet, drawer)
STYLE = {
    "pen": (0.055, 0.11),       # pen width, fraction of the drawn box's side
    "pressure": (0.0, 0.35),    # relative width variation along the strokes
    "slant": (-0.35, 0.35),     # horizontal shear
    "tilt": (-8.0, 8.0),        # rotation, degrees
    "aspect": (-0.18, 0.18),    # log of width / height stretch
    "habit": (0.055, 0.145),  # the drawer's own fixed deformation field, std (box = 2)
    "warp": (0.07, 0.16),     # per-image smooth deformation, std
    "tremor": (0.004, 0.012),   # per-image fine pen jitter, std
}


def software() -> dict[str, str]:
    """The versions of the libraries that version 2 draws with (part of the cache key)."""
    return {"scikit-image": skimage.__version__, "scipy": scipy.__version__}


def skeleton_font(fonts: list[v1.FontInfo], alphabet: str = "") -> int:
    """Index in ``fonts`` of the skeleton font of ``alphabet``: outline before bitmap
    (Unifont), upright before italic, weight nearest regular, a design made for the script
    (its name in the font's) before others, a sans design before others, then the given
    order."""
    def rank(k: int) -> tuple:
        f = fonts[k]
        return (f.source == "fonts-unifont" or f.name.startswith("Unifont"), f.italic,
                abs(f.weight - 400), alphabet.lower() not in f.name.lower(),
                "Sans" not in f.name.split(), k)
    return min(range(len(fonts)), key=rank)


def skeleton_points(face: ImageFont.FreeTypeFont, ch: str) -> tuple[np.ndarray, np.ndarray]:
    """The letter's skeleton: (points (P, 2) as (x, y) in [-1, 1], one per skeleton pixel, and
    edge index pairs (E, 2) between 8-neighbours).

    The glyph, fitted into a square (aspect kept), is blurred a little (round corners, no
    serifs nor pixel steps), thresholded and skeletonized by scikit-image.
    """
    img = v1._fit_square(v1._render(face, ch), _SKELETON_PX).astype(np.float32) / 255
    smooth = ndimage.gaussian_filter(np.pad(img, 4), _SKELETON_PX / 40)
    lines = skeletonize(smooth > 0.5)
    if not lines.any():  # a hairline that the threshold erased: its ink, thinned
        lines = skeletonize(np.pad(img, 4) > 0)
    lines = _prune(lines, _SPUR)
    ys, xs = np.nonzero(lines)
    index = -np.ones(lines.shape, np.int64)
    index[ys, xs] = np.arange(len(ys))
    padded = np.pad(index, 1, constant_values=-1)
    edges = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        other = padded[1 + ys + dy, 1 + xs + dx]
        keep = other >= 0
        edges.append(np.stack([index[ys, xs][keep], other[keep]], 1))
    side = lines.shape[0]
    points = np.stack([xs, ys], 1).astype(np.float64) * 2 / (side - 1) - 1
    return points, np.concatenate(edges)


def _prune(lines: np.ndarray, length: int) -> np.ndarray:
    """``lines`` without their spurs: branches from an end point to a junction shorter than
    ``length`` pixels (serifs, corners of thick strokes). Lone strokes and dots stay."""
    lines = lines.copy()
    count = ndimage.convolve(lines.astype(np.int64), np.ones((3, 3), np.int64),
                             mode="constant") - 1
    h, w = lines.shape
    for y0, x0 in zip(*np.nonzero(lines & (count == 1)), strict=True):
        path, (y, x) = [(y0, x0)], (y0, x0)
        while len(path) <= length:
            nxt = [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                   if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w
                   and lines[y + dy, x + dx] and (y + dy, x + dx) not in path]
            if len(nxt) != 1:  # a junction reached (or a lone stroke's other end)
                break
            y, x = nxt[0]
            if count[y, x] >= 3:  # the junction: drop the branch before it
                for py, px in path:
                    lines[py, px] = False
                break
            path.append((y, x))
    return lines


def _dense(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Points along every edge (and every lone point), ``_STEPS`` per edge."""
    if not len(edges):
        return points
    t = np.arange(_STEPS)[None, :, None] / _STEPS
    a, b = points[edges[:, 0]][:, None], points[edges[:, 1]][:, None]
    return np.concatenate([(a + t * (b - a)).reshape(-1, 2), points])


@functools.lru_cache(maxsize=8)
def _knots(k: int) -> np.ndarray:
    return np.linspace(-1.3, 1.3, k)


def _field(xy: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """A smooth field at points (P, 2) from knot values (C, k, k) on a k×k grid of Gaussian
    bumps over [-1.3, 1.3]² (unit variance when knots are N(0, 1)); (P, C)."""
    k = knots.shape[-1]
    centres = _knots(k)
    width = (centres[1] - centres[0]) * 0.8
    bx = np.exp(-0.5 * ((xy[:, :1] - centres) / width) ** 2)
    by = np.exp(-0.5 * ((xy[:, 1:] - centres) / width) ** 2)
    norm = math.sqrt(2 * math.pi) * width / (centres[1] - centres[0]) / math.sqrt(2)
    values = np.einsum("pa,cab,pb->pc", by, knots, bx)
    return values / norm


def drawer_styles(seed: int, alphabet: str) -> list[dict[str, object]]:
    """Each drawer's style for ``alphabet``: the values of :data:`STYLE` and its habit field."""
    styles = []
    for j in range(DRAWERS):
        rng = numpy_rng(seed, "glyphs-v2", alphabet, "drawer", j)
        style: dict[str, object] = {k: float(rng.uniform(lo, hi)) for k, (lo, hi)
                                    in STYLE.items()}
        style["habit_field"] = rng.standard_normal((2, 3, 3))
        styles.append(style)
    return styles


def _linear(tilt: float, slant: float, aspect: float) -> np.ndarray:
    a = math.radians(tilt)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shear = np.array([[1.0, slant], [0.0, 1.0]])
    scale = np.diag([math.exp(aspect / 2), math.exp(-aspect / 2)])
    return rot @ shear @ scale


def pen_scale(pixels: int) -> float:
    """How much thinner than its style a drawer writes a letter whose skeleton has ``pixels``
    pixels (in the ``_SKELETON_PX`` square), as a writer draws an intricate letter larger
    against the pen: 1 up to 3 square sides of line, then with the inverse square root of the
    line length, at least 0.55."""
    return float(np.clip((3 * _SKELETON_PX / max(pixels, 1)) ** 0.5, 0.55, 1.0))


def draw(points: np.ndarray, style: dict[str, object], rng: np.random.Generator, size: int,
         thin: float = 1.0) -> np.ndarray:
    """One drawer's image of a skeleton (dense points in [-1, 1]²), its pen ``thin`` times its
    style's: float (size, size) in [0, 1], ink high, darkest ink 1."""
    s = style
    linear = _linear(s["tilt"] + rng.normal(0, 2.5), s["slant"] + rng.normal(0, 0.05),
                     s["aspect"] + rng.normal(0, 0.05))
    warp = rng.standard_normal((2, 4, 4))
    tremor = rng.standard_normal((2, 9, 9))
    pressure = rng.standard_normal((1, 3, 3))
    width = s["pen"] * thin * math.exp(rng.normal(0, 0.08))
    xy = (points + s["habit"] * _field(points, s["habit_field"])
          + s["warp"] * _field(points, warp) + s["tremor"] * _field(points, tremor))
    xy = xy @ linear.T
    # fit the drawing (with the pen) into the inner box of a canvas SUPERSAMPLE× the output
    margin = max(1, round(size / 14))
    inner = (size - 2 * margin) * SUPERSAMPLE
    low, high = xy.min(0), xy.max(0)
    extent = max(float((high - low).max()), 1e-6)
    # pen radius in canvas pixels, relative to the drawn box (a wide or tall letter's pen
    # follows its shorter side a little), varying along the strokes with the pressure
    width *= float(np.clip(math.sqrt(max(float((high - low).min()), 1e-6) / extent), 0.7, 1))
    radius = width * inner / 2 * np.clip(1 + s["pressure"] * _field(points, pressure)[:, 0],
                                         0.5, 1.6)
    scale = (inner - 2 * radius.max() - 1) / extent
    side = size * SUPERSAMPLE
    px = (xy - (low + high) / 2) * scale + side / 2
    cells = np.clip(np.round(px - 0.5).astype(np.int64), 0, side - 1)
    canvas_r = np.zeros((side, side))
    np.maximum.at(canvas_r, (cells[:, 1], cells[:, 0]), radius)
    dist, (iy, ix) = ndimage.distance_transform_edt(canvas_r == 0, return_indices=True)
    ink = np.clip(canvas_r[iy, ix] + 0.5 - dist, 0, 1)
    out = ink.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))
    return out / max(out.max(), 1e-6)


def render_alphabet(spec: v1.AlphabetSpec, font: v1.FontInfo, seed: int, size: int
                    ) -> np.ndarray:
    """All drawers of all letters: uint8 array (letters, DRAWERS, size, size), ink high.

    Every letter's skeleton comes from ``font``; drawer ``j`` redraws it in its own style
    (:func:`drawer_styles`), each image with its own stream ``(seed, "glyphs-v2", alphabet,
    letter, j)``.
    """
    face = ImageFont.truetype(font.path, round(1.5 * _SKELETON_PX), index=font.index,
                              layout_engine=ImageFont.Layout.BASIC)
    styles = drawer_styles(seed, spec.name)
    out = np.zeros((len(spec.characters), DRAWERS, size, size), np.uint8)
    for c, ch in enumerate(spec.characters):
        skeleton, edges = skeleton_points(face, ch)
        points, thin = _dense(skeleton, edges), pen_scale(len(skeleton))
        for j, style in enumerate(styles):
            rng = numpy_rng(seed, "glyphs-v2", spec.name, ch, j)
            out[c, j] = np.round(draw(points, style, rng, size, thin) * 255).astype(np.uint8)
    return out


__all__ = ["DRAWERS", "STYLE", "draw", "drawer_styles", "render_alphabet", "skeleton_font",
           "skeleton_points", "software"]
