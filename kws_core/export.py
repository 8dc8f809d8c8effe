"""Export a trained checkpoint to deployable models with the feature front end inside.

The exported models take raw 16-bit PCM (as float in [-1, 1] or int16) and return label scores;
the front end is built from TFLite builtin ops, so no DecodeWav/AudioSpectrogram/Mfcc ops remain.
`export.json` records the feature params so a mismatch at load time is a clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from kws_core.atomic import atomic_dir
from kws_core.config import Params
from kws_core.evaluate import load_model
from kws_core.features import FeatureSpec, compute_features
from kws_core.labels import write_labels

EXPORT_META = "export.json"


@dataclass
class ExportResult:
    out_dir: Path
    saved_model: Path
    tflite_float: Path
    labels: Path
    meta: Path
    checkpoint: Path


class PcmClassifier(tf.Module):
    """Raw PCM [batch, desired_samples] float32 -> softmax scores [batch, labels]."""

    def __init__(self, model, spec: FeatureSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    @tf.function
    def __call__(self, pcm):
        features = compute_features(pcm, self.spec)
        return tf.nn.softmax(self.model(features, training=False))


def export_model(
    params: Params, checkpoint: str = "best", out_dir: Path | None = None
) -> ExportResult:
    """Write SavedModel + TFLite float + labels + export.json into out_dir (atomically)."""
    model, labels, spec, prefix = load_model(params, checkpoint)
    out = out_dir or params.resolve(params.export.output_file)
    classifier = PcmClassifier(model, spec)
    sig = classifier.__call__.get_concrete_function(
        tf.TensorSpec([None, spec.desired_samples], tf.float32, name="pcm")
    )
    with atomic_dir(out) as tmp:
        tf.saved_model.save(
            classifier, str(tmp / "saved_model"), signatures={"serving_default": sig}
        )
        one = tf.function(
            lambda pcm: tf.nn.softmax(model(compute_features(pcm, spec), training=False)),
            input_signature=[tf.TensorSpec([1, spec.desired_samples], tf.float32, name="pcm")],
        )
        converter = tf.lite.TFLiteConverter.from_concrete_functions([one.get_concrete_function()])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        (tmp / "model_float.tflite").write_bytes(converter.convert())
        write_labels(labels, tmp / "labels.txt")
        meta = {
            "features": spec.to_dict(),
            "labels": labels,
            "architecture": params.train.model_architecture,
            "checkpoint": str(prefix),
            "input": "pcm float32 [-1, 1], shape [batch, desired_samples]",
        }
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2))
    return ExportResult(
        out_dir=out,
        saved_model=out / "saved_model",
        tflite_float=out / "model_float.tflite",
        labels=out / "labels.txt",
        meta=out / EXPORT_META,
        checkpoint=prefix,
    )


def tflite_scores(path: Path, pcm: np.ndarray) -> np.ndarray:
    """Run a float TFLite export clip by clip (its batch is fixed at 1)."""
    interp = tf.lite.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for clip in pcm:
        interp.set_tensor(inp["index"], clip[None, :].astype(np.float32))
        interp.invoke()
        out.append(interp.get_tensor(outp["index"])[0])
    return np.stack(out)
