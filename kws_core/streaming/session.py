"""Live, stateful streaming: each hop of new audio computes only its new front-end frames.

`StreamingSession(model, clip_stride_ms).push(pcm)` is the API for a microphone, a socket or a
demo: it returns `(time_ms, scores)` for every window the hop completes (one window every
`clip_stride_ms`, stamped with its centre, as `score_stream`), with latency of one hop rather
than of `BlockScorer`'s 100-clip front-end batches.

Two paths, chosen once at construction (`StreamingSession.path`):

* ``"frames"``: the front end is frame-wise (mfcc, logmel, average, embedding), the model takes
  features (`ExportedModel.scores_features`) and the stride is a whole number of front-end hops.
  A hop's samples are cut into the frames they complete, and only those frames are computed
  (NumPy, the front end's own constant matrices); for the embedding front end the samples give
  new 10 ms mel frames and the mel frames give only the new embeddings (the pre-trained network,
  one call a hop). The state keeps the samples the next frame needs, the mel frames the next
  embedding needs and the feature frames of the windows not yet scored. The embedding network
  and the model (a SavedModel's `features` signature) run as float TFLite conversions made
  when the session starts, one window a call: an interpreter call costs ~0.05-0.5 ms where an
  eager TensorFlow call costs ~1 ms (bench/stream_session.py).
* ``"pcm"``: anything else (`micro`, which carries state across frames; TFLite exports that take
  PCM; a stride that is not whole hops): each window is scored from its samples with
  `ExportedModel.scores`, as `score_stream` does then; the state keeps the last window's samples.

The scores equal `score_stream` on the whole stream up to float noise: the NumPy front end
(float64, then float32), TFLite's kernels and TensorFlow's float32 ops differ in the last bits
(tests/test_stream_session.py states the measured bound). Offline evaluation
(`kws test-streaming-accuracy`, `kws stream-eval`) stays on `score_stream`, which batches
hundreds of windows per model call and so is faster on a file.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kws_core.export.loader import ExportedModel
from kws_core.export.streaming_tflite import stream_samples
from kws_core.features import front_end as fe
from kws_core.streaming.run import _plan


@dataclass
class SessionState:
    """Everything a session remembers between hops (one per client on a server)."""

    samples_seen: int = 0
    next_window: int = 0  # index of the first window not scored yet
    # samples from `pending_start` on that no computed frame has consumed yet (pcm path: the
    # samples of the windows not scored yet)
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    pending_start: int = 0
    # embedding front end: 10 ms mel frames from `mel_start` on (what the next embedding needs)
    mel: np.ndarray | None = None
    mel_start: int = 0
    # feature frames from `frames_start` on (the windows not scored yet)
    frames: np.ndarray | None = None
    frames_start: int = 0
    seconds: float = 0.0  # time spent in push (front end + model)


class _Framer:
    """The front end of one frame-wise preprocess mode as NumPy on the frames' own rows."""

    def __init__(self, spec: fe.FeatureSpec) -> None:
        self.spec = spec
        mode = spec.preprocess
        if mode == "embedding":
            from kws_core.features import speech_embedding as se

            w = se.onnx_weights(se.MEL_FILE)
            # The mel graph's STFT convolution is a windowed DFT: its DC row is the window.
            # (An FFT, not a [512, 514] matmul: BLAS threads cost ~2 ms a call on a busy machine.)
            self.mel_window = np.asarray(w["0.stft.conv_real.weight"][0, 0], np.float64)
            self.mel_w = np.asarray(w["1.melW"], np.float64)
            self.hop_frames = spec.window_stride_samples // se.MEL_HOP
            self.embed = _OneAtATime(_embedder_tflite(spec.embedding_finetune_layers))
            return
        self.window = fe.periodic_hann(spec.window_size_samples)
        if mode == "mfcc":
            self.matrix = fe.mfcc_mel_matrix(spec)
            self.dct = fe.mfcc_dct_matrix(fe.MFCC_FILTERBANK_CHANNELS, spec.feature_bin_count)
        elif mode == "logmel":
            self.matrix = fe.logmel_matrix(spec)
        else:
            self.matrix = fe.average_pool_matrix(spec)

    def spectral(self, frames: np.ndarray) -> np.ndarray:
        """[n, window_size_samples] frames -> [n, bins] features (FFT zero-padded)."""
        spectrum = np.fft.rfft(frames.astype(np.float64) * self.window, n=self.spec.fft_length)
        power = spectrum.real**2 + spectrum.imag**2
        mode = self.spec.preprocess
        if mode == "mfcc":
            mel = np.sqrt(power) @ self.matrix
            return (np.log(np.maximum(mel, fe.MFCC_FLOOR)) @ self.dct).astype(np.float32)
        if mode == "logmel":
            return np.log(power @ self.matrix + fe.LOGMEL_OFFSET).astype(np.float32)
        return (power @ self.matrix).astype(np.float32)

    def mel_db(self, frames: np.ndarray) -> np.ndarray:
        """[n, 512] samples in [-1, 1] -> [n, 32] mel frames in dB (the embedding's mel graph)."""
        from kws_core.features import speech_embedding as se

        spectrum = np.fft.rfft(frames.astype(np.float64) * (se.PCM_SCALE * self.mel_window))
        mel = (spectrum.real**2 + spectrum.imag**2) @ self.mel_w
        return ((10.0 / np.log(10.0)) * np.log(np.maximum(mel, se.POWER_FLOOR))).astype(np.float32)


