"""How many live streams one `kws demo` server keeps up with, and the latency of its results.

    .venv/bin/python bench/demo_streams.py --graph results/frozen/model/saved_model \
        --clients 1,4,8,16 --seconds 10

For each client count: a demo server on a free 127.0.0.1 port, that many WebSocket clients each
streaming `--seconds` of noise with tone bursts in real-time-paced 40 ms chunks (as the page
does). Latency: from sending a chunk to receiving the results it completed. A count is kept up
with when the 95th percentile latency stays under 300 ms (issue 18's budget for a detection to
reach the page) and no client fell behind. One summary line per count.
"""

from __future__ import annotations

import argparse
import json
import struct
import threading
import time

import numpy as np

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)
from kws_core.config import StreamConfig
from kws_core.demo.models import DemoModel, load_demo_model
from kws_core.demo.server import DemoServer

CHUNK_MS = 40
BUDGET_MS = 300


def signal_for(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.standard_normal(int(seconds * rate))
    t = np.arange(rate // 3) / rate
    for start in range(rate // 2, len(x) - rate // 3, rate):
        x[start : start + len(t)] += 0.3 * np.sin(2 * np.pi * rng.uniform(200, 900) * t)
    return np.clip(x, -1, 1).astype(np.float32)


def one_client(srv: DemoServer, seconds: float, seed: int, out: list) -> None:
    from websockets.sync.client import connect

    rate = srv.cfg.model.spec.sample_rate
    pcm = (signal_for(seconds, rate, seed) * 32767).astype("<i2")
    chunk = rate * CHUNK_MS // 1000
    latencies = []
    with connect(f"ws://127.0.0.1:{srv.port}/ws", origin=srv.url, max_size=None) as ws:
        json.loads(ws.recv(timeout=30))  # hello
        ws.send(json.dumps({"type": "start", "sample_rate": rate}))
        json.loads(ws.recv(timeout=30))  # started
        t0 = time.monotonic()
        for seq, i in enumerate(range(0, len(pcm), chunk)):
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            sent = time.monotonic()
            ws.send(b"KWS1" + struct.pack("<I", seq) + pcm[i : i + chunk].tobytes())
            msg = json.loads(ws.recv(timeout=30))
            if msg.get("windows"):
                latencies.append(1000 * (time.monotonic() - sent))
        # how late the last results came, against the audio's own clock
        behind = max(0.0, time.monotonic() - t0 - len(pcm) / rate)
    out.append((latencies, behind))


def run(model: DemoModel, stride_ms: int, clients: int, seconds: float) -> dict:
    srv = DemoServer(model, StreamConfig(clip_stride_ms=stride_ms), port=0, max_clients=clients)
    srv.start_thread()
    results: list = []
    try:
        threads = [
            threading.Thread(target=one_client, args=(srv, seconds, k, results))
            for k in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        srv.stop()
    lat = np.concatenate([np.asarray(r[0]) for r in results])
    behind = max(r[1] for r in results)
    p50, p95 = np.percentile(lat, [50, 95])
    ok = len(results) == clients and p95 < BUDGET_MS and behind < BUDGET_MS / 1000
    return {"clients": clients, "p50_ms": p50, "p95_ms": p95, "behind_s": behind, "ok": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--graph",
        required=True,
        help="saved_model folder or .tflite file (model_streaming.tflite too)",
    )
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clip_stride_ms", type=int, default=30)
    args = ap.parse_args()
    model = load_demo_model(args.graph)
    for n in (int(c) for c in args.clients.split(",")):
        r = run(model, args.clip_stride_ms, n, args.seconds)
        print(
            f"{n:3d} streams, {args.clip_stride_ms} ms stride: result latency "
            f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, last client "
            f"{r['behind_s']:.2f} s behind -> {'real time' if r['ok'] else 'NOT real time'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
