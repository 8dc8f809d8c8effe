"""`kws demo`: the live scorer, the WebSocket protocol and hostile clients, on a real server."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from kws_core.config import Params, StreamConfig
from kws_core.data.manifest import build_manifest, write_manifest
from kws_core.demo.models import StreamingExport, load_demo_model
from kws_core.demo.server import (
    DemoConfig,
    DemoServer,
    Session,
    checked_settings,
    origin_allowed,
)
from kws_core.export.loader import ExportedModel
from kws_core.export.streaming_tflite import STREAMING_TFLITE
from kws_core.export.writer import export_model
from kws_core.infra.errors import ConfigError, KwsError
from kws_core.streaming.recognize import recognize_settings, recognize_stream
from kws_core.streaming.run import score_stream
from kws_core.training.loop import train
from tests.conftest import build_tiny_dataset, tone
from tests.test_train import learned_params

RATE = 16000


WORDS = ["yes", "no", "cat"]  # cat: an unknown word


def tiny_project(root: Path, **over: Any) -> tuple[Params, Path]:
    """Params and the saved_model of a small export (~10 s) that learns one tone pitch per
    word (`learnable`): yes and no are keywords, cat is an unknown word. `over`: params keys."""
    data = build_tiny_dataset(root / "data", WORDS, 60, learnable=True)
    base = {"wanted_words": "yes,no", "manifest_dir": str(root / "manifest")}
    p = learned_params(root, **(base | over))
    built = build_manifest(p.data, data, progress=False)
    write_manifest(built, root / "manifest")  # for the streaming test-stream generator
    manifest = built.manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    return p, export_model(p, "best", manifest=manifest).saved_model


def tiny_export(root: Path, **over: Any) -> Path:
    """The saved_model of `tiny_project`."""
    return tiny_project(root, **over)[1]


def word_stream(words: list[str], lead_s: float = 1.0, gap_s: float = 0.5) -> np.ndarray:
    """The words' tones (each at its training pitch) after `lead_s` of silence, `gap_s` apart."""
    parts = [np.zeros(int(lead_s * RATE), np.float32)]
    for i, w in enumerate(words):
        parts += [tone(f"stream{w}{i}", freq=300.0 * 1.5 ** WORDS.index(w))]
        parts += [np.zeros(int(gap_s * RATE), np.float32)]
    return np.concatenate(parts)


def heard(words: list[str]) -> list[str]:
    """What the decoder should report for `words`: cat as _unknown_."""
    return [w if w in ("yes", "no") else "_unknown_" for w in words]


def tone_stream(seconds: float = 4.0) -> np.ndarray:
    """Tone bursts over faint noise, one a second."""
    return np.concatenate([tone(f"demo{i}", n=RATE) for i in range(int(seconds))])


def frame(pcm: np.ndarray, seq: int) -> bytes:
    ints = np.round(np.clip(pcm, -1, 1) * 32767).astype("<i2")
    return b"KWS1" + struct.pack("<I", seq) + ints.tobytes()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> ExportedModel:
    # with model_streaming.tflite beside the clip models (kws freeze --streaming)
    return ExportedModel.load(tiny_export(tmp_path_factory.mktemp("demo"), streaming=True))


@pytest.fixture(scope="module")
def server(model):
    srv = DemoServer(model, StreamConfig(clip_stride_ms=30), port=0, max_clients=8)
    srv.start_thread()
    yield srv
    srv.stop()


def client(srv: DemoServer, origin: str | None = None):
    return connect(
        f"ws://127.0.0.1:{srv.port}/ws",
        origin=origin or srv.url,
        open_timeout=10,
        close_timeout=2,
        max_size=None,
    )


