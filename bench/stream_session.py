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

Both in the same run, after a warm-up; the real-time factor is compute time / audio time (the
mean hop's: `*_rtf`; the median hop's: `*_rtf_median_hop`), with hop times at p50/p90/p95.
`state_blocks_share` is the share of embeddings the session computed from the hop's new mel
frames (the rest, windows spanning over 80 dB, ran whole). `--wav` pushes a recording (e.g. a
`kws generate-streaming-test-wav` stream) instead of the noise.
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
    ap.add_argument("--wav", default="", help="push this recording (mono) instead of noise")
    args = ap.parse_args()

    params = load_params(None)
    stride_ms = params.stream.clip_stride_ms
    with tempfile.TemporaryDirectory() as tmp:
        model = ExportedModel.load(export_untrained(Path(tmp), params))
    spec = model.spec
    rate, window = spec.sample_rate, spec.desired_samples
    hop = round(stride_ms * rate / 1000)
    if args.wav:
        from kws_core.features.spectrogram import load_any_wav

        audio = load_any_wav(Path(args.wav), rate).samples[: int(args.stream_s * rate)]
    else:
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
        "stream_s": round(len(audio) / rate, 2),
        "audio": args.wav or "noise",
        "hops": len(with_state),
    }
    for name, t in (("state", with_state), ("scratch", from_scratch)):
        row[f"{name}_rtf"] = round(float(t.sum() / (len(t) * hop_s)), 5)
        # the median hop's: robust to other jobs taking the CPU now and then
        row[f"{name}_rtf_median_hop"] = round(float(np.median(t) / hop_s), 5)
        row[f"{name}_hop_ms_p50"] = round(1000 * float(np.median(t)), 3)
        row[f"{name}_hop_ms_mean"] = round(1000 * float(t.mean()), 3)
        row[f"{name}_hop_ms_p90"] = round(1000 * float(np.percentile(t, 90)), 3)
        row[f"{name}_hop_ms_p95"] = round(1000 * float(np.percentile(t, 95)), 3)
        row[f"{name}_hop_ms_max"] = round(1000 * float(t.max()), 3)
    row["speedup"] = round(float(from_scratch.sum() / with_state.sum()), 2)
    made = session.state.incremental + session.state.whole
    row["state_blocks_share"] = round(session.state.incremental / made, 4) if made else None
    append_run(args.out, **row)
    print(
        f"stream_session: {row['model']} ({spec.preprocess}), hop {stride_ms} ms, "
        f"{row['stream_s']:g} s of {row['audio']}: with state RTF {row['state_rtf']:.4f} mean, "
        f"{row['state_rtf_median_hop']:.4f} median (hop ms mean {row['state_hop_ms_mean']:.3f}, "
        f"p50 {row['state_hop_ms_p50']:.3f}, p95 {row['state_hop_ms_p95']:.3f}; "
        f"{row['state_blocks_share']} of embeddings from blocks), from scratch RTF "
        f"{row['scratch_rtf']:.4f} ({row['scratch_hop_ms_p50']:.2f} ms/hop median), "
        f"speed-up {row['speedup']:.1f}x"
    )


if __name__ == "__main__":
    main()
