"""``metaleap data omniglot --download`` against a local HTTP server (127.0.0.1 only).

The server serves zip archives generated here in Omniglot's layout
(``images_background/ALPHABET/CHARACTER/*.png``); their MD5s are computed from the generated
bytes and passed as ``checksums``. No test reaches the real URLs.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omniglot_tree import make_tree

from metaleap.cli import main
from metaleap.tasks import open_taskset
from metaleap.tasks.errors import DataError
from metaleap.tasks.omniglot import OmniglotAlphabets
from metaleap.tasks.omniglot_download import ARCHIVES, URL_ENV, download_omniglot

HALVES = {"images_background": {"Alpha": 20}, "images_evaluation": {"Beta": 20}}


def zip_tree(root: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip of every folder and file under ``root`` (names relative to it), plus ``extra``
    members written under their names as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            archive.write(path, path.relative_to(root).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """``images_background.zip`` and ``images_evaluation.zip``: one alphabet of 20 characters
    of 2 drawings each."""
    out = {}
    for half, alphabets in HALVES.items():
        root = make_tree(tmp_path_factory.mktemp(half), {half: alphabets}, drawings=2)
        out[half] = zip_tree(root)
    return out


def md5s(archives: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in archives.items()}


class Server:
    """Serves ``files`` (URL path → bytes) on 127.0.0.1 and records each request's path and
    Range header. ``cut``: paths whose next response stops after half its body (the
    connection then closes); ``ignore_range``: answer every request 200 with the whole file."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut: set[str] = set()
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                asked = self.headers.get("Range")
                server.requests.append((self.path, asked))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if asked and not server.ignore_range:
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/omniglot"

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every request for archive ``name``."""
        return [r for path, r in self.requests if path == f"/omniglot/{name}.zip"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archives: dict[str, bytes]) -> Iterator[Server]:
    s = Server({f"/omniglot/{name}.zip": data for name, data in archives.items()})
    yield s
    s.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/omniglot"


def fetch(folder: Path, url: str, archives: dict[str, bytes], **kwargs: object) -> list[str]:
    """Run the download quietly; return its log lines."""
    lines: list[str] = []
    download_omniglot(folder, base_url=url, checksums=md5s(archives), progress=False,
                      timeout=10, log=lines.append, **kwargs)  # type: ignore[arg-type]
    return lines


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_unpacks_both_halves_and_the_loader_finds_them(
        tmp_path: Path, server: Server, archives: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The default folder is ``<cache>/omniglot``; ``$METALEAP_OMNIGLOT_URL`` replaces the
    authors' address; bare ``omniglot`` data opens the result."""
    monkeypatch.setenv("METALEAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(URL_ENV, server.url)
    root = download_omniglot(checksums=md5s(archives), progress=False, log=lambda _: None)
    assert root == tmp_path / "cache" / "omniglot"
    assert leftovers(root) == ["images_background", "images_background.zip",
                               "images_evaluation", "images_evaluation.zip"]
    assert server.gets("images_background") == [None]
    assert server.gets("images_evaluation") == [None]
    omni = OmniglotAlphabets(root)
    assert omni.names == ["Alpha", "Beta"] and omni.sources == list(ARCHIVES)
    found = open_taskset("omniglot")
    assert isinstance(found, OmniglotAlphabets) and found.root == root
    assert found.identity() == omni.identity() and omni.identity()["resample"] == "authors"
    task = found.task(1, seed=0, ways=20, train_per_class=1, test_per_class=1)
    assert task.train_x.shape == (20, 1, 28, 28)


def test_a_second_call_downloads_nothing(tmp_path: Path, server: Server,
                                         archives: dict[str, bytes],
                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = tmp_path / "omniglot"
    fetch(folder, server.url, archives)
    before = list(server.requests)
    assert len(before) == 2
    lines = fetch(folder, server.url, archives)
    assert lines == [f"Omniglot is already in {folder}: nothing to download"]
    monkeypatch.setenv(URL_ENV, server.url)
    assert main(["data", "omniglot", "--download", "--to", str(folder)]) == 0
    assert "already in" in capsys.readouterr().out
    assert server.requests == before


def test_checksum_mismatch_removes_the_download_and_extracts_nothing(
        tmp_path: Path, server: Server, archives: dict[str, bytes]) -> None:
    folder = tmp_path / "omniglot"
    wrong = {**md5s(archives), "images_background": "0" * 32}
    with pytest.raises(DataError) as e:
        download_omniglot(folder, base_url=server.url, checksums=wrong, progress=False,
                          log=lambda _: None)
    message = str(e.value)
    assert "\n" not in message and "images_background.zip" in message
    assert f"expected {'0' * 32}, got {md5s(archives)['images_background']}" in message
    assert leftovers(folder) == []  # no zip, no .part, no tree, no temporary folder
    assert leftovers(tmp_path) == ["omniglot"]


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resumed", "restarted"])
def test_a_cut_transfer_is_resumed_or_restarted(tmp_path: Path, server: Server,
                                                archives: dict[str, bytes],
                                                ignore_range: bool) -> None:
    """The server closes the first response after half the bytes; the retry asks for the rest
    with Range and appends the 206 answer, or, if the server ignores Range (200), starts the
    file again: either way the MD5 matches."""
    server.cut.add("/omniglot/images_background.zip")
    server.ignore_range = ignore_range
    folder = tmp_path / "omniglot"
    lines = fetch(folder, server.url, archives)
    half = len(archives["images_background"]) // 2
    assert server.gets("images_background") == [None, f"bytes={half}-"]
    assert any("resuming" in line for line in lines)
    assert OmniglotAlphabets(folder).names == ["Alpha", "Beta"]
    assert (folder / "images_background.zip").read_bytes() == archives["images_background"]
    assert not list(folder.glob("*.part"))


def test_an_interrupted_download_resumes_on_the_next_call(tmp_path: Path, server: Server,
                                                          archives: dict[str, bytes]) -> None:
    server.cut.add("/omniglot/images_background.zip")
    folder = tmp_path / "omniglot"
    with pytest.raises(DataError, match=r"interrupted .*rerun to resume") as e:
        fetch(folder, server.url, archives, retries=0)
    assert "\n" not in str(e.value)
    half = len(archives["images_background"]) // 2
    assert leftovers(folder) == ["images_background.zip.part"]
    assert (folder / "images_background.zip.part").stat().st_size == half
    fetch(folder, server.url, archives, retries=0)
    assert server.gets("images_background") == [None, f"bytes={half}-"]
    assert OmniglotAlphabets(folder).names == ["Alpha", "Beta"]


def test_a_404_fails_in_one_line(tmp_path: Path, server: Server, monkeypatch, capsys) -> None:
    folder = tmp_path / "omniglot"
    monkeypatch.setenv(URL_ENV, server.url + "/missing")
    assert main(["data", "omniglot", "--download", "--to", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metaleap: error: Omniglot: cannot download")
    assert "HTTP Error 404" in err and f"{server.url}/missing/images_background.zip" in err
    assert leftovers(folder) == []


def test_offline_names_both_urls_their_md5s_and_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    url = closed_port_url()
    with pytest.raises(DataError) as e:
        download_omniglot(folder, base_url=url, progress=False, timeout=5, log=lambda _: None)
    message = str(e.value)
    assert "\n" not in message and message.startswith("Omniglot: cannot download")
    for name, md5 in ARCHIVES.items():
        assert f"{url}/{name}.zip (MD5 {md5})" in message
    assert f"put them in {folder} and rerun" in message


def test_zips_put_in_the_folder_by_hand_are_used_without_downloading(
        tmp_path: Path, archives: dict[str, bytes]) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    for name, data in archives.items():
        (folder / f"{name}.zip").write_bytes(data)
    lines = fetch(folder, closed_port_url(), archives)
    assert sum("not downloaded" in line for line in lines) == 2
    assert OmniglotAlphabets(folder).names == ["Alpha", "Beta"]


@pytest.mark.parametrize("member", ["../escaped.png", "images_background/../../escaped.png",
                                    "ABSOLUTE"])
def test_a_member_outside_the_folder_is_refused_and_nothing_extracted(
        tmp_path: Path, archives: dict[str, bytes], member: str) -> None:
    """``ABSOLUTE`` stands for an absolute path under this test's folder."""
    if member == "ABSOLUTE":
        member = (tmp_path / "elsewhere" / "escaped.png").as_posix()
    tree = make_tree(tmp_path / "tree", {"images_background": {"Alpha": 20}}, drawings=1)
    evil = {**archives, "images_background": zip_tree(tree, {member: b"x"})}
    s = Server({f"/omniglot/{name}.zip": data for name, data in evil.items()})
    try:
        folder = tmp_path / "omniglot"
        with pytest.raises(DataError, match="would land outside") as e:
            fetch(folder, s.url, evil)
    finally:
        s.close()
    assert "\n" not in str(e.value) and repr(member) in str(e.value)
    assert leftovers(folder) == ["images_background.zip"]  # verified, never unpacked
    assert not list(tmp_path.rglob("escaped.png"))


def test_bare_omniglot_without_the_download_says_how_to_get_it(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    monkeypatch.setenv("METALEAP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"metaleap data omniglot --download"):
        open_taskset("omniglot")
    assert main(["transfer", "--preset", "omniglot-paper", "--data", "omniglot", "--dry-run",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metaleap data omniglot --download" in err
    assert not (tmp_path / "run").exists()


def test_the_whole_path_download_then_the_paper_preset_dry_run(
        tmp_path: Path, server: Server, archives: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``metaleap data omniglot --download`` from the local server into the default folder,
    then ``metaleap transfer --preset omniglot-paper --data omniglot --dry-run`` on it (the
    preset shrunk by ``--set`` to the two generated alphabets of 2 drawings): priced, nothing
    written."""
    monkeypatch.setenv("METALEAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(URL_ENV, server.url)
    monkeypatch.setattr("metaleap.tasks.omniglot_download.ARCHIVES", md5s(archives))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "omniglot", "--download"]) == 0
    overrides = ["seeds=0", "num_pretrain=1", "num_heldout=1", "num_val=0",
                 "train_per_class=1", "test_per_class=1"]
    argv = ["transfer", "--preset", "omniglot-paper", "--data", "omniglot", "--dry-run",
            "--threads", "1", "--out", str(tmp_path / "run")]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "inner steps per run" in out and "estimated wall" in out
    assert not (tmp_path / "run").exists()