def recv(ws, kind: str, timeout: float = 10.0) -> dict:
    """The next message of type `kind` (results in between are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if msg["type"] == kind:
            return msg


def stream_through(srv: DemoServer, pcm: np.ndarray, chunk_ms: int = 40) -> dict:
    """Send `pcm` paced in real time; every window, detection and latency the server sent."""
    chunk = RATE * chunk_ms // 1000
    out = {"windows": [], "detections": [], "latency_ms": [], "spectrogram": 0}
    with client(srv) as ws:
        hello = recv(ws, "hello")
        assert hello["model"]["labels"] == srv.cfg.model.labels
        ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
        recv(ws, "started")
        t0 = time.monotonic()
        sent = {}
        for seq, i in enumerate(range(0, len(pcm), chunk)):
            time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
            sent[seq] = time.monotonic()
            ws.send(frame(pcm[i : i + chunk], seq))
            msg = recv(ws, "results")
            assert msg["seq"] == seq
            if msg["windows"]:
                out["latency_ms"].append(1000 * (time.monotonic() - sent[seq]))
            out["windows"] += msg["windows"]
            out["detections"] += msg["detections"]
            out["spectrogram"] += len(msg["spectrogram"])
    return out


# ------------------------------------------------------------------ scoring
@pytest.mark.parametrize("kind", ["saved_model", "model_float.tflite"])
def test_the_demos_streaming_session_equals_offline_scoring(model, kind):
    if kind != "saved_model":
        model = ExportedModel.load(model.path.parent / kind)
    pcm = tone_stream(3)
    offline = score_stream(model, pcm, 30)
    live = Session(DemoConfig(model, StreamConfig(clip_stride_ms=30))).scorer
    assert live.path == "frames" or kind != "saved_model"
    got = [r for block in np.array_split(pcm, 37) for r in live.push(block)]
    assert [t for t, _ in got] == offline.times_ms.tolist()
    np.testing.assert_allclose(np.stack([s for _, s in got]), offline.scores, atol=1e-4)


def test_settings_are_checked_with_one_line_errors():
    base = StreamConfig(clip_stride_ms=30)
    new = checked_settings(base, {"detection_threshold": 0.5, "minimum_count": 2}, 1000)
    assert (new.detection_threshold, new.minimum_count) == (0.5, 2)
    for bad, words in [
        ({"detection_threshold": 1.5}, "detection_threshold"),
        ({"detection_threshold": "x"}, "detection_threshold"),
        ({"average_window_ms": 10}, "can never decide"),
        ({"clip_stride_ms": 10}, "cannot be changed live"),
        ([], "must be an object"),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            checked_settings(base, bad, 1000)
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------ the protocol
def test_page_and_model_info_are_served(server):
    with urllib.request.urlopen(server.url + "/") as r:
        page = r.read().decode()
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert "/static/demo.js" in page and "cdn" not in page.lower()
    for name in ("demo.js", "worklet.js", "demo.css"):
        with urllib.request.urlopen(f"{server.url}/static/{name}") as r:
            assert r.status == 200 and b"http" not in r.read().replace(b"http://{", b"")
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(server.url + "/static/..%2Fserver.py")
    with urllib.request.urlopen(server.url + "/api/model") as r:
        info = json.loads(r.read())
    assert info["labels"] == server.cfg.model.labels and info["architecture"]
    for path in ("/", "/api/model"):  # DNS rebinding: a foreign name for this server
        req = urllib.request.Request(server.url + path, headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError, match="421"):
            urllib.request.urlopen(req)


def test_a_stream_through_the_socket_gives_results_in_real_time(server):
    words = ["yes", "no", "cat"]
    out = stream_through(server, word_stream(words, lead_s=0.5))  # 5 s
    # windows every 30 ms from 1 s on: (5000 - 1000) / 30 + 1 = 134
    assert len(out["windows"]) == 134
    times = [w["t"] for w in out["windows"]]
    assert times[0] == 500 and np.all(np.diff(times) == 30)
    assert all(len(w["scores"]) == len(server.cfg.model.labels) for w in out["windows"])
    assert out["spectrogram"] >= 495  # a column every 10 ms
    assert [d["label"] for d in out["detections"]] == heard(words)
    # loopback, 2 shared cores: a result within a few hundred ms of its last chunk
    median = np.median(out["latency_ms"])
    print(f"\nloopback: median {median:.1f} ms from a 40 ms chunk sent to its results back")
    assert median < 300, out["latency_ms"]


def test_settings_change_the_running_decoder(server):
    with client(server) as ws:
        recv(ws, "hello")
        ws.send(json.dumps({"type": "settings", "settings": {"detection_threshold": 0.0}}))
        assert recv(ws, "settings")["settings"]["detection_threshold"] == 0.0
        ws.send(json.dumps({"type": "settings", "settings": {"suppression_ms": -5}}))
        err = recv(ws, "error")["message"]
        assert "suppression_ms" in err and "\n" not in err


# ------------------------------------------------------------------ hostile clients
def test_malformed_frames_get_errors_and_the_connection_survives(server):
    with client(server) as ws:
        recv(ws, "hello")
        ws.send(frame(np.zeros(160), 0))
        assert "before audio" in recv(ws, "error")["message"]
        ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
        recv(ws, "started")
        ws.send(b"KWS1" + bytes(70_000))
        assert "over the 65536-byte limit" in recv(ws, "error")["message"]
        ws.send(bytes(np.random.default_rng(0).integers(0, 256, 999, dtype=np.uint8)))
        assert "not an audio frame" in recv(ws, "error")["message"]
        ws.send(b"KWS1\x00\x00\x00\x00\x01")  # odd payload: half a sample
        assert "not an audio frame" in recv(ws, "error")["message"]
        ws.send("{not json")
        assert "not JSON" in recv(ws, "error")["message"]
        ws.send(json.dumps({"type": "launch"}))
        assert "unknown control message" in recv(ws, "error")["message"]
        ws.send(json.dumps({"type": "start", "sample_rate": 44100}))
        assert "resample" in recv(ws, "error")["message"]
        ws.send(frame(np.zeros(640), 1))  # still served
        assert recv(ws, "results")["seq"] == 1
    with client(server) as ws:  # past uvicorn's 1 MiB cap the socket itself is closed
        recv(ws, "hello")
        ws.send(b"KWS1" + bytes(2 << 20))
        with pytest.raises(ConnectionClosed) as closed:
            recv(ws, "never")
        assert closed.value.rcvd.code == 1009


def test_audio_faster_than_real_time_is_refused_with_a_reason(server):
    with client(server) as ws:
        recv(ws, "hello")
        ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
        recv(ws, "started")
        with pytest.raises(ConnectionClosed) as closed:
            for seq in range(200):  # 8 s of audio at once
                ws.send(frame(np.zeros(640), seq))
            for _ in range(400):
                msg = json.loads(ws.recv(timeout=10))
                if msg["type"] == "error":
                    assert "faster than real time" in msg["message"]
        assert closed.value.rcvd.code == 1008


def test_foreign_origins_are_refused(server):
    for origin in ("http://evil.example", f"http://evil.example:{server.port}"):
        with pytest.raises(InvalidStatus, match="403"):
            client(server, origin=origin)
    with pytest.raises(InvalidStatus, match="403"):  # no Origin at all: not the page
        connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10)
    with pytest.raises(InvalidStatus, match="403"):  # a page of the other loopback name
        client(server, origin=f"http://localhost:{server.port}")
    # the page opened as http://localhost:<port> is its own origin too
    local = f"http://localhost:{server.port}"
    with connect(f"ws://localhost:{server.port}/ws", origin=local, open_timeout=10) as ws:
        assert recv(ws, "hello")["type"] == "hello"


def test_many_clients_at_once_are_served_or_refused_cleanly(server):
    opened, refused, errors = [], [], []
    stack = contextlib.ExitStack()  # every socket closed at the end, whatever happened

    def one():
        try:
            ws = stack.enter_context(client(server))
            first = json.loads(ws.recv(timeout=20))
            (opened if first["type"] == "hello" else refused).append((ws, first))
        except Exception as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(opened) == 8 and len(refused) == 42
    assert all("server busy" in m["message"] for _, m in refused)
    for ws, _ in refused:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1013
    # a socket dropped mid-stream, the rest closed: the next good client is served
    ws, _ = opened[0]
    ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
    ws.send(frame(np.zeros(640), 0))
    ws.socket.close()  # no close handshake
    for ws, _ in opened[1:]:
        ws.close()
    deadline = time.monotonic() + 10
    while server.app.state.active["n"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.app.state.active["n"] == 0
    stack.close()
    out = stream_through(server, tone_stream(2))
    assert len(out["windows"]) == 34


def test_a_failing_model_call_ends_that_stream_only(server, monkeypatch):
    def boom(self, pcm, seq):
        raise RuntimeError("model exploded")

    with monkeypatch.context() as m:
        m.setattr(Session, "feed", boom)
        with client(server) as ws:
            recv(ws, "hello")
            ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
            recv(ws, "started")
            ws.send(frame(np.zeros(640), 0))
            assert recv(ws, "error")["message"] == "server: RuntimeError: model exploded"
            with pytest.raises(ConnectionClosed) as closed:
                recv(ws, "never")
            assert closed.value.rcvd.code == 1011
    assert len(stream_through(server, tone_stream(2))["windows"]) == 34


# ------------------------------------------------------------------ the streaming export
@pytest.fixture(scope="module")
def streaming_server(model):
    streaming = load_demo_model(model.path.parent / STREAMING_TFLITE)
    assert isinstance(streaming, StreamingExport)
    srv = DemoServer(streaming, StreamConfig(clip_stride_ms=30), port=0)
    srv.start_thread()
    yield srv
    srv.stop()


def test_a_streaming_export_gives_the_offline_detections_through_the_socket(
    model, streaming_server
):
    words = ["yes", "no", "cat", "no"]
    pcm = word_stream(words, lead_s=0.5)
    out = stream_through(streaming_server, pcm)
    # offline: the clip model over the whole stream, the decoder `kws test-streaming-accuracy`
    # runs, with the server's settings
    stream = streaming_server.cfg.stream
    sent = np.round(np.clip(pcm, -1, 1) * 32767) / 32768  # what the int16 frames carry
    offline = score_stream(model, sent, stream.clip_stride_ms)
    want = recognize_stream(
        offline.scores, offline.times_ms, model.labels, **recognize_settings(stream)
    )
    got = [(d["label"], d["t"]) for d in out["detections"]]
    assert got == [(d.label, d.time_ms) for d in want]
    assert [label for label, _ in got] == heard(words)
    assert [w["t"] for w in out["windows"]] == offline.times_ms.tolist()
    scores = np.array([w["scores"] for w in out["windows"]])
    np.testing.assert_allclose(scores, offline.scores, atol=1e-4)  # JSON rounds to 4 digits
    assert out["spectrogram"] >= 495  # the picture does not depend on the model


def test_the_page_is_told_it_runs_the_streaming_model(model, server, streaming_server):
    for srv, streaming in ((streaming_server, True), (server, False)):
        with client(srv) as ws:
            info = recv(ws, "hello")["model"]
        assert info["streaming"] is streaming
        assert ("streaming model" in info["runs_as"]) is streaming, info
        assert info["path"].endswith(STREAMING_TFLITE) is streaming
    with urllib.request.urlopen(streaming_server.url + "/api/model") as r:
        assert json.loads(r.read())["input"] == "pcm hop + state"


def test_a_streaming_model_with_a_stride_it_cannot_run_is_one_line(model):
    streaming = load_demo_model(model.path.parent / STREAMING_TFLITE)
    with pytest.raises(KwsError, match="stream.clip_stride_ms: 25 ms is not a whole number") as e:
        DemoServer(streaming, StreamConfig(clip_stride_ms=25), port=0)
    assert "\n" not in str(e.value)


def test_a_damaged_streaming_model_is_one_line(model, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(model.path.parent, export)
    graph = export / STREAMING_TFLITE
    graph.write_bytes(graph.read_bytes()[:-16] + bytes(16))
    with pytest.raises(KwsError, match=f"export damaged: {STREAMING_TFLITE}") as e:
        load_demo_model(graph)
    assert "\n" not in str(e.value)
    proc = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "demo", "--graph", str(graph), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"kws demo: error: export damaged: {STREAMING_TFLITE}" in proc.stderr
    # a streaming entry without its file: the plain "no such model" line
    graph.unlink()
    with pytest.raises(KwsError, match="no such model"):
        load_demo_model(graph)


# ------------------------------------------------------------------ the CLI
def test_cli_bad_model_path_is_one_line_before_serving(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "demo", "--graph", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "kws demo: error: --graph" in proc.stderr and "no such model" in proc.stderr
    params = tmp_path / "params.yaml"
    params.write_text(f"export:\n  output_file: {tmp_path / 'none'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "demo", "--params", str(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "no export at" in proc.stderr and "kws freeze" in proc.stderr


def test_origin_rules_by_bind_address(model):
    def allowed(bound: str, origin: str | None, host: str) -> bool:
        return origin_allowed(origin, host, DemoConfig(model, StreamConfig(), bound, 8000))

    assert allowed("127.0.0.1", "http://127.0.0.1:8000", "127.0.0.1:8000")
    assert allowed("127.0.0.1", "http://localhost:8000", "localhost:8000")
    assert not allowed("127.0.0.1", "http://127.0.0.1:8001", "127.0.0.1:8001")  # another port
    assert not allowed("127.0.0.1", "https://127.0.0.1:8000", "127.0.0.1:8000")
    # DNS rebinding: the attacker's name resolving to us, Origin and Host agree
    assert not allowed("127.0.0.1", "http://evil.example:8000", "evil.example:8000")
    assert not allowed("0.0.0.0", "http://evil.example:8000", "evil.example:8000")
    assert allowed("0.0.0.0", "http://192.168.1.5:8000", "192.168.1.5:8000")
    assert not allowed("0.0.0.0", "http://evil.example:8000", "192.168.1.5:8000")
    assert allowed("myhost.lan", "http://myhost.lan:8000", "myhost.lan:8000")
    assert not allowed("127.0.0.1", None, "127.0.0.1:8000")


@pytest.mark.parametrize("graph", ["saved_model", STREAMING_TFLITE])
def test_cli_serves_the_page_and_stops_on_ctrl_c(model, graph):
    path = model.path.parent / graph
    proc = subprocess.Popen(
        [sys.executable, "-m", "kws_core.cli", "demo", "--graph", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("model ") and "low_latency_conv" in lines[0], lines
        assert ("streaming model" in lines[0]) == (graph == STREAMING_TFLITE), lines
        url = lines[1].split()[3]
        assert url.startswith("http://127.0.0.1:"), lines
        with urllib.request.urlopen(url + "/api/model", timeout=10) as r:
            assert json.loads(r.read())["path"] == str(path)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
        assert "kws demo stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_taken_port_is_a_one_line_error(server, model):
    with pytest.raises(KwsError, match=f"--port {server.port}: cannot listen there"):
        DemoServer(model, StreamConfig(clip_stride_ms=30), port=server.port)


def test_the_default_graph_is_the_streaming_model_else_the_saved_model(tmp_path):
    from kws_core.demo.models import default_graph
    from kws_core.features.front_end import FeatureSpec

    with pytest.raises(KwsError, match="no export at .* run `kws freeze`") as e:
        default_graph(tmp_path, 30)
    assert "\n" not in str(e.value)
    (tmp_path / "saved_model").mkdir()
    assert default_graph(tmp_path, 30) == tmp_path / "saved_model"
    (tmp_path / STREAMING_TFLITE).write_bytes(b"")
    spec = FeatureSpec(preprocess="mfcc", window_stride_ms=20)  # 20 ms hops
    meta = {"features": spec.to_dict(), "labels": ["yes"], "input": "pcm"}
    (tmp_path / "export.json").write_text(json.dumps(meta))
    assert default_graph(tmp_path, 40) == tmp_path / STREAMING_TFLITE  # two hops
    # a stride the streaming model cannot run: the SavedModel runs any
    assert default_graph(tmp_path, 30) == tmp_path / "saved_model"
