"""Score every file of a `kws freeze` export on a labelled folder of real clips.

    .venv/bin/python bench/real_exports.py \
        --real_dir ../shared/realdata/speech_commands_test_v0.02_dev

SavedModel, float TFLite and int8 TFLite on the same clips: accuracy, the share of clips where
the int8 model's top label differs from the float one, and the time each took. The issue's rule
is that int8 must hold accuracy within 1 point of float. With `kws freeze --streaming` the
streaming models too: each clip pushed hop by hop through `StreamingTFLite` from zero state,
scored by the window that is the clip (the same rule for their int8 model).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from results_log import append_run

from kws_core.config import load_params
from kws_core.data.labels import labelled_clips
from kws_core.export.loader import ExportedModel
from kws_core.export.streaming_tflite import StreamingTFLite
from kws_core.features.augmented_audio import fit_length
from kws_core.infra.wav import read_wav

FILES = ("saved_model", "model_float.tflite", "model_int8.tflite")
STREAMING = ("model_streaming.tflite", "model_streaming_int8.tflite")


def streaming_scores(path: Path, hop_ms: float, pcm: np.ndarray) -> np.ndarray:
    """Each clip streamed from zero state, one result a hop; the scores of its whole window."""
    loop = StreamingTFLite(path, hop_ms)
    out = []
    for clip in pcm:
        loop.reset()
        out.append(loop.push(clip)[0][1])  # the first window is the clip
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--export_dir", default="")
    ap.add_argument("--real_dir", required=True)
    ap.add_argument("--out", default="bench/results/real_exports.json")
    args = ap.parse_args()
    params = load_params(args.params)
    folder = Path(args.export_dir) if args.export_dir else params.resolve(params.export.output_file)
    labels = (folder / "labels.txt").read_text().split()
    clips = labelled_clips(Path(args.real_dir), labels)
    n = params.data.sample_rate * params.data.clip_duration_ms // 1000
    pcm = np.stack([fit_length(read_wav(p, params.data.sample_rate), n) for p, _ in clips])
    truth = np.array([labels.index(label) for _, label in clips])
    row: dict = {"export_dir": str(folder), "real_dir": args.real_dir, "n": len(clips)}
    predictions = {}
    for name in FILES:
        if not (folder / name).exists():
            continue
        model = ExportedModel.load(folder / name, folder / "labels.txt")
        t0 = time.perf_counter()
        predictions[name] = model.scores(pcm).argmax(1)
        row[name] = {
            "accuracy": round(float(np.mean(predictions[name] == truth)), 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    hop_ms = ExportedModel.load(folder / "model_float.tflite").spec.frame_ms
    for name in STREAMING:
        if not (folder / name).exists():
            continue
        t0 = time.perf_counter()
        predictions[name] = streaming_scores(folder / name, hop_ms, pcm).argmax(1)
        row[name] = {
            "accuracy": round(float(np.mean(predictions[name] == truth)), 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    for int8, flt, key in (
        ("model_int8.tflite", "model_float.tflite", "int8_disagrees"),
        (*STREAMING[::-1], "streaming_int8_disagrees"),
    ):
        if int8 in predictions and flt in predictions:
            row[key] = round(float(np.mean(predictions[int8] != predictions[flt])), 4)
    append_run(args.out, **row)
    print(
        "summary: "
        + ", ".join(f"{k} {100 * row[k]['accuracy']:.2f}%" for k in FILES + STREAMING if k in row)
        + "".join(
            f", {key} {100 * row[key]:.1f}%"
            for key in ("int8_disagrees", "streaming_int8_disagrees")
            if key in row
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
