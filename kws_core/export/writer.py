"""Export a trained checkpoint to deployable models (`kws freeze`).

One export folder holds:

* `saved_model/`: serving signature `serving_default` (float PCM in [-1, 1]) and `pcm_int16`
  (raw 16-bit samples), both returning softmax scores, and `features` (the front end's output,
  un-normalised), with which a stream computes its features once instead of per window;
* `model_float.tflite`: the same graph, TFLite builtin ops only (no DecodeWav / AudioSpectrogram /
  Mfcc), float PCM [1, samples] in;
* `model_int8.tflite` (export.quantize): int16 PCM in, float scores out; the front end and the
  per-bin feature normalisation run in float (RFFT and LOG have no int8 kernels, and one int8
  scale cannot hold raw log-energies), every layer of the network runs in int8, calibrated on
  augmented clips of the training partition;
* `model_streaming.tflite` (export.streaming): one front-end hop of float PCM and the state
  in, scores and the new state out (`kws_core.export.streaming_tflite`); with export.quantize
  also `model_streaming_int8.tflite`, the network in int8, float in and out;
* `labels.txt` and `export.json` (feature params, normalisation, labels, every model's input and
  output), which the loaders check so that a mismatch is a clear error, not wrong scores.

With `features_outside` the models take normalised features `(features - mean) / std` of shape
[1, frames, bins] instead of PCM, for microcontrollers that run their own front end (the TFLite
Micro frontend for `preprocess: micro`); the int8 model is then full-integer: int8 in, int8 out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from kws_core.config import Params
from kws_core.data.labels import write_labels
from kws_core.export.integrity import file_digests
from kws_core.export.loader import EXPORT_META, FEATURES_SIGNATURE
from kws_core.export.streaming_tflite import (
    STREAMING_INT8_TFLITE,
    STREAMING_TFLITE,
    check_streaming,
    streaming_io,
    streaming_tflite,
    streaming_tflite_int8,
    unstreamable,
)
from kws_core.features.front_end import FeatureSpec, compute_features
from kws_core.infra.atomic import atomic_dir
from kws_core.infra.errors import ConfigError
from kws_core.infra.tf_import import quiet_converter as _quiet_converter
from kws_core.training.evaluate import load_model
from kws_core.training.models.normalization import split

META_FORMAT = 2
FLOAT_TFLITE = "model_float.tflite"
INT8_TFLITE = "model_int8.tflite"
# Ops under this name scope stay float in the int8 model (see the module docstring).
FRONT_END_SCOPE = "kws_front_end"


@dataclass
class ExportResult:
    out_dir: Path
    saved_model: Path
    tflite_float: Path
    tflite_int8: Path | None
    labels: Path
    meta: Path
    checkpoint: Path
    tflite_streaming: Path | None = None
    tflite_streaming_int8: Path | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not written, and why
    # kws_core.export.registry.RegisteredExport once `freeze_step` logged it to MLflow
    registered: object | None = None


def export_model(
    params: Params,
    checkpoint: str = "best",
    out_dir: Path | None = None,
    manifest: pd.DataFrame | None = None,
    progress: bool = False,
) -> ExportResult:
    """Write the export folder (see the module docstring) atomically; returns where it is."""
    ex = params.export
    out = Path(out_dir) if out_dir else params.resolve(ex.output_file)
    check_export_target(out, params)
    model, labels, spec, prefix = load_model(params, checkpoint)
    _check_front_end(spec, params)
    notes = []
    streaming_on = ex.streaming and not unstreamable(spec)
    if ex.streaming and not streaming_on:
        notes.append(f"{STREAMING_TFLITE} not written: {unstreamable(spec)} (export.streaming)")
    norm, body = split(model)
    calibration = (
        _calibration_audio(params, labels, spec, manifest, progress) if ex.quantize else None
    )
    graphs = ExportGraphs(norm, body, spec, ex.features_outside)
    with atomic_dir(out) as tmp, _quiet_converter():
        tf.saved_model.save(
            graphs.module(), str(tmp / "saved_model"), signatures=graphs.signatures()
        )
        (tmp / FLOAT_TFLITE).write_bytes(graphs.tflite_float())
        if calibration is not None:
            (tmp / INT8_TFLITE).write_bytes(graphs.tflite_int8(calibration))
        if streaming_on:
            streaming = streaming_tflite(norm, body, spec, FRONT_END_SCOPE)
            check_streaming(streaming, graphs, spec, labels)
            (tmp / STREAMING_TFLITE).write_bytes(streaming)
            if calibration is not None:
                (tmp / STREAMING_INT8_TFLITE).write_bytes(
                    streaming_tflite_int8(norm, body, spec, calibration, FRONT_END_SCOPE)
                )
        write_labels(labels, tmp / "labels.txt")
        meta = {
            "format": META_FORMAT,
            "architecture": params.train.model_architecture,
            "checkpoint": str(prefix),
            "labels": labels,
            "features": spec.to_dict(),
            "input": "features" if ex.features_outside else "pcm",
            "normalization": {
                "mean": [float(v) for v in norm.mean.numpy()],
                "std": [float(1.0 / v) for v in norm.inv_std.numpy()],
            },
            "representative_examples": ex.representative_examples if ex.quantize else 0,
            "models": {
                name: _io_of(tmp / name)
                for name in (FLOAT_TFLITE, INT8_TFLITE)
                if (tmp / name).exists()
            },
        }
        for name in (STREAMING_TFLITE, STREAMING_INT8_TFLITE):
            if (tmp / name).exists():
                meta["models"][name] = streaming_io(tmp / name)
        meta["files"] = file_digests(tmp)  # checked by every reader before opening a model
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2))
    sizes = {
        p.name: _size(p)
        for p in (
            out / "saved_model",
            out / FLOAT_TFLITE,
            out / INT8_TFLITE,
            out / STREAMING_TFLITE,
            out / STREAMING_INT8_TFLITE,
        )
        if p.exists()
    }
    return ExportResult(
        out_dir=out,
        saved_model=out / "saved_model",
        tflite_float=out / FLOAT_TFLITE,
        tflite_int8=out / INT8_TFLITE if ex.quantize else None,
        tflite_streaming=out / STREAMING_TFLITE if streaming_on else None,
        tflite_streaming_int8=out / STREAMING_INT8_TFLITE if streaming_on and ex.quantize else None,
        labels=out / "labels.txt",
        meta=out / EXPORT_META,
        checkpoint=prefix,
        sizes=sizes,
        notes=notes,
    )


def check_export_target(out: Path, params: Params) -> None:
    """A one-line ConfigError unless `out` is new, empty or an earlier export (it has
    export.json) and holds none of the pipeline's inputs: an export replaces its folder whole;
    or if the export settings ask for what the front end cannot do."""
    _check_front_end(FeatureSpec.from_params(params), params)
    key, out = "export.output_file", Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{key}: {out} is a file, not an export folder; choose a new folder")
    inputs = {
        "data.data_dir": params.data.data_dir,
        "data.manifest_dir": params.data.manifest_dir,
        "features.cache_dir": params.features.cache_dir,
        "train.train_dir": params.train.train_dir,
    }
    for name, value in inputs.items():
        path = params.resolve(value).resolve()
        if path == out or path.is_relative_to(out):
            raise ConfigError(
                f"{key}: {out} holds {name} ({path}) and an export replaces its folder as a "
                "whole; choose a folder of its own, e.g. results/frozen/model"
            )
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_META).is_file():
        raise ConfigError(
            f"{key}: {out} exists and is not a kws export (no {EXPORT_META}); an export "
            "replaces its folder as a whole, so choose a new folder or move this one away"
        )


def _check_front_end(spec: FeatureSpec, params: Params) -> None:
    """One-line ConfigError when the export settings ask for what `spec` cannot give (a
    streaming model it cannot have is skipped with a note instead: `export.streaming` is on by
    default)."""
    if spec.preprocess == "micro" and not params.export.features_outside:
        raise ConfigError(
            "features.preprocess: micro uses the TFLite Micro frontend op, which TFLite builtins "
            "cannot run; export with --features_outside=true (the device runs the frontend)"
        )


class ExportGraphs:
    """The export's TensorFlow functions, PCM-in or features-in."""

    def __init__(self, norm, body, spec: FeatureSpec, features_outside: bool) -> None:
        self.norm, self.body, self.spec = norm, body, spec
        self.features_outside = features_outside

    def scores_from_pcm(self, pcm):
        with tf.name_scope(FRONT_END_SCOPE):
            if pcm.dtype == tf.int16:
                pcm = tf.cast(pcm, tf.float32) / 32768.0
            y = self.norm(compute_features(pcm, self.spec))
        return tf.nn.softmax(self.body(y, training=False))

    def scores_from_features(self, features):
        return tf.nn.softmax(self.body(features, training=False))

    def scores_from_raw_features(self, features):
        """Un-normalised front-end output in: lets a stream compute its features once."""
        return tf.nn.softmax(self.body(self.norm(features), training=False))

    def input_spec(self, batch: int | None, dtype=tf.float32) -> tf.TensorSpec:
        if self.features_outside:
            return tf.TensorSpec([batch, *self.spec.shape], dtype, name="features")
        return tf.TensorSpec([batch, self.spec.desired_samples], dtype, name="pcm")

    def function(self, batch: int | None, dtype=tf.float32):
        fn = self.scores_from_features if self.features_outside else self.scores_from_pcm
        return tf.function(fn, input_signature=[self.input_spec(batch, dtype)])

    def module(self) -> tf.Module:
        module = tf.Module()
        module.norm, module.body = self.norm, self.body  # tracked, so the weights are saved
        if self.spec.preprocess == "embedding":
            from kws_core.features.speech_embedding import tracked_models

            # the frozen speech-embedding weights (a fine-tuned top is part of the body)
            module.front_end = tracked_models(self.spec.embedding_finetune_layers)
        return module

    def signatures(self) -> dict:
        sigs = {"serving_default": self.function(None).get_concrete_function()}
        if not self.features_outside:
            sigs["pcm_int16"] = self.function(None, tf.int16).get_concrete_function()
            raw = tf.TensorSpec([None, *self.spec.shape], tf.float32, name="features")
            sigs[FEATURES_SIGNATURE] = tf.function(
                self.scores_from_raw_features, input_signature=[raw]
            ).get_concrete_function()
        return sigs

    def _converter(self, dtype=tf.float32) -> tf.lite.TFLiteConverter:
        # A concrete function with batch 1: what devices run, and what every converter supports.
        fn = self.function(1, dtype)
        # Without trackable_obj the converter freezes the variables into constants (with it,
        # they stay resource variables and calibration fails); it logs a deprecation warning.
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return conv

    def tflite_float(self) -> bytes:
        return self._converter().convert()

    def tflite_int8(self, audio: np.ndarray) -> bytes:
        if self.features_outside:
            conv = self._converter()
            feats = self.norm(compute_features(tf.constant(audio), self.spec)).numpy()
            conv.representative_dataset = lambda: ([f[None]] for f in feats)
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            return conv.convert()
        pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
        conv = self._converter(tf.int16)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[None]] for c in pcm)
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        front_end = [
            t["name"]
            for t in tf.lite.Interpreter(
                model_content=self._converter(tf.int16).convert()
            ).get_tensor_details()
            if FRONT_END_SCOPE in t["name"]
        ]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv,
            debug_dataset=conv.representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=front_end),
        )
        return debugger.get_nondebug_quantized_model()


