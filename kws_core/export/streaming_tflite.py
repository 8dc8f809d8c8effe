"""A TFLite model that runs one front-end hop at a time, its state in external tensors.

`kws freeze --streaming` writes `model_streaming.tflite` beside the clip models. Unlike them it
never sees a whole clip: each invoke takes one hop of PCM and the state the previous invoke
returned (as in google-research's kws_streaming "external state" models), so a device keeps no
audio history itself and a server can hold many streams in one interpreter by swapping state.

Signature `serving_default` (all float32, batch 1; W = window_size_samples,
h = window_stride_samples, L = spectrogram_length, B = fingerprint_width):

* inputs:  `pcm` [1, h] the next hop of samples in [-1, 1]; `pcm_tail` [1, W - h] the samples
  before it that the next frame still needs; `frames` [1, L, B] the last L feature frames,
  *normalised* (what the network reads; zeros = the training mean);
* outputs: `scores` [1, labels] softmax over the window of the last L frames; `new_pcm_tail`
  and `new_frames`, to feed back as `pcm_tail` and `frames` at the next invoke.

Each invoke computes one frame from tail + hop with the very front-end code of the clip models
(`compute_features` on a one-frame "clip"), normalises it, shifts the frame buffer by one and
runs the network on it. Start a stream with zero state.

The `embedding` front end (the default architecture) has one more state tensor: a frame is an
embedding of 76 mel frames (12,512 samples) every `embedding_hop_ms` (h = 1,280 samples at
80 ms = 8 mel frames). `pcm_tail` is then [1, 352] (what a 512-tap mel frame needs beyond its
160-sample hop), `mel` [1, 76 - 8, 32] holds the dB mel frames the next embedding reuses, and
each invoke computes only the hop's 8 new mel frames (the pre-trained mel graph) and one
embedding (up to the fine-tuned top convolutions, which are part of the network); the output
`new_mel` is fed back like the others. `StreamingTFLite` is the reference loop:
it aligns hops to the clip models' frames and emits scores every `clip_stride_ms` with the
window times of `score_stream`.

With export.quantize, `model_streaming_int8.tflite` has the same tensors (float32 in and out,
so the state stays float) with the network in int8. The front end, the normalisation and the
PCM tail stay float (slices and concatenations are kept out of int8: a tail rounded to int8 at
every invoke cost 5x the clip int8 model's error); the frame buffer is held at the network's
input scale (rounded once: rounding again to the same scale changes nothing).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from kws_core.export.integrity import verify_files
from kws_core.export.loader import EXPORT_META, _find_meta, _read_meta, tflite_interpreter
from kws_core.features.front_end import FeatureSpec, compute_features
from kws_core.infra.errors import ConfigError, KwsError

STREAMING_TFLITE = "model_streaming.tflite"
STREAMING_INT8_TFLITE = "model_streaming_int8.tflite"
STREAMING_FRONT_ENDS = ("mfcc", "logmel", "average", "embedding")
# Export-time check: streaming vs clip-model scores on a synthetic stream. Measured differences
# are ~1e-6 (1.1e-6 mfcc, 6.6e-7 the default embedding model; tests/test_streaming_export.py);
# 100x that catches a wrong graph.
CHECK_TOLERANCE = 1e-4


def unstreamable(spec: FeatureSpec) -> str | None:
    """Why `spec`'s front end cannot run one hop at a time here, or None when it can."""
    if spec.preprocess not in STREAMING_FRONT_ENDS:
        return (
            f"the {spec.preprocess} front end has no streaming model yet (only "
            f"{', '.join(STREAMING_FRONT_ENDS)})"
        )
    if spec.preprocess == "embedding":
        from kws_core.features import speech_embedding as se

        if spec.window_stride_samples // se.MEL_HOP >= se.WINDOW_FRAMES:
            return (
                "it needs features.embedding_hop_ms shorter than the embedding's "
                f"{se.WINDOW_FRAMES * se.MEL_HOP * 1000 // se.SAMPLE_RATE} ms of mel frames "
                f"(got {spec.embedding_hop_ms})"
            )
        return None
    if spec.window_size_samples <= spec.window_stride_samples:
        return (
            "it needs features.window_size_ms longer than features.window_stride_ms (got "
            f"{spec.window_size_ms} and {spec.window_stride_ms})"
        )
    return None


def check_streamable(spec: FeatureSpec) -> None:
    """One-line ConfigError unless `spec`'s front end can run one hop at a time here."""
    reason = unstreamable(spec)
    if reason:
        raise ConfigError(f"export.streaming: {reason}")


