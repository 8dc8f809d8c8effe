"""A broken MLflow store (issue 17): a server that is down or never answers, a bad URI, a corrupt
or unwritable `mlflow.db`. Each is one line naming train.mlflow_tracking_uri, the URI and the fix,
before any work and within train.mlflow_timeout_s (not MLflow's minutes of retries); with
train.mlflow_required false, training goes on untracked and says so in one line.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kws_core.cli import main
from kws_core.config import load_params
from kws_core.training.tracking import check_tracking_store
from tests.conftest import build_tiny_dataset
from tests.reliability.test_kill import kws, project

pytestmark = pytest.mark.timeout(120)
KEY = "train.mlflow_tracking_uri"
FLAG = "--mlflow_tracking_uri"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # kept open, never read or answered
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    srv.close()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed: the kernel refuses it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(capsys, argv: list[str]) -> str:
    """`kws <argv>` in-process: exit 2, one stderr line naming the key, no traceback."""
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert KEY in err, err
    return err


def test_a_server_that_never_answers_fails_within_the_timeout(tmp_path, silent_port):
    # the real command line in a subprocess: nothing of MLflow's retry loop may run first
    root = project(tmp_path / "p")
    uri = f"http://127.0.0.1:{silent_port}"
    t0 = time.monotonic()
    out = kws(root, "train", f"--mlflow_tracking_uri={uri}", "--mlflow_timeout_s=1", check=False)
    elapsed = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{KEY} {uri!r}: no MLflow server answers GET {uri}/health (timed out" in err
    assert "--no-mlflow" in err and "mlflow_required: false" in err
    assert elapsed < 30, f"a hung server must fail in seconds, not minutes ({elapsed:.0f} s)"
    assert not (root / "results").exists(), "refused before any data or training work"


def test_a_refused_port_fails_before_any_work(tmp_path, capsys):
    root = project(tmp_path / "p")
    uri = f"http://127.0.0.1:{refused_port()}"
    err = refused(capsys, ["train", "--params", str(root / "params.yaml"), f"{FLAG}={uri}"])
    assert f"GET {uri}/health (Connection refused" in err
    assert not (root / "results").exists()


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("foo://x", "unknown scheme 'foo:'; use sqlite:///relative/path.db"),
        ("sqlite://mlflow.db", "is not a SQLite file URI; use sqlite:///"),
        ("./mlruns", "a folder store is in maintenance mode in MLflow 3"),
        ("file:///tmp/mlruns", "a folder store is in maintenance mode in MLflow 3"),
    ],
)
def test_a_bad_uri_lists_the_forms_that_work(tmp_path, capsys, uri, needle):
    root = project(tmp_path / "p")
    err = refused(capsys, ["train", "--params", str(root / "params.yaml"), f"{FLAG}={uri}"])
    assert f"{KEY} {uri!r}: " in err and needle in err
    assert "http(s)://host:port" in err


def _truncated_db(path: Path) -> bytes:
    import sqlite3

    full = path.with_name("full.db")
    con = sqlite3.connect(full)
    con.execute("CREATE TABLE runs (id TEXT)")
    con.executemany("INSERT INTO runs VALUES (?)", [("x" * 400,)] * 100)
    con.commit()
    con.close()
    data = full.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage", ["random-bytes", "truncated"])
@pytest.mark.parametrize("verb", ["train", "freeze", "stream-eval", "run-all"])
def test_a_corrupt_mlflow_db_is_one_line_and_left_as_it_was(tmp_path, capsys, damage, verb):
    root = project(tmp_path / "p", train={"mlflow_tracking_uri": "sqlite:///results/mlflow.db"})
    db = root / "results" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(30_000) if damage == "random-bytes" else _truncated_db(db))
    before = db.read_bytes()
    err = refused(capsys, [verb, "--params", str(root / "params.yaml")])
    assert f"{db} is not a usable SQLite database" in err
    assert f"move it away (mv {db} {db}.broken) or point {KEY} elsewhere" in err
    assert db.read_bytes() == before, "the user's store is never rewritten"
    # nothing written beside it either (no journal, lock or new database)
    assert {p.name for p in db.parent.iterdir()} <= {"full.db", "mlflow.db"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_sqlite_folder_is_one_line(tmp_path, capsys):
    root = project(tmp_path / "p")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        uri = f"sqlite:///{locked}/mlflow.db"
        err = refused(capsys, ["train", "--params", str(root / "params.yaml"), f"{FLAG}={uri}"])
        assert f"its folder {locked} is not writable; point it into a folder you can write" in err
    finally:
        locked.chmod(0o700)


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    # a file where the store's folder should be: no mkdir can make it, root or not
    root = project(tmp_path / "p")
    (tmp_path / "afile").write_text("mine")
    uri = f"sqlite:///{tmp_path}/afile/sub/mlflow.db"
    err = refused(capsys, ["train", "--params", str(root / "params.yaml"), f"{FLAG}={uri}"])
    assert f"cannot make its folder {tmp_path}/afile/sub" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_make_mlflow_ui_helper_refuses_a_corrupt_store_in_one_line(tmp_path):
    root = project(tmp_path / "p", train={"mlflow_tracking_uri": "sqlite:///mlflow.db"})
    (root / "mlflow.db").write_bytes(b"not a database at all" * 100)
    code = "from kws_core.training.tracking import print_runs_url; print_runs_url()"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    err = out.stderr.strip()
    assert err.startswith("make mlflow-ui: error: ") and len(err.splitlines()) == 1, err
    assert "mlflow.db is not a usable SQLite database (no SQLite header)" in err


class _Health(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"nope")


def test_a_live_server_passes_and_bounds_mlflows_own_retries(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        params = load_params(None, [f"--mlflow_tracking_uri={uri}", "--mlflow_timeout_s=2"])
        assert check_tracking_store(params) == uri
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
        # a server that is not MLflow's (no /health) is refused, not trusted
        other = load_params(None, [f"--mlflow_tracking_uri={uri}/sub"])
        with pytest.raises(Exception, match=r"answered HTTP 404, not an MLflow OK"):
            check_tracking_store(other)
    finally:
        server.shutdown()
        server.server_close()


def test_opting_out_trains_untracked_and_says_so_in_one_line(tmp_path):
    root = project(tmp_path / "p")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40)
    uri = f"http://127.0.0.1:{refused_port()}"
    out = kws(root, "train", f"--mlflow_tracking_uri={uri}", "--mlflow_required=false")
    off = [line for line in out.stdout.splitlines() if "MLflow tracking off" in line]
    assert off == [
        f"MLflow tracking off: {KEY} {uri!r}: no MLflow server answers GET {uri}/health "
        "(Connection refused; timeout 5 s) (train.mlflow_required is false: going on without it)"
    ]
    assert "Traceback" not in out.stderr
    assert "mlflow run" not in out.stdout and "steps 0->12" in out.stdout
    metrics = json.loads((root / "results/train_reports/metrics.json").read_text())
    assert metrics["final_step"] == 12 and metrics.get("run_id", "") == ""
