"""The `kws demo` web server: one page, one WebSocket, a model heard live.

Protocol (all on `/ws`; the page's own origin only):

* server -> page, text JSON: `hello` (model, labels, rate, decoder settings, limits) on connect;
  `results` per audio frame (`seq` of that frame, `windows` [{t, scores}], `detections`
  [{t, label, score}], `spectrogram` columns of 0-255 bands); `started`, `settings`, `stopped`,
  `pong` as answers; `error` {message} for anything refused (one line, also logged).
* page -> server, text JSON control: {"type": "start", "sample_rate": 16000} (resets the stream),
  {"type": "settings", "settings": {detection_threshold, average_window_ms, suppression_ms,
  minimum_count}}, {"type": "stop"}, {"type": "ping", "t": ...}.
* page -> server, binary audio: b"KWS1", a uint32 LE sequence number, then int16 LE mono PCM at
  the model's rate; at most `max_frame_bytes` and no more than `burst_s` ahead of real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import ValidationError

from kws_core.config import SILENCE_LABEL, StreamConfig
from kws_core.demo.models import DemoModel, StreamingExport, live_scorer, model_info
from kws_core.infra.errors import ConfigError, KwsError
from kws_core.streaming.recognize import (
    RecognizeCommands,
    check_decoder_settings,
    recognize_settings,
)

log = logging.getLogger("kws.demo")

MAGIC = b"KWS1"
HEADER = struct.Struct("<4sI")  # magic, sequence number
MAX_FRAME_BYTES = 64 * 1024  # ~2 s of 16 kHz int16: far above the page's 40 ms chunks
MAX_TEXT_BYTES = 4096
BURST_S = 2.0  # audio a client may be ahead of real time (jitter, a busy tab catching up)
MAX_STRIKES = 20  # malformed messages before a connection is closed
WS_MAX_SIZE = 1 << 20  # uvicorn closes on larger messages before the app reads them
DECODER_KEYS = ("detection_threshold", "average_window_ms", "suppression_ms", "minimum_count")
STATIC_FILES = {"index.html", "demo.js", "worklet.js", "demo.css"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# ------------------------------------------------------------------ scoring
def _mel_matrix(bands: int, n_fft: int, rate: int) -> np.ndarray:
    """Triangular mel filters [bands, n_fft // 2 + 1] from 50 Hz to Nyquist."""

    def mel(f):
        return 2595 * np.log10(1 + np.asarray(f) / 700)

    edges = 700 * (10 ** (np.linspace(mel(50), mel(rate / 2), bands + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0, None).astype(np.float32)


class SpectrogramColumns:
    """Log-mel columns (bands of 0-255) of the incoming audio for the page's picture: 25 ms
    frames every 10 ms; only a display, independent of the model's own front end."""

    FLOOR_DB, RANGE_DB = -60.0, 100.0

    def __init__(self, rate: int, bands: int = 48) -> None:
        self.frame, self.hop = round(0.025 * rate), round(0.010 * rate)
        self.n_fft = 1 << (self.frame - 1).bit_length()
        self._window = np.hanning(self.frame).astype(np.float32)
        self._mel = _mel_matrix(bands, self.n_fft, rate)
        self._tail = np.zeros(0, np.float32)

    def push(self, pcm: np.ndarray) -> list[list[int]]:
        x = np.concatenate([self._tail, np.asarray(pcm, np.float32) * 32768])
        n = 0 if len(x) < self.frame else 1 + (len(x) - self.frame) // self.hop
        self._tail = x[n * self.hop :]
        if n == 0:
            return []
        frames = sliding_window_view(x, self.frame)[:: self.hop][:n] * self._window
        power = np.abs(np.fft.rfft(frames, self.n_fft)) ** 2 / self.frame
        db = 10 * np.log10(power @ self._mel.T + 1e-10) - 60  # int16 scale: ~0 dB full scale
        level = np.clip((db - self.FLOOR_DB) / self.RANGE_DB, 0, 1) * 255
        return level.round().astype(int).tolist()


# ------------------------------------------------------------------ one stream
@dataclass
class DemoConfig:
    model: DemoModel
    stream: StreamConfig
    host: str = "127.0.0.1"
    port: int = 8000
    max_clients: int = 8
    max_frame_bytes: int = MAX_FRAME_BYTES
    burst_s: float = BURST_S


def decoder_settings(stream: StreamConfig) -> dict[str, Any]:
    """The live-adjustable RecognizeCommands settings of a `StreamConfig`."""
    return {k: getattr(stream, k) for k in DECODER_KEYS}


def checked_settings(stream: StreamConfig, update: Any, clip_duration_ms: float) -> StreamConfig:
    """`stream` with `update` applied, or a one-line ConfigError naming the key and the fix."""
    if not isinstance(update, dict) or not update:
        raise ConfigError(f"settings must be an object with some of {', '.join(DECODER_KEYS)}")
    unknown = sorted(set(update) - set(DECODER_KEYS))
    if unknown:
        raise ConfigError(
            f"settings: {unknown[0]!r} cannot be changed live; use {', '.join(DECODER_KEYS)}"
        )
    try:
        new = StreamConfig.model_validate(stream.model_dump() | update)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{key}: {err['msg'].lower()} (got {err.get('input')!r})") from None
    check_decoder_settings(new, clip_duration_ms)
    return new


class Session:
    """One connection's stream: scorer, decoder and spectrogram, reset by `start`."""

    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg = cfg
        self.stream = cfg.stream
        self.started = False
        self.rate = cfg.model.spec.sample_rate
        # Its own TFLite interpreters: made once per connection, in the model thread.
        self.scorer = live_scorer(cfg.model, self.stream.clip_stride_ms)
        self.reset()

    def reset(self) -> None:
        model = self.cfg.model
        self.scorer.reset()
        self.samples_seen = 0
        self.decoder = RecognizeCommands(model.labels, **recognize_settings(self.stream))
        self.spectrogram = SpectrogramColumns(model.spec.sample_rate)
        self.rate_t0: float | None = None

    def apply_settings(self, update: Any) -> dict[str, Any]:
        """Validate and apply decoder settings to the running decoder; the settings now."""
        clip_ms = self.cfg.model.spec.clip_duration_ms
        self.stream = checked_settings(self.stream, update, clip_ms)
        for key, value in decoder_settings(self.stream).items():
            setattr(self.decoder, key, value)
        return decoder_settings(self.stream)

    def too_fast(self, n_samples: int) -> str | None:
        """Why this much more audio is refused (far ahead of real time), or None."""
        now = time.monotonic()
        if self.rate_t0 is None:
            self.rate_t0 = now
        ahead = (self.samples_seen + n_samples) / self.rate - (now - self.rate_t0)
        if ahead > self.cfg.burst_s:
            return (
                f"audio arrives faster than real time ({ahead:.1f} s ahead, at most "
                f"{self.cfg.burst_s:g} s allowed); send it paced as it is recorded"
            )
        return None

    def feed(self, pcm: np.ndarray, seq: int) -> dict[str, Any]:
        """Score the new audio (runs in the model thread); the `results` message."""
        windows, detections = [], []
        self.samples_seen += len(pcm)
        for t, scores in self.scorer.push(pcm):
            r = self.decoder.process_latest_result(scores, t)
            windows.append({"t": int(t), "scores": [round(float(s), 4) for s in scores]})
            if r.is_new_command and r.found_command != SILENCE_LABEL:
                detections.append(
                    {"t": int(t), "label": r.found_command, "score": round(float(r.score), 4)}
                )
        return {
            "type": "results",
            "seq": seq,
            "audio_ms": self.samples_seen * 1000 // self.rate,
            "windows": windows,
            "detections": detections,
            "spectrogram": self.spectrogram.push(pcm),
        }


# ------------------------------------------------------------------ the app
class _EndConnection(Exception):
    """Raised to end one connection (after it was told why) without touching the others."""


def host_allowed(host_header: str | None, cfg: DemoConfig) -> bool:
    """Whether a request's Host names this server: a loopback name on a loopback bind, the
    bound host, or an IP literal on a wildcard bind. Refuses DNS rebinding (a name the
    attacker controls, resolved to this machine)."""
    if not host_header:
        return False
    parts = urlsplit(f"http://{host_header}")
    try:
        name, port = parts.hostname or "", parts.port
    except ValueError:  # a malformed port
        return False
    if port != cfg.port:
        return False
    if cfg.host in LOOPBACK:
        return name in LOOPBACK
    if cfg.host in ("0.0.0.0", "::"):
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
            return True
        except OSError:
            return name in LOOPBACK
    return name == cfg.host


def origin_allowed(origin: str | None, host_header: str | None, cfg: DemoConfig) -> bool:
    """Whether a WebSocket comes from the page itself: its Origin is http://<Host> and that
    Host names this server (`host_allowed`), so no other site can drive the stream."""
    if not origin or origin != f"http://{host_header}":
        return False
    return host_allowed(host_header, cfg)


def create_app(cfg: DemoConfig):
    """The starlette app: `/` (the page), `/static/<file>`, `/api/model`, `/ws`."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    # One model thread: TFLite interpreters are not thread-safe, and per-frame work is a few
    # small model calls, so clients queue briefly here instead of blocking the event loop.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kws-demo-model")
    active = {"n": 0}
    static = resources.files("kws_core.demo") / "static"
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

    def security_headers(host: str) -> dict[str, str]:
        return {
            "Content-Security-Policy": f"default-src 'self'; connect-src 'self' ws://{host}; "
            "img-src 'self' data:",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }

    async def page(request) -> Response:
        if not host_allowed(request.headers.get("host"), cfg):
            return Response(f"open http://{cfg.host}:{cfg.port}/ instead", status_code=421)
        name = request.path_params.get("name", "index.html")
        if name not in STATIC_FILES:
            return Response("not found", status_code=404)
        body = (static / name).read_bytes()
        media = types["." + name.rsplit(".", 1)[-1]]
        return Response(body, media_type=media, headers=security_headers(request.url.netloc))

    async def api_model(request) -> Response:
        if not host_allowed(request.headers.get("host"), cfg):
            return Response(f"open http://{cfg.host}:{cfg.port}/ instead", status_code=421)
        return JSONResponse(model_info(cfg.model))

    async def ws_endpoint(ws: WebSocket) -> None:
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.headers.get("host"), cfg):
            log.warning(
                "refused a WebSocket from %s: origin %r is not this page's (http://%s:%d)",
                peer,
                origin,
                cfg.host,
                cfg.port,
            )
            await ws.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        if active["n"] >= cfg.max_clients:
            why = (
                f"server busy: {cfg.max_clients} live streams already (kws demo "
                "--max_clients); try again later"
            )
            log.warning("refused %s: %s", peer, why)
            await ws.accept()
            await ws.send_text(json.dumps({"type": "error", "message": why}))
            await ws.close(code=1013, reason="server busy")
            return
        active["n"] += 1
        try:
            await ws.accept()
            await _serve_connection(ws, peer)
        except (WebSocketDisconnect, _EndConnection):
            pass
        except Exception as e:  # noqa: BLE001 - one client's failure must not stop the others
            why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            log.warning("connection %s ended: %s", peer, why)
            with contextlib.suppress(Exception):  # the socket may be gone already
                await ws.send_text(json.dumps({"type": "error", "message": f"server: {why}"}))
                await ws.close(code=1011, reason="server error")
        finally:
            active["n"] -= 1

    async def _serve_connection(ws, peer: str) -> None:
        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(executor, Session, cfg)
        strikes = 0

        async def refuse(message: str) -> None:
            nonlocal strikes
            strikes += 1
            log.warning("client %s: %s", peer, message)
            await ws.send_text(json.dumps({"type": "error", "message": message}))
            if strikes >= MAX_STRIKES:
                await ws.close(code=1008, reason="too many malformed messages")
                raise _EndConnection

        await ws.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "model": model_info(cfg.model),
                    "clip_stride_ms": session.stream.clip_stride_ms,
                    "settings": decoder_settings(session.stream),
                    "limits": {
                        "max_frame_bytes": cfg.max_frame_bytes,
                        "burst_s": cfg.burst_s,
                        "max_clients": cfg.max_clients,
                    },
                    "frame": "b'KWS1' + uint32 LE sequence + int16 LE mono PCM",
                }
            )
        )
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                reply = await _audio(data, session, refuse, loop)
            elif text is not None:
                reply = await _control(text, session, refuse)
            else:
                continue
            if reply is None:
                continue
            close = reply.pop("close", None)
            await ws.send_text(json.dumps(reply))
            if close:
                await ws.close(code=1008, reason=close)
                return

    async def _audio(data: bytes, session: Session, refuse, loop) -> dict | None:
        n = len(data)
        if n > cfg.max_frame_bytes:
            await refuse(
                f"audio frame of {n} bytes is over the {cfg.max_frame_bytes}-byte limit; "
                "send 20-100 ms chunks"
            )
            return None
        if n < HEADER.size or data[:4] != MAGIC or (n - HEADER.size) % 2 or n == HEADER.size:
            await refuse(
                f"not an audio frame ({n} bytes): expected b'KWS1', a uint32 sequence number "
                "and a whole number of int16 little-endian samples"
            )
            return None
        if not session.started:
            await refuse('send {"type": "start", "sample_rate": ...} before audio')
            return None
        _, seq = HEADER.unpack_from(data)
        samples = (n - HEADER.size) // 2
        why = session.too_fast(samples)
        if why is not None:
            log.warning("closing a stream: %s", why)
            return {"type": "error", "message": why, "close": "audio faster than real time"}
        pcm = np.frombuffer(data, "<i2", offset=HEADER.size).astype(np.float32) / 32768
        return await loop.run_in_executor(executor, session.feed, pcm, seq)

    async def _control(text: str, session: Session, refuse) -> dict | None:
        if len(text) > MAX_TEXT_BYTES:
            await refuse(f"control message of {len(text)} characters; at most {MAX_TEXT_BYTES}")
            return None
        try:
            msg = json.loads(text)
        except ValueError as e:
            await refuse(f'control message is not JSON ({e}); send {{"type": ...}} objects')
            return None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "start":
            rate = msg.get("sample_rate")
            want = cfg.model.spec.sample_rate
            if rate != want:
                await refuse(
                    f"start: sample_rate {rate!r}, but the model takes {want} Hz mono int16; "
                    "resample before sending"
                )
                return None
            session.reset()
            session.started = True
            return {"type": "started", "sample_rate": want}
        if kind == "settings":
            try:
                settings = session.apply_settings(msg.get("settings"))
            except KwsError as e:
                await refuse(str(e))
                return None
            log.info("decoder settings now %s", settings)
            return {"type": "settings", "settings": settings}
        if kind == "stop":
            session.reset()
            session.started = False
            return {"type": "stopped"}
        if kind == "ping":
            return {"type": "pong", "t": msg.get("t")}
        await refuse(f"unknown control message type {kind!r}; use start, settings, stop or ping")
        return None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", page),
            Route("/api/model", api_model),
            WebSocketRoute("/ws", ws_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.active = active
    return app


# ------------------------------------------------------------------ serving
def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line KwsError (port taken, unknown host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections queue from now on: the printed URL works at once
    except (OSError, OverflowError) as e:
        sock.close()
        why = getattr(e, "strerror", None) or str(e)
        raise KwsError(
            f"--host {host} --port {port}: cannot listen there ({why}); choose another --port"
        ) from None
    return sock


class DemoServer:
    """The demo on a socket bound up front: a taken port fails before anything is served, and
    port 0 picks a free one (the page's origin needs the real port)."""

    def __init__(
        self,
        model: DemoModel,
        stream: StreamConfig,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_clients: int = 8,
    ) -> None:
        import uvicorn

        if max_clients < 1:
            raise ConfigError(f"--max_clients {max_clients}: must be at least 1")
        check_decoder_settings(stream, model.spec.clip_duration_ms)
        if isinstance(model, StreamingExport):  # a stride it cannot run: one line, not per client
            model.scorer(stream.clip_stride_ms)
        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.cfg = DemoConfig(model, stream, host, self.port, max_clients)
        self.app = create_app(self.cfg)
        config = uvicorn.Config(
            self.app, ws_max_size=WS_MAX_SIZE, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        self.server.run(sockets=[self.sock])

    def start_thread(self, timeout_s: float = 30.0) -> None:
        """Serve from a background thread (tests); returns once it accepts connections."""
        self._thread = threading.Thread(target=self.run, name="kws-demo", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise KwsError(f"the demo server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.sock.close()
