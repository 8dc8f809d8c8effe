"""Per-hop latency of a streaming TFLite export (`kws freeze --streaming`) against running the
clip model on the last window every hop, in one run.

    .venv/bin/python bench/streaming_tflite.py --export results/frozen/model --seconds 30

`--export` is a folder written by `kws freeze --streaming` (an mfcc/logmel/average model).
Noise is pushed one front-end hop at a time through `StreamingTFLite` (float and, if present,
int8); the clip model (`model_float.tflite`) scores the last clip every hop. One line each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)
from kws_core.export.loader import ExportedModel
from kws_core.export.streaming_tflite import StreamingTFLite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, help="export folder with model_streaming.tflite")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    folder = Path(args.export)
    clip = ExportedModel.load(folder / "model_float.tflite")
    spec = clip.spec
    hop, rate, window = spec.window_stride_samples, spec.sample_rate, spec.desired_samples
    pcm = (0.05 * np.random.default_rng(0).standard_normal(int(args.seconds * rate))).astype(
        np.float32
    )
    hop_ms = 1000 * hop / rate
    for name in ("model_streaming.tflite", "model_streaming_int8.tflite"):
        if not (folder / name).exists():
            continue
        loop = StreamingTFLite(folder / name, hop_ms)
        loop.push(pcm[:window])  # warm up: the first full window
        ms = []
        for i in range(window, len(pcm) - hop + 1, hop):
            t0 = time.perf_counter()
            loop.push(pcm[i : i + hop])
            ms.append(1000 * (time.perf_counter() - t0))
        rtf = np.sum(ms) / (len(ms) * hop_ms)
        print(
            f"{name}: per {hop_ms:g} ms hop median {np.median(ms):.3f} ms, "
            f"p95 {np.percentile(ms, 95):.3f} ms, real-time factor {rtf:.4f}"
        )
    ms = []
    for i in range(window, min(len(pcm), window + 200 * hop), hop):
        t0 = time.perf_counter()
        clip.scores(pcm[i - window : i][None])
        ms.append(1000 * (time.perf_counter() - t0))
    print(f"model_float.tflite, the whole clip every hop: median {np.median(ms):.3f} ms a hop")


if __name__ == "__main__":
    main()