def state_shapes(spec: FeatureSpec) -> dict[str, list[int]]:
    """The state inputs in signature order, name -> shape (each output `new_<name>`)."""
    check_streamable(spec)
    if spec.preprocess == "embedding":
        from kws_core.features import speech_embedding as se

        hop_frames = spec.window_stride_samples // se.MEL_HOP
        return {
            "pcm_tail": [1, se.MEL_WINDOW - se.MEL_HOP],
            "mel": [1, se.WINDOW_FRAMES - hop_frames, se.MEL_BINS],
            "frames": [1, *spec.shape],
        }
    return {
        "pcm_tail": [1, spec.window_size_samples - spec.window_stride_samples],
        "frames": [1, *spec.shape],
    }


def io_names(spec: FeatureSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of `spec`'s streaming model."""
    states = tuple(state_shapes(spec))
    return ("pcm", *states), ("scores", *(f"new_{s}" for s in states))


def one_frame_spec(spec: FeatureSpec) -> FeatureSpec:
    """`spec` with a clip exactly one window long: its features are that window's one frame,
    computed by the same code (and constant matrices) as a frame of a whole clip."""
    one = dataclasses.replace(spec, clip_duration_ms=spec.window_size_ms)
    if one.desired_samples != spec.window_size_samples or one.spectrogram_length != 1:
        raise KwsError(f"one-frame spec: {one.describe()} is not one frame")  # not expected
    return one


def streaming_function(norm, body, spec: FeatureSpec, scope: str = "front_end") -> Any:
    """The tf.function of one invoke (see the module docstring); the front end and the
    normalisation under name scope `scope` (the int8 model keeps them float)."""
    import tensorflow as tf

    shapes, hop = state_shapes(spec), spec.window_stride_samples
    sig = [tf.TensorSpec([1, hop], tf.float32, name="pcm")]
    sig += [tf.TensorSpec(shape, tf.float32, name=name) for name, shape in shapes.items()]

    def scored(frames, frame, new: dict) -> dict:
        frames = tf.concat([frames[:, 1:], frame], axis=1)
        scores = tf.nn.softmax(body(frames, training=False))
        return {"scores": scores, **new, "new_frames": frames}

    if spec.preprocess == "embedding":
        from kws_core.features import speech_embedding as se

        hop_frames = hop // se.MEL_HOP

        @tf.function(input_signature=sig)
        def embedding_step(pcm, pcm_tail, mel, frames):
            with tf.name_scope(scope):
                window = tf.concat([pcm_tail, pcm], axis=1)  # the samples of hop_frames mel frames
                mels = tf.concat([mel, se.mel_model()(window * se.PCM_SCALE)], axis=1)
                frame = norm(se.embed_windows(mels, spec.embedding_finetune_layers)[:, None])
            new = {"new_pcm_tail": window[:, hop:], "new_mel": mels[:, hop_frames:]}
            return scored(frames, frame, new)

        return embedding_step

    one = one_frame_spec(spec)

    @tf.function(input_signature=sig)
    def step(pcm, pcm_tail, frames):
        with tf.name_scope(scope):
            window = tf.concat([pcm_tail, pcm], axis=1)
            frame = norm(compute_features(window, one))  # [1, 1, bins]
        return scored(frames, frame, {"new_pcm_tail": window[:, hop:]})

    return step


def _named_converter(fn) -> Any:
    """A converter for concrete function `fn` with its weights frozen into constants (no
    VAR_HANDLE / READ_VARIABLE ops for devices) and a `serving_default` signature that names
    its tensors: freezing flattens the outputs, so they are re-wrapped in a dict, and the
    converter writes a signature only when given a trackable object."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(fn)
    names = sorted(fn.structured_outputs)  # tf.nest flattens a dict in sorted key order
    # (the signature's input names are the TensorSpecs' names)
    named = tf.function(
        lambda *state: dict(zip(names, frozen(*state), strict=True)),
        input_signature=fn.structured_input_signature[0],
    )
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [named.get_concrete_function()], trackable_obj=tf.Module()
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv


def streaming_tflite(norm, body, spec: FeatureSpec, scope: str = "front_end") -> bytes:
    """The float streaming model, TFLite builtin ops only."""
    fn = streaming_function(norm, body, spec, scope).get_concrete_function()
    return _named_converter(fn).convert()


def streaming_tflite_int8(
    norm, body, spec: FeatureSpec, audio: np.ndarray, scope: str = "front_end"
) -> bytes:
    """The streaming model with the network in int8, float in and out (the state stays
    float); the front end and normalisation (ops under `scope`) stay float, as in the int8
    clip model. Calibrated on the inputs of the invoke that completes each clip of `audio`
    (`_last_hop_states`)."""
    import tensorflow as tf

    fn = streaming_function(norm, body, spec, scope).get_concrete_function()
    states = _last_hop_states(norm, spec, audio)

    def samples():
        for i in range(len(audio)):
            yield {name: value[i : i + 1] for name, value in states.items()}

    conv = _named_converter(fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = samples
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    front_end = [
        t["name"]
        for t in tflite_interpreter(
            model_content=_named_converter(fn).convert()
        ).get_tensor_details()
        if scope in t["name"]
    ]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv,
        debug_dataset=samples,
        # The state's slices and concatenations stay float by op type too: the converter
        # names some of them after the outputs, outside `scope`, and an int8 PCM tail or
        # frame buffer would be requantised at every invoke.
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=front_end, denylisted_ops=["CONCATENATION", "STRIDED_SLICE"]
        ),
    )
    return debugger.get_nondebug_quantized_model()


def _last_hop_states(norm, spec: FeatureSpec, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs of the invoke that completes each clip's last frame (`[clips, ...]` per
    input name): calibration data that covers what the network sees on whole clips."""
    import tensorflow as tf

    hop, w = spec.window_stride_samples, spec.window_size_samples
    clips = tf.constant(audio, tf.float32)
    last = (spec.spectrogram_length - 1) * hop + w  # where the clip's last frame ends
    frames = norm(compute_features(clips, spec)).numpy()
    out = {
        "pcm": audio[:, last - hop : last],
        # the buffer before that invoke: frames 0 .. L-2 behind one it drops (frame 0 stands in)
        "frames": np.concatenate([frames[:, :1], frames[:, :-1]], axis=1),
    }
    if spec.preprocess != "embedding":
        return {**out, "pcm_tail": audio[:, last - w : last - hop]}
    from kws_core.features import speech_embedding as se

    tail, kept = state_shapes(spec)["pcm_tail"][1], state_shapes(spec)["mel"][1]
    first = (spec.spectrogram_length - 1) * (hop // se.MEL_HOP)  # the last embedding's mel frames
    mel = se.mel_model()(clips[:, :last] * se.PCM_SCALE).numpy()
    return {
        **out,
        "pcm_tail": audio[:, last - hop - tail : last - hop],
        "mel": mel[:, first : first + kept],
    }


def streaming_io(path: Path) -> dict:
    """export.json's entry: every input and output tensor by name, plus the file size."""
    interp = tflite_interpreter(model_path=str(path))
    runner = interp.get_signature_runner()

    def desc(details: dict) -> dict:
        return {
            name: {"dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape"]]}
            for name, d in sorted(details.items())
        }

    return {
        "inputs": desc(runner.get_input_details()),
        "outputs": desc(runner.get_output_details()),
        "bytes": path.stat().st_size,
    }


