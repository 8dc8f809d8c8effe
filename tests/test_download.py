"""download_file against a local HTTP server (127.0.0.1, ephemeral port) with failure switches."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from dataclasses import dataclass, field

import pytest

from kws_core.data.download import download_file, part_path
from kws_core.infra.errors import ConfigError, DataError

PAYLOAD = os.urandom(200_000)  # > 3 read chunks
MAX_REQUESTS = 20  # a hard bound so a retry bug cannot loop for long


@dataclass
class ServerState:
    files: dict[str, bytes]
    fail_first: int = 0  # answer the first N requests with 500
    drop_after: int | None = None  # first request: send this many body bytes, then hang up
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    stall_first_s: float = 0.0  # first request: wait this long before answering
    requests: list[dict[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        state = self.server.state
        with state.lock:
            index = len(state.requests)
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if index >= MAX_REQUESTS:
            self.send_error(503, "request bound exceeded")
            return
        if index == 0 and state.stall_first_s:
            time.sleep(state.stall_first_s)
        if index < state.fail_first:
            self.send_error(500, "injected failure")
            return
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "no such file")
            return
        range_header = self.headers.get("Range")
        if range_header and not state.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            chunk = body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            chunk = body
            self.send_response(200)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if index == 0 and state.drop_after is not None:
            self.wfile.write(chunk[: state.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return  # the server closes the socket: the client sees a short body
        self.wfile.write(chunk)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState

    def handle_error(self, request, client_address):
        pass  # a client that timed out and left is expected in some tests


@pytest.fixture
def server():
    """Yield a factory: server(**switches) -> (base_url, state). Serves PAYLOAD at /data.bin."""
    started: list[_Server] = []

    def start(**switches) -> tuple[str, ServerState]:
        state = ServerState(files={"/data.bin": PAYLOAD}, **switches)
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.state = state
        threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", state

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def no_sleep(monkeypatch):
    """Record backoff waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr("kws_core.data.download.time.sleep", waits.append)
    return waits


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_http_happy_path(server, tmp_path):
    base, state = server()
    dest = tmp_path / "sub" / "data.bin"
    result = download_file(f"{base}/data.bin", dest, progress=True)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()
    assert state.requests == [{"path": "/data.bin", "range": None}]


@pytest.mark.parametrize("as_uri", [True, False], ids=["file-url", "plain-path"])
def test_local_file(tmp_path, as_uri):
    src = tmp_path / "src" / "archive.tar.gz"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    url = src.as_uri() if as_uri else str(src)
    dest = tmp_path / "out" / "archive.tar.gz"
    assert download_file(url, dest, sha256=sha(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


def test_missing_local_file_is_data_error(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(DataError, match="nope.tar.gz"):
        download_file(missing.as_uri(), tmp_path / "out.tar.gz", progress=False)


def test_unsupported_scheme_is_data_error(tmp_path):
    with pytest.raises(DataError, match="unsupported URL scheme 'ftp'"):
        download_file("ftp://example.invalid/x.tar.gz", tmp_path / "x.tar.gz", progress=False)


def test_malformed_sha256_is_config_error(server, tmp_path):
    base, state = server()
    with pytest.raises(ConfigError, match="64 hex digits"):
        download_file(f"{base}/data.bin", tmp_path / "d", sha256="abc123", progress=False)
    assert state.requests == []


def test_resume_after_dropped_connection(server, tmp_path, no_sleep):
    base, state = server(drop_after=50_000)
    dest = tmp_path / "data.bin"
    download_file(f"{base}/data.bin", dest, retries=2, backoff_s=0.25, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in state.requests] == [None, "bytes=50000-"]
    assert no_sleep == [0.25]
    assert not part_path(dest).exists()


def test_resumes_existing_part_file(server, tmp_path):
    base, state = server()
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(PAYLOAD[:12_345])
    download_file(f"{base}/data.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in state.requests] == ["bytes=12345-"]


def test_server_ignoring_range_starts_over(server, tmp_path):
    base, state = server(ignore_range=True)
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(b"\0" * 1000)  # not the start of PAYLOAD: must not be kept
    download_file(f"{base}/data.bin", dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in state.requests] == ["bytes=1000-"]


def test_416_with_complete_part_is_verified_not_refetched(server, tmp_path):
    base, state = server()
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(PAYLOAD)
    download_file(f"{base}/data.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in state.requests] == [f"bytes={len(PAYLOAD)}-"]
    assert not part_path(dest).exists()


def test_416_with_oversized_part_downloads_again(server, tmp_path):
    base, state = server()
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(PAYLOAD + b"junk")
    download_file(f"{base}/data.bin", dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in state.requests] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_5xx_is_retried_with_exponential_backoff(server, tmp_path, no_sleep):
    base, state = server(fail_first=3)
    dest = tmp_path / "data.bin"
    download_file(f"{base}/data.bin", dest, retries=3, backoff_s=0.5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(state.requests) == 4
    assert no_sleep == [0.5, 1.0, 2.0]


def test_retries_exhausted_is_data_error(server, tmp_path, no_sleep):
    base, state = server(fail_first=1000)
    dest = tmp_path / "data.bin"
    url = f"{base}/data.bin"
    with pytest.raises(DataError) as info:
        download_file(url, dest, retries=2, backoff_s=0.5, progress=False)
    message = str(info.value)
    assert url in message and "500" in message and "3 attempt" in message
    assert len(state.requests) == 3
    assert not dest.exists()


def test_404_fails_at_once(server, tmp_path, no_sleep):
    base, state = server()
    url = f"{base}/missing.tar.gz"
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        download_file(url, tmp_path / "m.tar.gz", retries=5, backoff_s=5.0, progress=False)
    assert time.monotonic() - started < 2.0
    assert no_sleep == []  # not retried
    assert url in str(info.value) and "404" in str(info.value)
    assert len(state.requests) == 1
    assert not (tmp_path / "m.tar.gz").exists()


def test_connection_refused_is_retried_then_data_error(tmp_path, no_sleep):
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(DataError, match="2 attempt"):
        download_file(url, tmp_path / "d.bin", retries=1, backoff_s=0.1, progress=False)
    assert no_sleep == [0.1]


def test_timeout_is_retried(server, tmp_path):
    base, state = server(stall_first_s=1.0)
    dest = tmp_path / "data.bin"
    download_file(f"{base}/data.bin", dest, retries=1, backoff_s=0.0, timeout_s=0.2, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(state.requests) == 2


def test_sha256_ok(server, tmp_path):
    base, _ = server()
    dest = tmp_path / "data.bin"
    download_file(f"{base}/data.bin", dest, sha256=sha(PAYLOAD).upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_sha256_mismatch_removes_part_file(server, tmp_path):
    base, _ = server()
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    url = f"{base}/data.bin"
    with pytest.raises(DataError) as info:
        download_file(url, dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert url in message and wrong in message and sha(PAYLOAD) in message
    assert not dest.exists()
    assert not part_path(dest).exists()


@pytest.mark.parametrize("with_sha", [False, True], ids=["no-sha", "matching-sha"])
def test_existing_dest_is_returned_without_request(server, tmp_path, with_sha):
    base, state = server()
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"already here")
    digest = sha(b"already here") if with_sha else None
    assert download_file(f"{base}/data.bin", dest, sha256=digest, progress=False) == dest
    assert dest.read_bytes() == b"already here"
    assert state.requests == []


def test_existing_dest_with_wrong_sha_is_downloaded_again(server, tmp_path):
    base, state = server()
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    download_file(f"{base}/data.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(state.requests) == 1
