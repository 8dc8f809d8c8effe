"""Model sizes, single-clip latency and streaming real-time factor of every architecture's exports.

    .venv/bin/python bench/export_latency.py --runs 200 --out bench/results/export_latency.json

For each architecture: build it for the default params (12 labels, mfcc 98x40; weights as
initialised: size and speed do not depend on training), convert it as `kws freeze` does
(SavedModel, TFLite float, TFLite int8 calibrated on noise clips) and time one clip through each
`--runs` times after a warm-up, reporting the median and the 10th-90th percentile spread. TFLite
runs as `kws_core.export.loader.tflite_interpreter` opens it (1 thread; XNNPACK for float models,
TFLite's own int8 kernels for quantized ones),
the SavedModel through its serving signature (TensorFlow eager call, all cores).

Streaming real-time factor (processing s / audio s): `kws_core.streaming.run.score_stream` over
`--stream_s` seconds of noise with a window every 30 ms, through the SavedModel (windows batched,
512 per call) and the float TFLite model (one window per interpreter call, as on a device).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import append_run

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)


def _time(fn, runs: int) -> dict[str, float]:
    for _ in range(max(runs // 10, 5)):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return {"median_ms": round(p50, 3), "p10_ms": round(p10, 3), "p90_ms": round(p90, 3)}


def _tflite_runner(content: bytes, clip: np.ndarray | None):
    from kws_core.export.loader import tflite_interpreter

    interp = tflite_interpreter(model_content=content)
    inp = interp.get_input_details()[0]
    if clip is None:  # features in: any int8 frame will do for timing
        x = np.zeros(inp["shape"], np.dtype(inp["dtype"]))
    else:
        x = clip[None].astype(np.float32)
    if np.dtype(inp["dtype"]) == np.int16:
        x = np.round(x * 32767).astype(np.int16)

    def run() -> None:
        interp.set_tensor(inp["index"], x)
        interp.invoke()

    return run


def _stream_rtf(sm_dir: Path, tflite: bytes, stream_s: float, tmp: Path) -> dict[str, float]:
    import json as _json

    from kws_core.export.loader import ExportedModel
    from kws_core.features.front_end import FeatureSpec
    from kws_core.streaming.run import score_stream

    spec = FeatureSpec()
    meta = {"features": spec.to_dict(), "labels": [str(i) for i in range(12)], "input": "pcm"}
    (tmp / "export.json").write_text(_json.dumps(meta))
    (tmp / "model_float.tflite").write_bytes(tflite)
    rng = np.random.default_rng(1)
    audio = (0.05 * rng.standard_normal(int(stream_s * spec.sample_rate))).astype(np.float32)
    out = {}
    for name, path in (("saved_model", sm_dir), ("tflite_float", tmp / "model_float.tflite")):
        out[name] = round(score_stream(ExportedModel.load(path), audio, 30).real_time_factor, 5)
    return out


def bench_arch(arch: str, runs: int, calib: np.ndarray, stream_s: float) -> dict:
    import tensorflow as tf

    from kws_core.config import load_params
    from kws_core.export.writer import ExportGraphs
    from kws_core.training.models import build_model, model_summary
    from kws_core.training.models.normalization import split

    params = load_params(None, {"model_architecture": arch})
    model, labels, spec = build_model(params)
    norm, body = split(model)
    graphs = ExportGraphs(norm, body, spec, features_outside=False)
    fl, q = graphs.tflite_float(), graphs.tflite_int8(calib)
    # What a microcontroller runs: the full-integer network alone, features in.
    q_net = ExportGraphs(norm, body, spec, features_outside=True).tflite_int8(calib)
    with tempfile.TemporaryDirectory() as tmp:
        sm_dir = Path(tmp) / "saved_model"
        tf.saved_model.save(graphs.module(), str(sm_dir), signatures=graphs.signatures())
        sm_bytes = sum(p.stat().st_size for p in sm_dir.rglob("*") if p.is_file())
        serve = tf.saved_model.load(str(sm_dir)).signatures["serving_default"]
        clip = tf.constant(calib[:1])
        sm = _time(lambda: serve(pcm=clip), runs)
        rtf = _stream_rtf(sm_dir, fl, stream_s, Path(tmp))
    row = {
        "arch": arch,
        "params": model_summary(model)["params"],
        "saved_model_bytes": sm_bytes,
        "tflite_float_bytes": len(fl),
        "tflite_int8_bytes": len(q),
        "saved_model": sm,
        "tflite_float": _time(_tflite_runner(fl, calib[0]), runs),
        "tflite_int8": _time(_tflite_runner(q, calib[0]), runs),
        "tflite_int8_features_in_bytes": len(q_net),
        "tflite_int8_features_in": _time(_tflite_runner(q_net, None), runs),
        "stream_rtf": rtf,
    }
    print(
        f"{arch:<20} sizes MB sm {sm_bytes / 1e6:.2f} float {len(fl) / 1e6:.2f} "
        f"int8 {len(q) / 1e6:.2f} | median ms sm {sm['median_ms']:.2f} "
        f"float {row['tflite_float']['median_ms']:.2f} int8 {row['tflite_int8']['median_ms']:.2f} "
        f"int8 features-in {row['tflite_int8_features_in']['median_ms']:.3f} | stream RTF "
        f"sm {rtf['saved_model']:.4f} tflite {rtf['tflite_float']:.4f}",
        flush=True,
    )
    return row


def main() -> None:
    from kws_core.training.models import model_names

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--archs", default=",".join(model_names()))
    ap.add_argument("--stream_s", type=float, default=120.0)
    ap.add_argument("--out", default="bench/results/export_latency.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    calib = (0.05 * rng.standard_normal((50, 16000))).astype(np.float32)
    rows = [bench_arch(a, args.runs, calib, args.stream_s) for a in args.archs.split(",")]
    append_run(args.out, runs=args.runs, stream_s=args.stream_s, rows=rows)


if __name__ == "__main__":
    main()