def _calibration_audio(params, labels, spec, manifest, progress) -> np.ndarray:
    from kws_core.data.manifest import load_manifest, manifest_path
    from kws_core.features.augmented_audio import AudioProcessor

    if manifest is None:
        manifest = load_manifest(manifest_path(params))
    proc = AudioProcessor.from_params(
        params, manifest, params.layout.data_dir, labels, spec, progress=progress
    )
    return proc.augmented_audio(params.export.representative_examples)


def _io_of(path: Path) -> dict:
    """Input/output dtype, shape and quantisation of a TFLite model, for export.json."""
    interp = tf.lite.Interpreter(model_path=str(path))

    def desc(d: dict) -> dict:
        scale, zero = d["quantization"]
        out = {"dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape"]]}
        if scale:
            out["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        return out

    return {
        "input": desc(interp.get_input_details()[0]),
        "output": desc(interp.get_output_details()[0]),
        "bytes": path.stat().st_size,
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_untrained(folder: Path, params: Params | None = None) -> Path:
    """The architecture of `params` (default: params.yaml defaults) with its initial weights,
    saved as `kws freeze` saves its SavedModel (with the `features` signature) plus
    export.json: for speed and memory measurements that need no trained model."""
    from kws_core.config import load_params
    from kws_core.training.models import build_model

    model, labels, spec = build_model(params or load_params(None))
    norm, body = split(model)
    graphs = ExportGraphs(norm, body, spec, features_outside=False)
    folder = Path(folder)
    tf.saved_model.save(graphs.module(), str(folder / "saved_model"), graphs.signatures())
    meta = {"features": spec.to_dict(), "labels": labels, "input": "pcm"}
    (folder / EXPORT_META).write_text(json.dumps(meta))
    return folder / "saved_model"