def stream_samples(pcm: np.ndarray) -> np.ndarray:
    """Live audio as float32 mono samples, or a one-line KwsError (shared by every live loop)."""
    pcm = np.asarray(pcm, np.float32)
    if pcm.ndim != 1:
        raise KwsError(f"the stream must be mono 1-D samples, got shape {pcm.shape}")
    if not np.isfinite(pcm).all():
        raise KwsError("the stream has NaN or infinite samples; send float PCM in [-1, 1]")
    return pcm


class StreamingTFLite:
    """Reference loop around `model_streaming.tflite`: hops in, state carried between invokes.

    `push(pcm)` takes any number of mono float samples and returns `(time_ms, scores)` for each
    window now complete, every `clip_stride_ms` (a whole number of hops), stamped with the
    window centre as `score_stream` stamps it. The stream starts `(-W) % h` zero samples early
    so that every frame covers the samples of the clip models' frame of the same index.
    """

    def __init__(
        self,
        path: str | Path,
        clip_stride_ms: float,
        *,
        content: bytes | None = None,
        spec: FeatureSpec | None = None,
        labels: list[str] | None = None,
    ) -> None:
        path = Path(path)
        if content is None:  # an export's file; else (export-time check) the model given
            if not path.is_file():
                raise KwsError(f"{path}: no such streaming model; export with --streaming")
            meta_path = _find_meta(path)
            meta = _read_meta(meta_path)
            if path.name not in meta.get("models", {}) or "inputs" not in meta["models"].get(
                path.name, {}
            ):
                raise KwsError(
                    f"{path}: not a streaming model of its {EXPORT_META}; export with --streaming"
                )
            verify_files(meta_path.parent, meta, [path.name])
            spec, labels = FeatureSpec.from_dict(meta["features"]), list(meta["labels"])
            interp = tflite_interpreter(model_path=str(path))
        else:
            interp = tflite_interpreter(model_content=content)
        if spec is None or labels is None:
            raise KwsError("StreamingTFLite: a model given as content needs its spec and labels")
        self.spec, self.labels = spec, labels
        self._run = interp.get_signature_runner()
        inputs, outputs = io_names(spec)
        if set(self._run.get_input_details()) != set(inputs) or set(
            self._run.get_output_details()
        ) != set(outputs):
            raise KwsError(f"{path}: not a streaming model (inputs {', '.join(inputs)} expected)")
        self._shapes = state_shapes(spec)
        self.hop = spec.window_stride_samples
        stride = round(clip_stride_ms * spec.sample_rate / 1000)
        if stride < self.hop or stride % self.hop:
            raise KwsError(
                f"stream.clip_stride_ms: {clip_stride_ms} ms is not a whole number of "
                f"{spec.frame_ms:g} ms front-end hops; the streaming model runs once a hop"
            )
        self.stride, self.step = stride, stride // self.hop
        self.reset()

    def reset(self) -> None:
        """Zero state: the next sample pushed starts a new stream."""
        w = self.spec.window_size_samples
        pad = (-w) % self.hop
        self._lead = (w + pad) // self.hop  # invokes until the first frame is a real one
        self._pending = np.zeros(pad, np.float32)
        self._state = {name: np.zeros(shape, np.float32) for name, shape in self._shapes.items()}
        self._invokes = 0
        self._ready: list[tuple[int, np.ndarray]] = []  # (window, scores) awaiting samples
        self.samples_seen = 0

    def push(self, pcm: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add the next samples; `(time_ms, scores[labels])` of each window they complete."""
        pcm = stream_samples(pcm)
        self.samples_seen += len(pcm)
        self._pending = np.concatenate([self._pending, pcm])
        length, n = self.spec.spectrogram_length, len(self._pending) // self.hop
        for i in range(n):
            hop = self._pending[None, i * self.hop : (i + 1) * self.hop]
            out = self._run(pcm=hop, **self._state)
            self._state = {name: out[f"new_{name}"] for name in self._state}
            self._invokes += 1
            first = self._invokes - self._lead - (length - 1)  # first frame in the buffer
            if first >= 0 and first % self.step == 0:
                self._ready.append((first // self.step, out["scores"][0].copy()))
        self._pending = self._pending[n * self.hop :]
        # A window is reported once all its samples arrived (its last frame can end up to a
        # hop before the clip does), as score_stream and StreamingSession count windows.
        results, keep = [], []
        for w, scores in self._ready:
            start = w * self.stride
            if start + self.spec.desired_samples <= self.samples_seen:
                centre = (start + self.spec.desired_samples // 2) * 1000 // self.spec.sample_rate
                results.append((int(centre), scores))
            else:
                keep.append((w, scores))
        self._ready = keep
        return results


def check_streaming(content: bytes, graphs, spec: FeatureSpec, labels: list[str]) -> float:
    """Max |streaming - clip model| score difference on a synthetic stream; KwsError above
    CHECK_TOLERANCE (a wrong graph must not be shipped). `graphs`: the export's ExportGraphs."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    n = spec.desired_samples + 8 * spec.window_stride_samples
    t = np.arange(n) / spec.sample_rate
    pcm = (0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 440 * t * (1 + t))).astype(
        np.float32
    )
    stream = StreamingTFLite("<export>", spec.frame_ms, content=content, spec=spec, labels=labels)
    got = stream.push(pcm)
    windows = np.lib.stride_tricks.sliding_window_view(pcm, spec.desired_samples)[
        :: spec.window_stride_samples
    ]
    # the clip graph from PCM, whichever input the export's clip models take (features_outside)
    clip = tf.function(
        graphs.scores_from_pcm,
        input_signature=[tf.TensorSpec([None, spec.desired_samples], tf.float32)],
    )
    want = clip(tf.constant(np.ascontiguousarray(windows))).numpy()
    if len(got) != len(want):
        raise KwsError(f"{STREAMING_TFLITE}: {len(got)} windows for {len(want)}; a bug in kws")
    diff = float(np.max(np.abs(np.stack([s for _, s in got]) - want)))
    if not diff <= CHECK_TOLERANCE:
        raise KwsError(
            f"{STREAMING_TFLITE}: scores differ from the clip model's by {diff:.2g} (over "
            f"{CHECK_TOLERANCE:g}); a bug in kws, export without --streaming"
        )
    return diff