class _OneAtATime:
    """A TFLite model called one example at a time (batch 1: no re-allocation per hop)."""

    def __init__(self, content: bytes) -> None:
        from kws_core.export.loader import tflite_interpreter

        self.interp = tflite_interpreter(model_content=content)
        self.inp = self.interp.get_input_details()[0]["index"]
        self.out = self.interp.get_output_details()[0]["index"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = []
        for row in np.asarray(x, np.float32):
            self.interp.set_tensor(self.inp, row[None])
            self.interp.invoke()
            rows.append(self.interp.get_tensor(self.out)[0].copy())
        return np.stack(rows)


@functools.lru_cache(maxsize=4)
def _embedder_tflite(top_layers: int) -> bytes:
    """`_embedder` as a float TFLite model (an interpreter call is ~3x cheaper than eager TF)."""
    import tensorflow as tf

    from kws_core.infra.tf_import import quiet_converter

    with quiet_converter():
        fn = _embedder(top_layers).get_concrete_function()
        return tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()


@functools.lru_cache(maxsize=4)
def _embedder(top_layers: int) -> Any:
    """A traced function: [n, 76, 32] dB mel windows -> [n, width] front-end frames."""
    import tensorflow as tf

    from kws_core.features import speech_embedding as se

    net = se.bottom_model(top_layers) if top_layers else se.embedding_model()
    width = int(np.prod(se.cut_shape(top_layers)))

    @tf.function(
        input_signature=[tf.TensorSpec([None, se.WINDOW_FRAMES, se.MEL_BINS], tf.float32)],
        autograph=False,
    )
    def embed(windows: tf.Tensor) -> tf.Tensor:
        x = tf.expand_dims(se.floor_and_scale(windows), -1)
        return tf.reshape(net(x, training=False), [-1, width])

    return embed


def _take_windows(buf: np.ndarray, size: int, hop: int) -> tuple[np.ndarray, int]:
    """(the full windows of `size` rows every `hop` rows at the start of `buf`, how many)."""
    n = (len(buf) - size) // hop + 1 if len(buf) >= size else 0
    if n == 0:
        return buf[:0], 0
    return sliding_window_view(buf, size, axis=0)[::hop][:n], n


class StreamingSession:
    """Scores of a live stream, hop by hop, with explicit state (`state`, `reset()`).

    `push(pcm)` takes the next mono float samples in [-1, 1], any number (even fewer than one
    front-end hop), and returns `(time_ms, scores)` for each window now complete, in order.
    A server keeps one session per client (each has its own TFLite interpreters), or, on one
    thread, swaps `SessionState` objects in and out of one session.
    """

    def __init__(self, model: ExportedModel, clip_stride_ms: float) -> None:
        spec = model.spec
        self.model, self.spec = model, spec
        self.window = spec.desired_samples
        self.stride, from_features = _plan(model, clip_stride_ms)  # KwsError if < 1 sample
        self.path = "frames" if from_features else "pcm"
        self.hop = spec.window_stride_samples
        self._framer = _Framer(spec) if from_features else None
        self._head = model.scores_from_features
        if from_features:
            content = model.features_tflite()  # None: a TFLite export is one already
            if content is not None:
                self._head = _OneAtATime(content)
        self.state = SessionState()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample pushed is the start of a new one."""
        self.state = SessionState()
        if self.path == "frames":
            self.state.frames = np.zeros((0, self.spec.shape[1]), np.float32)
            if self.spec.preprocess == "embedding":
                from kws_core.features.speech_embedding import MEL_BINS

                self.state.mel = np.zeros((0, MEL_BINS), np.float32)

    @property
    def real_time_factor(self) -> float:
        """Time spent in `push` / audio pushed (0.01 = 100x faster than real time)."""
        s = self.state
        return s.seconds * self.spec.sample_rate / s.samples_seen if s.samples_seen else np.nan

    def push(self, pcm_hop: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add the next samples; `(time_ms, scores[labels])` of each window they complete."""
        block = stream_samples(pcm_hop)
        s = self.state
        t0 = time.perf_counter()
        s.pending = np.concatenate([s.pending, block])
        s.samples_seen += len(block)
        # windows whose samples have all arrived
        total = (
            (s.samples_seen - self.window) // self.stride + 1
            if s.samples_seen >= self.window
            else 0
        )
        if self.path == "frames":
            self._new_frames()
            scores = self._score_frames(total)
        else:
            scores = self._score_pcm(total)
        first = s.next_window
        s.next_window += len(scores)
        s.seconds += time.perf_counter() - t0
        starts = np.arange(first, s.next_window, dtype=np.int64) * self.stride
        times = (starts + self.window // 2) * 1000 // self.spec.sample_rate
        return [(int(t), row) for t, row in zip(times, scores, strict=True)]

    # ---------------------------------------------------------------- frames path
    def _new_frames(self) -> None:
        """Compute the frames the pending samples complete; keep what the next frame needs."""
        s, spec, f = self.state, self.spec, self._framer
        if spec.preprocess == "embedding":
            from kws_core.features import speech_embedding as se

            frames, n = _take_windows(s.pending, se.MEL_WINDOW, se.MEL_HOP)
            if n:
                s.mel = np.concatenate([s.mel, f.mel_db(frames)])
                s.pending = s.pending[n * se.MEL_HOP :]
                s.pending_start += n * se.MEL_HOP
            windows, k = _take_windows(s.mel, se.WINDOW_FRAMES, f.hop_frames)
            if k:
                new = f.embed(windows.transpose(0, 2, 1))
                s.frames = np.concatenate([s.frames, new])
                s.mel = s.mel[k * f.hop_frames :]
                s.mel_start += k * f.hop_frames
            return
        frames, n = _take_windows(s.pending, spec.window_size_samples, self.hop)
        if n:
            s.frames = np.concatenate([s.frames, f.spectral(frames)])
            s.pending = s.pending[n * self.hop :]
            s.pending_start += n * self.hop

    def _score_frames(self, total: int) -> np.ndarray:
        """Score windows up to `total` whose frames are all computed; drop unneeded frames."""
        s, length = self.state, self.spec.spectrogram_length
        step = self.stride // self.hop
        computed = s.frames_start + len(s.frames)
        ready = min(total, (computed - length) // step + 1 if computed >= length else 0)
        if ready <= s.next_window:
            return np.zeros((0, len(self.model.labels)), np.float32)
        lo = s.next_window * step - s.frames_start
        hi = (ready - 1) * step - s.frames_start + length
        view = sliding_window_view(s.frames[lo:hi], length, axis=0)[::step].transpose(0, 2, 1)
        scores = self._head(np.ascontiguousarray(view))
        cut = min(ready * step - s.frames_start, len(s.frames))
        s.frames = s.frames[cut:]
        s.frames_start += cut
        return scores

    # ---------------------------------------------------------------- pcm path
    def _score_pcm(self, total: int) -> np.ndarray:
        s = self.state
        if total <= s.next_window:
            return np.zeros((0, len(self.model.labels)), np.float32)
        lo = s.next_window * self.stride - s.pending_start
        hi = (total - 1) * self.stride - s.pending_start + self.window
        view = sliding_window_view(s.pending[lo:hi], self.window)[:: self.stride]
        scores = self.model.scores(np.ascontiguousarray(view))
        cut = min(total * self.stride - s.pending_start, len(s.pending))
        s.pending = s.pending[cut:]
        s.pending_start += cut
        return scores
