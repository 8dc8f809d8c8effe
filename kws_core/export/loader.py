"""Load an export written by `kws freeze` and score PCM clips with it.

`ExportedModel.load` accepts the SavedModel folder or any of the .tflite files, finds the
`export.json` beside it and checks that the model, the metadata and the labels file agree, so a
model from one export with the labels or settings of another is a one-line error, not wrong scores.
`scores(pcm)` takes float PCM clips whatever the model's input is (float or int16 PCM, float or
int8 normalised features) and returns float scores.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws_core.data.labels import read_labels
from kws_core.export.integrity import META_NAME, verify_files
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.errors import KwsError
from kws_core.infra.tf_import import XNNPACK_BANNER, native_stderr_without, quiet_converter

EXPORT_META = META_NAME
FEATURES_SIGNATURE = "features"  # SavedModel signature: un-normalised features in
TFLITE_BATCH = 256  # clips per interpreter call when the model accepts a resized batch


def _find_meta(graph: Path) -> Path:
    places = (graph, graph.parent) if graph.is_dir() else (graph.parent,)
    for folder in places:
        if (folder / EXPORT_META).exists():
            return folder / EXPORT_META
    raise KwsError(f"{graph}: no {EXPORT_META} next to the model; export it with `kws freeze`")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        FeatureSpec.from_dict(meta["features"])
        meta["labels"], meta["input"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError, KwsError) as e:
        raise KwsError(f"{path}: not a kws export description ({e}); re-run `kws freeze`") from None
    return meta


def _relative(path: Path, export_dir: Path) -> str:
    try:
        return path.resolve().relative_to(export_dir.resolve()).as_posix()
    except ValueError:
        return path.name


@dataclass
class ExportedModel:
    path: Path
    meta: dict
    spec: FeatureSpec
    labels: list[str]
    _run: object = None
    _input: dict | None = None
    _from_features: object = None
    _saved: object = None  # the loaded SavedModel: its signatures use its variables
    _features_tflite: bytes | None = None  # features_tflite(), converted once

    @property
    def takes_features(self) -> bool:
        return self.meta["input"] == "features"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's input shape as export.json describes it."""
        if self.takes_features:
            return tuple(self.spec.shape)
        return (self.spec.desired_samples,)

    @classmethod
    def load(cls, graph: str | Path, labels_path: str | Path | None = None) -> ExportedModel:
        graph = Path(graph)
        if not graph.exists():
            raise KwsError(
                f"--graph {graph}: no such model (a saved_model folder or a .tflite file)"
            )
        meta_path = _find_meta(graph)
        meta = _read_meta(meta_path)
        if "inputs" in meta.get("models", {}).get(graph.name, {}):
            raise KwsError(
                f"--graph {graph}: a streaming model (one hop and its state in); give the "
                "export's saved_model or model_float.tflite, or run it with "
                "kws_core.export.streaming_tflite.StreamingTFLite"
            )
        model = cls(graph, meta, FeatureSpec.from_dict(meta["features"]), list(meta["labels"]))
        if labels_path is not None:
            given = read_labels(labels_path)
            if given != model.labels:
                raise KwsError(
                    f"--labels {labels_path} lists {len(given)} labels ({', '.join(given[:4])}"
                    f"{', ...' if len(given) > 4 else ''}) but {graph} was exported with "
                    f"{len(model.labels)} ({', '.join(model.labels[:4])}"
                    f"{', ...' if len(model.labels) > 4 else ''}); use the labels.txt of its export"
                )
        export_dir = meta_path.parent
        if graph.suffix == ".tflite":
            verify_files(export_dir, meta, [_relative(graph, export_dir)])
            model._open_tflite()
        elif (graph / "saved_model.pb").exists() or (
            graph / "saved_model" / "saved_model.pb"
        ).exists():
            folder = graph if (graph / "saved_model.pb").exists() else graph / "saved_model"
            verify_files(export_dir, meta, [_relative(folder, export_dir)])
            model._open_saved_model()
        else:
            raise KwsError(
                f"--graph {graph}: not a model (expected a saved_model folder or a .tflite file)"
            )
        return model

    # ----------------------------------------------------------------- loading
    def _check_io(self, in_shape: list[int], out_labels: int) -> None:
        want = list(self.input_shape)
        if [int(v) for v in in_shape[1:]] != want:
            raise KwsError(
                f"{self.path}: the model takes input {list(in_shape[1:])} but its {EXPORT_META} "
                f"describes {want} ({self.spec.describe()}); the model and {EXPORT_META} come "
                "from different exports, re-run `kws freeze`"
            )
        if out_labels != len(self.labels):
            raise KwsError(
                f"{self.path}: the model scores {out_labels} labels but its {EXPORT_META} lists "
                f"{len(self.labels)}; re-run `kws freeze`"
            )

    def _open_tflite(self) -> None:
        try:
            interp = tflite_interpreter(model_path=str(self.path))
        except (ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise KwsError(f"--graph {self.path}: not a TFLite model ({first})") from None
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        self._check_io(list(inp["shape"]), int(out["shape"][-1]))
        self._run, self._input = interp, inp

    def _open_saved_model(self) -> None:
        import tensorflow as tf

        folder = self.path if (self.path / "saved_model.pb").exists() else self.path / "saved_model"
        try:
            self._saved = tf.saved_model.load(str(folder))
            signatures = self._saved.signatures
            fn = signatures["serving_default"]
        except (OSError, ValueError, KeyError, IndexError, tf.errors.OpError) as e:
            # IndexError: a truncated variables file in an export that predates checksums
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise KwsError(
                f"--graph {self.path}: not a usable SavedModel ({first}); re-run kws freeze"
            ) from None
        spec = list(fn.structured_input_signature[1].values())[0]
        out = list(fn.structured_outputs.values())[0]
        self._check_io(list(spec.shape), int(out.shape[-1]))
        self._run = fn
        if not self.takes_features:  # exports before the features signature lack it
            self._from_features = signatures.get(FEATURES_SIGNATURE)

    # ----------------------------------------------------------------- scoring
    def model_input(self, pcm: np.ndarray) -> np.ndarray:
        """What the model itself takes for float PCM clips [N, samples] (before dtype casts)."""
        if not self.takes_features:
            return pcm.astype(np.float32)
        from kws_core.features.augmented_audio import features_of

        return self._normalize(features_of(pcm.astype(np.float32), self.spec))

    def scores(self, pcm: np.ndarray) -> np.ndarray:
        """Float scores [N, labels] for float PCM clips [N, desired_samples]."""
        pcm = np.asarray(pcm, np.float32)
        if pcm.ndim != 2 or pcm.shape[1] != self.spec.desired_samples:
            raise KwsError(
                f"scores() needs clips of shape [N, {self.spec.desired_samples}], got {pcm.shape}"
            )
        return self._model_scores(self.model_input(pcm))

    def _model_scores(self, x: np.ndarray) -> np.ndarray:
        """The model's own input in, float scores out."""
        if self.path.suffix == ".tflite":
            return self._tflite_scores(x)
        return self._signature_scores(self._run, "features" if self.takes_features else "pcm", x)

    def _signature_scores(self, fn, name: str, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = [
            list(fn(**{name: tf.constant(x[i : i + 1000])}).values())[0].numpy()
            for i in range(0, len(x), 1000)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    @property
    def scores_features(self) -> bool:
        """Whether `scores_from_features` works (features-in models, or a SavedModel that has
        the `features` signature)."""
        return self.takes_features or self._from_features is not None

    def scores_from_features(self, features: np.ndarray) -> np.ndarray:
        """Float scores [N, labels] for un-normalised front-end output [N, frames, bins]."""
        features = np.asarray(features, np.float32)
        if features.shape[1:] != tuple(self.spec.shape):
            raise KwsError(
                f"scores_from_features() needs features of shape [N, {self.spec.shape[0]}, "
                f"{self.spec.shape[1]}], got {features.shape}"
            )
        if self._from_features is not None:
            return self._signature_scores(self._from_features, FEATURES_SIGNATURE, features)
        if not self.takes_features:
            raise KwsError(f"{self.path}: this model takes PCM only; re-run `kws freeze`")
        return self._model_scores(self._normalize(features))

    def features_tflite(self) -> bytes | None:
        """The SavedModel's `features` signature as a float TFLite model (batch 1), for callers
        that score one window at a time: an interpreter call costs a fraction of TensorFlow's
        eager call. None for TFLite exports and SavedModels without the signature."""
        if self._from_features is None or self._saved is None:
            return None
        if self._features_tflite is None:  # once per model: a server opens many sessions
            import tensorflow as tf

            with quiet_converter():
                conv = tf.lite.TFLiteConverter.from_concrete_functions(
                    [self._from_features], trackable_obj=self._saved
                )
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                self._features_tflite = conv.convert()
        return self._features_tflite

    def _normalize(self, features: np.ndarray) -> np.ndarray:
        norm = self.meta["normalization"]
        mean = np.asarray(norm["mean"], np.float32)
        std = np.maximum(np.asarray(norm["std"], np.float32), 1e-12)
        return ((features - mean) / std).astype(np.float32)

    def _tflite_scores(self, x: np.ndarray) -> np.ndarray:
        interp, inp = self._run, self._input
        out_d = interp.get_output_details()[0]
        x = _to_input_dtype(x, inp)
        batch = self._tflite_batch(min(len(x), TFLITE_BATCH))
        results = []
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            if len(chunk) < batch:  # the last, short chunk: pad rather than re-plan
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
            interp.set_tensor(inp["index"], chunk)
            interp.invoke()
            results.append(_from_output(interp.get_tensor(out_d["index"]), out_d))
        if not results:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate(results)[: len(x)]

    def _tflite_batch(self, want: int) -> int:
        """Resize the interpreter's batch to `want` if the graph allows it, else use 1."""
        interp, inp = self._run, self._input
        current = int(interp.get_input_details()[0]["shape"][0])
        if want <= 1 or current == want:
            return max(current, 1) if current == want else 1
        try:
            interp.resize_tensor_input(inp["index"], [want, *inp["shape"][1:]])
            _allocate(interp)
            return want
        except (RuntimeError, ValueError):
            # Graphs with a fixed batch in a Reshape cannot be resized: back to one clip a call.
            interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
            _allocate(interp)
            return 1


def _allocate(interp: Any) -> None:
    """`allocate_tensors` without TFLite's XNNPACK line on stderr (printed when a float model
    first allocates: it would make every one-line error two lines)."""
    with native_stderr_without((XNNPACK_BANNER,)):
        interp.allocate_tensors()


def tflite_interpreter(**source) -> Any:
    """A ready tf.lite.Interpreter for `model_path=` or `model_content=`.

    Quantized models whose network is all int8 run on TFLite's builtin int8 kernels, without
    the default XNNPACK delegate: it made the tutorial's `conv` int8 model 3x slower (the
    exports section of BENCHMARKS.md). Quantized models that keep float convolutions (the
    speech embedding's, in front of an int8 head) keep XNNPACK: without it the default model's
    int8 clip model took 8.3 ms instead of 1.8, its streaming model 2.6 ms a hop instead of 0.56.
    """
    import tensorflow as tf
    from tensorflow.lite.python.interpreter import OpResolverType

    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": not for users
        warnings.simplefilter("ignore", UserWarning)
        interp = tf.lite.Interpreter(**source)
        tensors = interp.get_tensor_details()
        if any(np.dtype(t["dtype"]) == np.int8 for t in tensors) and not _float_convolutions(
            interp, tensors
        ):
            interp = tf.lite.Interpreter(
                **source,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
    _allocate(interp)
    return interp


def _float_convolutions(interp, tensors: list[dict]) -> bool:
    """Whether the graph has a float32 CONV_2D (before any delegate takes ops over)."""
    dtype = {t["index"]: np.dtype(t["dtype"]) for t in tensors}
    return any(
        op["op_name"] == "CONV_2D" and dtype.get(op["inputs"][0]) == np.float32
        for op in interp._get_ops_details()
    )


def _to_input_dtype(x: np.ndarray, d: dict) -> np.ndarray:
    dtype = np.dtype(d["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    if dtype == np.int16:  # raw PCM samples
        return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    scale, zero = d["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _from_output(y: np.ndarray, d: dict) -> np.ndarray:
    if np.dtype(d["dtype"]) == np.float32:
        return y.astype(np.float32)
    scale, zero = d["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
