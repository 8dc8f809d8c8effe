"""fetch_dataset: download + safe extract + completeness marker, reuse without network."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import tarfile
import threading
from pathlib import Path

import pytest

from kws_core.data import fetch as fetch_mod
from kws_core.data.fetch import MARKER_NAME, archive_file_name, fetch_dataset, read_marker
from kws_core.infra.errors import DataError

SPEECH_FILES = {
    "yes/0a7c2a8d_nohash_0.wav": b"RIFF....WAVEfmt yes0",
    "yes/0a9f9af7_nohash_1.wav": b"RIFF....WAVEfmt yes1",
    "no/0b09edd3_nohash_0.wav": b"RIFF....WAVEfmt no0",
    "_background_noise_/white_noise.wav": b"RIFF....WAVEfmt noise",
    "validation_list.txt": b"yes/0a9f9af7_nohash_1.wav\n",
    "testing_list.txt": b"no/0b09edd3_nohash_0.wav\n",
}


def build_archive(extra: dict[str, tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in SPEECH_FILES.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in (extra or {}).values():
            tf.addfile(info)
    return buf.getvalue()


ARCHIVE = build_archive()
ARCHIVE_SHA = hashlib.sha256(ARCHIVE).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        self.server.paths.append(self.path)
        body = self.server.files.get(self.path)
        if body is None or len(self.server.paths) > 10:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    """Serve ARCHIVE at /sc.tar.gz; yield (url, list of requested paths, files dict)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.paths = []
    httpd.files = {"/sc.tar.gz": ARCHIVE}
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/sc.tar.gz", httpd.paths, httpd.files
    httpd.shutdown()
    httpd.server_close()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _interrupt_after(monkeypatch, n_files: int) -> None:
    real = tarfile.TarFile.makefile
    count = [0]

    def makefile(self, tarinfo, targetpath):
        if count[0] == n_files:
            raise KeyboardInterrupt
        count[0] += 1
        return real(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", makefile)


def test_fetch_over_http_then_reuse_without_network(server, tmp_path, caplog):
    url, requests, _ = server
    data_dir = tmp_path / "data" / "speech"
    assert fetch_dataset(url, data_dir, progress=False) == data_dir
    assert files_under(data_dir) == set(SPEECH_FILES) | {MARKER_NAME}
    marker = json.loads((data_dir / MARKER_NAME).read_text())
    assert marker["url"] == url and marker["sha256"] == ARCHIVE_SHA
    assert marker["files"] == len(SPEECH_FILES) and marker["created"]
    archive = tmp_path / "data" / ".downloads" / archive_file_name(url)
    assert archive.read_bytes() == ARCHIVE
    assert requests == ["/sc.tar.gz"]

    caplog.set_level(logging.INFO, logger="kws_core.data.fetch")
    assert fetch_dataset(url, data_dir, sha256=ARCHIVE_SHA, progress=False) == data_dir
    assert requests == ["/sc.tar.gz"]  # no second request
    assert "reusing complete data set at" in caplog.text


def test_custom_download_dir(server, tmp_path):
    url, _, _ = server
    downloads = tmp_path / "cache"
    fetch_dataset(url, tmp_path / "speech", download_dir=downloads, progress=False)
    assert [p.read_bytes() for p in downloads.iterdir()] == [ARCHIVE]
    assert not (tmp_path / ".downloads").exists()


def test_marker_with_other_sha_is_not_reused(server, tmp_path):
    url, requests, files = server
    data_dir = tmp_path / "speech"
    fetch_dataset(url, data_dir, progress=False)
    files["/sc.tar.gz"] = build_archive({"x": tarfile.TarInfo("./extra.wav")})
    new_sha = hashlib.sha256(files["/sc.tar.gz"]).hexdigest()
    fetch_dataset(url, data_dir, sha256=new_sha, progress=False)
    assert len(requests) == 2
    assert "extra.wav" in files_under(data_dir)
    assert read_marker(data_dir)["sha256"] == new_sha


@pytest.mark.parametrize("as_uri", [True, False], ids=["file-url", "plain-path"])
def test_fetch_local_archive_is_read_in_place(tmp_path, as_uri):
    archive = tmp_path / "src" / "sc.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(ARCHIVE)
    url = archive.as_uri() if as_uri else str(archive)
    data_dir = tmp_path / "data" / "speech"
    fetch_dataset(url, data_dir, sha256=ARCHIVE_SHA, progress=False)
    assert files_under(data_dir) == set(SPEECH_FILES) | {MARKER_NAME}
    assert read_marker(data_dir)["url"] == url
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["speech"]  # no copy made


def test_existing_foreign_data_dir_is_refused(server, tmp_path):
    url, requests, _ = server
    data_dir = tmp_path / "speech"
    data_dir.mkdir()
    (data_dir / "my_recording.wav").write_bytes(b"mine")
    with pytest.raises(DataError) as info:
        fetch_dataset(url, data_dir, progress=False)
    message = str(info.value)
    assert str(data_dir) in message and url in message
    assert "was not made from" in message and 'data_url to ""' in message
    assert files_under(data_dir) == {"my_recording.wav"}
    assert requests == []


def test_data_dir_made_from_another_url_is_refused(server, tmp_path):
    url, requests, _ = server
    data_dir = tmp_path / "speech"
    data_dir.mkdir()
    other = "http://example.invalid/v0.01.tar.gz"
    (data_dir / MARKER_NAME).write_text(json.dumps({"url": other, "sha256": "0" * 64}))
    with pytest.raises(DataError, match="was not made from") as info:
        fetch_dataset(url, data_dir, progress=False)
    assert other in str(info.value)
    assert requests == []


def test_empty_existing_data_dir_is_filled(server, tmp_path):
    url, _, _ = server
    data_dir = tmp_path / "speech"
    data_dir.mkdir()
    fetch_dataset(url, data_dir, progress=False)
    assert files_under(data_dir) == set(SPEECH_FILES) | {MARKER_NAME}


def test_empty_data_url_uses_folder_as_it_is(tmp_path):
    data_dir = tmp_path / "speech"
    data_dir.mkdir()
    (data_dir / "yes").mkdir()
    assert fetch_dataset("", data_dir, progress=False) == data_dir
    assert not (data_dir / MARKER_NAME).exists()
    with pytest.raises(DataError, match="data_url is empty"):
        fetch_dataset("", tmp_path / "missing", progress=False)


def test_sha_mismatch_leaves_no_data_dir(server, tmp_path):
    url, _, _ = server
    data_dir = tmp_path / "data" / "speech"
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_dataset(url, data_dir, sha256="f" * 64, progress=False)
    assert not data_dir.exists()
    assert list((tmp_path / "data" / ".downloads").iterdir()) == []  # no .part left


def test_http_404_is_data_error(server, tmp_path):
    url, requests, _ = server
    with pytest.raises(DataError, match="404"):
        fetch_dataset(url.replace("sc.tar.gz", "nope.tar.gz"), tmp_path / "s", progress=False)
    assert len(requests) == 1
    assert not (tmp_path / "s").exists()


def test_hostile_archive_leaves_no_data_dir(server, tmp_path):
    url, _, files = server
    evil = tarfile.TarInfo("./yes/passwd")
    evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/passwd"
    files["/sc.tar.gz"] = build_archive({"evil": evil})
    data_dir = tmp_path / "data" / "speech"
    with pytest.raises(DataError, match="yes/passwd"):
        fetch_dataset(url, data_dir, progress=False)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".downloads"]


def test_interrupted_extraction_leaves_no_data_dir_then_recovers(server, tmp_path, monkeypatch):
    url, requests, _ = server
    data_dir = tmp_path / "data" / "speech"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            fetch_dataset(url, data_dir, progress=False)
    assert not data_dir.exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".downloads"]
    assert not list(tmp_path.rglob(MARKER_NAME))

    fetch_dataset(url, data_dir, progress=False)  # the kept archive is extracted, no download
    assert requests == ["/sc.tar.gz"]
    assert read_marker(data_dir)["files"] == len(SPEECH_FILES)


def test_marker_is_written_before_the_final_rename(server, tmp_path, monkeypatch):
    """If the process dies right after writing the marker, data_dir must still not exist."""
    url, _, _ = server
    data_dir = tmp_path / "data" / "speech"
    real = fetch_mod.atomic_write_text
    written: list[Path] = []

    def write_then_die(path, text):
        real(path, text)
        written.append(Path(path))
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod, "atomic_write_text", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset(url, data_dir, progress=False)
    assert len(written) == 1 and written[0].parent != data_dir
    assert not data_dir.exists()
    assert not list(tmp_path.rglob(MARKER_NAME))
