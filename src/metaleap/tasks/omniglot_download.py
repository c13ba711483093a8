"""Omniglot in one command: the two archives its authors publish, checked and unpacked.

``download_omniglot(folder)`` fetches ``images_background.zip`` and ``images_evaluation.zip``
from ``BASE_URL`` (Lake et al.'s repository; ``$METALEAP_OMNIGLOT_URL`` or ``base_url=``
replaces it), streaming each into ``NAME.zip.part`` with a progress bar. An interrupted
transfer resumes from the ``.part`` file with an HTTP Range request (a server that answers 200
instead of 206 restarts it from zero). Each archive's MD5 is checked before anything is
extracted; its members must all land inside the folder; it is unpacked into a temporary folder
beside the target and renamed into place, so ``folder/images_background/`` either is complete
or does not exist. A zip already in ``folder`` with the right MD5 is used without downloading,
which is also how to install the data by hand. Every failure is one :class:`DataError` line.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from metaleap.tasks.errors import DataError

__all__ = ["ARCHIVES", "BASE_URL", "URL_ENV", "archive_url", "default_folder",
           "download_omniglot", "missing_halves", "require_downloaded"]

#: Where the dataset's authors publish the archives (github.com/brendenlake/omniglot).
BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
#: Environment variable that replaces ``BASE_URL`` (a mirror, or a local server in tests).
URL_ENV = "METALEAP_OMNIGLOT_URL"
#: Archive (and folder) name → MD5 of the published zip.
ARCHIVES: dict[str, str] = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
CHUNK = 1 << 16


class _Interrupted(Exception):
    """The connection ended before the whole archive arrived (the ``.part`` file is kept)."""


def default_folder() -> Path:
    """``<cache>/omniglot``, the cache folder being that of the glyph data
    (:func:`metaleap.tasks.glyphs.cache_folder`: ``$METALEAP_CACHE``, ...)."""
    from metaleap.tasks.glyphs import cache_folder

    return cache_folder() / "omniglot"


def archive_url(name: str, base_url: str | None = None) -> str:
    """The URL of archive ``name``: ``base_url``, else ``$METALEAP_OMNIGLOT_URL``, else
    ``BASE_URL``, followed by ``/NAME.zip``."""
    base = base_url or os.environ.get(URL_ENV) or BASE_URL
    return f"{base.rstrip('/')}/{name}.zip"


def missing_halves(folder: str | os.PathLike[str]) -> list[str]:
    """The archive folders (``images_background``, ``images_evaluation``) absent in ``folder``."""
    return [name for name in ARCHIVES if not (Path(folder) / name).is_dir()]


def require_downloaded(folder: str | os.PathLike[str] | None = None) -> Path:
    """``folder`` (default :func:`default_folder`) if both halves are in it, else a one-line
    :class:`DataError` telling how to download them."""
    root = Path(folder) if folder is not None else default_folder()
    missing = missing_halves(root)
    if missing:
        what = ("is not" if len(missing) == len(ARCHIVES)
                else f"is incomplete ({', '.join(missing)}/ missing)")
        raise DataError(f"Omniglot {what} in {root}: run `metaleap data omniglot --download` "
                        "(or pass --data omniglot:PATH)")
    return root


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def md5sum(path: Path) -> str:
    """The hex MD5 of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(folder: Path, sums: Mapping[str, str], base_url: str | None) -> str:
    files = " and ".join(f"{archive_url(name, base_url)} (MD5 {md5})"
                         for name, md5 in sums.items())
    return f"download {files} by hand, put them in {folder} and rerun"


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part``, resuming after its current size; ``_Interrupted`` if the
    connection ends early; ``urllib.error.URLError``/``OSError`` if the server is unreachable."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "metaleap"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is no prefix of this file: start again
            part.unlink()
            _transfer(url, part, timeout, progress)
            return
        raise
    with response:
        resumed = response.status == 206 and response.headers.get(
            "Content-Range", "").startswith(f"bytes {have}-")
        if not resumed:
            have = 0  # the server sends the whole file (it ignored Range): restart cleanly
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        try:
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=part.name.removesuffix(".part"), disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as e:
            raise _Interrupted(_one_line(e) or type(e).__name__) from e
    if total is not None and part.stat().st_size < total:
        raise _Interrupted(f"connection closed after {part.stat().st_size} of {total} bytes")


