"""Live streaming compute per hop: `StreamingSession` (state kept) vs recomputing each window.

    .venv/bin/python bench/stream_session.py --stream_s 90 --out bench/results/stream_session.json

The default model (params.yaml: its front end, architecture and clip_stride_ms; weights as
initialised, since speed does not depend on them) gets `--stream_s` seconds of noise pushed one
hop of clip_stride_ms at a time, as a microphone would:

* with state: `StreamingSession(model, clip_stride_ms).push(hop)`: only the hop's new
  front-end frames (for the embedding front end: its mel frames and one new embedding), then
  the model on the window's features;
* from scratch: `model.scores(window[None])` on the last clip of samples every hop (the whole
  front end of the window again).

Both in the same run, after a warm-up; the real-time factor is compute time / audio time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import append_run

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)


def _hop_times(push, audio: np.ndarray, hop: int) -> np.ndarray:
    """Seconds each `push(audio[i:i + hop])` takes, hop by hop."""
    out = []
    for i in range(0, len(audio) - hop + 1, hop):
        t0 = time.perf_counter()
        push(audio[i : i + hop])
        out.append(time.perf_counter() - t0)
    return np.array(out)


def main() -> None:
    from kws_core.config import load_params
    from kws_core.export.loader import ExportedModel
    from kws_core.export.writer import export_untrained
    from kws_core.streaming.session import StreamingSession

    ap = argparse.ArgumentParser()
    ap.add_argument("--stream_s", type=float, default=90.0)
    ap.add_argument("--out", default="bench/results/stream_session.json")
    args = ap.parse_args()

    params = load_params(None)
    stride_ms = params.stream.clip_stride_ms
    with tempfile.TemporaryDirectory() as tmp:
        model = ExportedModel.load(export_untrained(Path(tmp), params))
    spec = model.spec
    rate, window = spec.sample_rate, spec.desired_samples
    hop = round(stride_ms * rate / 1000)
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(int(args.stream_s * rate))).astype(np.float32)

    session = StreamingSession(model, stride_ms)
    ring = np.zeros(window, np.float32)  # the last clip of samples, for the from-scratch path

    def scratch(block: np.ndarray) -> None:
        nonlocal ring
        ring = np.concatenate([ring[len(block) :], block])
        model.scores(ring[None])

    warm = audio[: 3 * rate]
    _hop_times(session.push, warm, hop)
    _hop_times(scratch, warm, hop)
    session.reset()
    with_state = _hop_times(session.push, audio, hop)
    from_scratch = _hop_times(scratch, audio, hop)

    hop_s = hop / rate
    row = {
        "model": params.train.model_architecture,
        "front_end": spec.describe(),
        "session_path": session.path,
        "clip_stride_ms": stride_ms,
        "stream_s": args.stream_s,
        "hops": len(with_state),
    }
    for name, t in (("state", with_state), ("scratch", from_scratch)):
        row[f"{name}_rtf"] = round(float(t.sum() / (len(t) * hop_s)), 5)
        # the median hop's: robust to other jobs taking the CPU now and then
        row[f"{name}_rtf_median_hop"] = round(float(np.median(t) / hop_s), 5)
        row[f"{name}_hop_ms_p50"] = round(1000 * float(np.median(t)), 3)
        row[f"{name}_hop_ms_p90"] = round(1000 * float(np.percentile(t, 90)), 3)
    row["speedup"] = round(float(from_scratch.sum() / with_state.sum()), 2)
    append_run(args.out, **row)
    print(
        f"stream_session: {row['model']} ({spec.preprocess}), hop {stride_ms} ms, "
        f"{args.stream_s:g} s: with state RTF {row['state_rtf']:.4f} "
        f"({row['state_hop_ms_p50']:.2f} ms/hop median: RTF {row['state_rtf_median_hop']:.4f}), "
        f"from scratch RTF {row['scratch_rtf']:.4f} ({row['scratch_hop_ms_p50']:.2f} ms/hop), "
        f"speed-up {row['speedup']:.1f}x"
    )


if __name__ == "__main__":
    main()