def _fetch(url: str, zip_path: Path, md5: str, timeout: float, retries: int, progress: bool,
           hint: str, log: Callable[[str], None]) -> None:
    """Download ``url`` to ``zip_path`` through ``zip_path.part`` and check its MD5; the
    ``.part`` file is renamed only once it matches."""
    part = zip_path.with_name(zip_path.name + ".part")
    if part.exists():
        log(f"resuming {url} after {part.stat().st_size} bytes")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise DataError(f"Omniglot: download of {url} interrupted ({e}); rerun to "
                                f"resume from {part}, or {hint}") from None
            log(f"{url}: {e}; resuming")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(
                e, urllib.error.HTTPError) else e
            raise DataError(f"Omniglot: cannot download {url} ({_one_line(reason)}); "
                            f"{hint}") from None
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise DataError(f"Omniglot: MD5 mismatch for {zip_path.name} from {url}: expected {md5}, "
                        f"got {got}; the download was removed and nothing was extracted")
    os.replace(part, zip_path)


def _check_members(archive: zipfile.ZipFile, zip_path: Path, target: Path) -> None:
    """A ``DataError`` if any member would land outside the extraction folder."""
    for info in archive.infolist():
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":"):
            raise DataError(f"Omniglot: {zip_path} has a member that would land outside "
                            f"{target.parent}: {name!r}; nothing was extracted")


def _extract(zip_path: Path, target: Path) -> None:
    """Unpack ``target.name/`` of ``zip_path`` into ``target``: into a temporary folder beside
    it, then renamed, so ``target`` is never half built."""
    for stale in target.parent.glob(f".{target.name}-*.tmp"):  # left by a killed extraction
        shutil.rmtree(stale, ignore_errors=True)
    tmp: Path | None = None
    try:
        with zipfile.ZipFile(zip_path) as archive:
            _check_members(archive, zip_path, target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".tmp",
                                        dir=target.parent))
            archive.extractall(tmp)
        unpacked = tmp / target.name
        if not unpacked.is_dir():
            raise DataError(f"Omniglot: {zip_path} holds no {target.name}/ folder; nothing was "
                            "extracted")
        os.replace(unpacked, target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataError(f"Omniglot: {zip_path} is not a readable zip archive "
                        f"({_one_line(e)}); remove it and rerun") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def download_omniglot(folder: str | os.PathLike[str] | None = None, *,
                      base_url: str | None = None, checksums: Mapping[str, str] | None = None,
                      timeout: float = 60.0, retries: int = 3, progress: bool = True,
                      log: Callable[[str], None] = print) -> Path:
    """Put ``images_background/`` and ``images_evaluation/`` in ``folder`` and return it.

    Args:
        folder: where (default :func:`default_folder`, ``<cache>/omniglot``).
        base_url: replaces ``$METALEAP_OMNIGLOT_URL`` and ``BASE_URL``.
        checksums: archive name → expected MD5 (default ``ARCHIVES``, the published files').
        timeout: seconds a connection may stall.
        retries: how often an interrupted transfer is resumed before giving up (a rerun
            resumes it too).
        progress: show a progress bar per archive.
        log: receives one line per action.

    A half already in place is left alone, so a second call downloads nothing; a zip already
    in ``folder`` is used if its MD5 matches. Raises :class:`DataError` (one line) when a
    server cannot be reached, a checksum differs, or an archive is malformed or unsafe.
    """
    root = Path(folder) if folder is not None else default_folder()
    sums = dict(ARCHIVES if checksums is None else checksums)
    if set(sums) != set(ARCHIVES):
        raise ValueError(f"checksums must name {sorted(ARCHIVES)}, got {sorted(sums)}")
    todo = missing_halves(root)
    if not todo:
        log(f"Omniglot is already in {root}: nothing to download")
        return root
    root.mkdir(parents=True, exist_ok=True)
    hint = _manual_hint(root, sums, base_url)
    for name in todo:
        zip_path, url = root / f"{name}.zip", archive_url(name, base_url)
        if (root / name).exists():
            raise DataError(f"Omniglot: {root / name} exists but is not a folder; remove it "
                            "and rerun")
        if zip_path.is_file():
            got = md5sum(zip_path)
            if got != sums[name]:
                raise DataError(f"Omniglot: MD5 mismatch for {zip_path}: expected {sums[name]}, "
                                f"got {got}; nothing was extracted (remove the file or replace "
                                "it and rerun)")
            log(f"{zip_path}: MD5 verified, not downloaded")
        else:
            log(f"downloading {url} to {zip_path}")
            _fetch(url, zip_path, sums[name], timeout, retries, progress, hint, log)
        _extract(zip_path, root / name)
        log(f"{name}/ extracted in {root}")
    return root
