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
  new 10 ms mel frames and the mel frames give only the new embedding frame: the pre-trained
  convolutions run on the hop's new mel frames alone, each keeping the rows the next hop needs
  (`_BlockEmbedder`; windows whose mel frames span over 80 dB run whole, see there). The state
  keeps the samples the next frame needs, the mel frames the next embedding needs, the
  convolutions' rows and the feature frames of the windows not yet scored. The embedding
  network and the model (a SavedModel's `features` signature) run as float TFLite conversions
  made when the session starts (~1-3 s), one window a call on one thread: an interpreter call
  costs ~0.05-0.5 ms where an eager TensorFlow call costs ~1 ms (bench/stream_session.py).
* ``"pcm"``: anything else (`micro`, which carries state across frames; TFLite exports that take
  PCM; a stride that is not whole hops): each window is scored from its samples with
  `ExportedModel.scores`, as `score_stream` does then; the state keeps the last window's samples.

The scores equal `score_stream` on the whole stream up to float noise: the NumPy front end
(float64, then float32), TFLite's kernels and TensorFlow's float32 ops differ in the last bits
(tests/test_stream_session.py states the measured bound). `session_scores` runs a session over
a whole file: the "session" engine of `score_stream`, which `kws test-streaming-accuracy` and
`kws stream-eval` use where it is the faster one (`kws_core.streaming.run.resolve_engine`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from kws_core.export.loader import ExportedModel
from kws_core.export.streaming_tflite import stream_samples
from kws_core.features import front_end as fe
from kws_core.features.speech_embedding import MEL_BINS
from kws_core.infra.errors import KwsError
from kws_core.streaming.windows import StreamScores, stride_plan, too_short, window_starts

# Hops a push when `session_scores` feeds a file: ~5 s at 80 ms; fewer Python calls than one
# hop a push (3.7 vs 2.7 s for the 600 s default stream), the same scores whatever the size.
FILE_HOPS = 64


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
    # incremental embedding: the convolutions' cached rows (flat), the last cut rows, the first
    # mel frame of the next block, and how many embeddings came from it or from whole windows
    conv_state: np.ndarray | None = None
    cut: np.ndarray | None = None
    next_block: int = 0
    incremental: int = 0
    whole: int = 0
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
            self.blocks = _BlockEmbedder.make(spec.embedding_finetune_layers, self.hop_frames)
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


def _interpreter(content: bytes) -> Any:
    """A float TFLite interpreter on one thread: a second thread saves nothing on one window
    and, on a busy machine, made 1 hop in 20 wait >5 ms for it (bench/stream_session.py)."""
    from kws_core.export.loader import tflite_interpreter

    return tflite_interpreter(model_content=content, num_threads=1)


class _OneAtATime:
    """A TFLite model called one example at a time (batch 1: no re-allocation per hop)."""

    def __init__(self, content: bytes) -> None:
        self.interp = _interpreter(content)
        self.inp = self.interp.get_input_details()[0]["index"]
        self.out = self.interp.get_output_details()[0]["index"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = []
        for row in np.asarray(x, np.float32):
            self.interp.set_tensor(self.inp, row[None])
            self.interp.invoke()
            rows.append(self.interp.get_tensor(self.out)[0].copy())
        return np.stack(rows)


@dataclass(frozen=True)
class _BlockPlan:
    """How the embedding's frozen convolutions run on `hop` new mel frames at a time."""

    content: bytes  # TFLite: (mel rows [1, hop, 32], state [1, state_size]) -> (cut rows, state)
    state_size: int
    hop: int
    cut_rows: int  # rows of one embedding frame at the cut (`cut_shape(top_layers)[0]`)
    first_block: int  # first mel frame of the first block (<= 0: primes the cached rows)


class _BlockEmbedder:
    """The frozen embedding convolutions on each hop's new mel frames only, their rows cached.

    The convolutions are valid in time (padded only across mel bins) and the pools in time do
    not overlap, so with the hop a multiple of the pools' stride a window's rows at the cut are
    rows of one long run over the stream: block b (mel frames `first_block + b * hop` on, each
    convolution fed the rows it kept from the block before) gives the next `hop / stride` rows,
    and the block ending with window k's last frame completes window k's embedding frame (its
    last `cut_rows` rows). That is ~8x less arithmetic than the whole 76-frame window a hop.

    Exact only where the window's top-80-dB floor (`floor_and_scale`, per window) clamps
    nothing, i.e. its mel frames span at most 80 dB: other windows go through the whole-window
    network (`_Framer.embed`), so results do not depend on which path ran. The first blocks
    hold zero frames before the stream; they only reach rows before it, which no window uses.
    """

    def __init__(self, plan: _BlockPlan) -> None:
        self.plan = plan
        self.interp = _interpreter(plan.content)
        ins = {tuple(d["shape"]): d["index"] for d in self.interp.get_input_details()}
        outs = {tuple(d["shape"]): d["index"] for d in self.interp.get_output_details()}
        self.rows_in = ins[(1, plan.hop, MEL_BINS)]
        self.state_in = ins[(1, plan.state_size)]
        self.state_out = outs.pop((1, plan.state_size))
        self.cut_out = outs.popitem()[1]

    @staticmethod
    def make(top_layers: int, hop: int) -> _BlockEmbedder | None:
        """One for this cut and hop, None when they cannot run block by block."""
        plan = _block_plan(top_layers, hop)
        return _BlockEmbedder(plan) if plan is not None else None

    def reset(self, s: SessionState) -> None:
        s.conv_state = np.zeros((1, self.plan.state_size), np.float32)
        s.cut = None
        s.next_block = self.plan.first_block

    def advance(self, s: SessionState, until: int) -> None:
        """Run the blocks that start at or before mel frame `until` (frames from s.mel_start
        on are in s.mel; earlier ones, before the stream, are zeros)."""
        hop = self.plan.hop
        while s.next_block <= until:
            lo = s.next_block - s.mel_start
            rows = s.mel[max(lo, 0) : lo + hop]
            if len(rows) < hop:  # the stream's first frames: zeros before them
                before = np.zeros((hop - len(rows), rows.shape[1]), np.float32)
                rows = np.concatenate([before, rows])
            self.interp.set_tensor(self.rows_in, rows[None])
            self.interp.set_tensor(self.state_in, s.conv_state)
            self.interp.invoke()
            s.conv_state = self.interp.get_tensor(self.state_out)
            new = self.interp.get_tensor(self.cut_out).reshape(-1, self._row_width(s))
            s.cut = new if s.cut is None else np.concatenate([s.cut, new])[-self.plan.cut_rows :]
            s.next_block += hop

    def _row_width(self, s: SessionState) -> int:
        return s.frames.shape[1] // self.plan.cut_rows

    def frame(self, s: SessionState) -> np.ndarray:
        """The embedding frame of the window whose last block ran last."""
        return s.cut.reshape(-1)


@functools.lru_cache(maxsize=4)
def _block_plan(top_layers: int, hop: int) -> _BlockPlan | None:
    """The block-by-block network below the top `top_layers` convolutions for a hop of `hop`
    mel frames, or None when a convolution pads in time, a pool overlaps, or the hop is not a
    multiple of the pools' stride in time (then windows are not rows of one run)."""
    import tensorflow as tf

    from kws_core.features import speech_embedding as se
    from kws_core.infra.tf_import import quiet_converter

    weights = se.onnx_weights(se.EMBEDDING_FILE)
    stop = se.CONVOLUTIONS - top_layers
    ops: list[tuple] = []
    rows, width, channels = hop, se.MEL_BINS, 1
    scale, offset = 1, 0  # a row here = mel frames [(s + offset) / scale ...) of a block at s
    residues = []  # (modulus, residue): a block's first frame s must be residue mod modulus
    state_size = n_conv = 0
    for step in se._conv_layers():
        index = n_conv if step["op"] == "conv" else n_conv - 1
        if step["op"] == "conv":
            n_conv += 1
        if index >= stop:
            break
        if step["op"] == "conv":
            kernel = weights[step["weight"]].transpose(2, 3, 1, 0)  # [h, w, in, out]
            bias = weights[step["bias"]] if step["bias"] else np.zeros(kernel.shape[-1])
            top, left, bottom, right = step["pads"]
            if top or bottom:
                return None
            keep = kernel.shape[0] - 1  # rows of the block before that this one needs
            ops.append(("conv", kernel, bias, (left, right), keep, width, channels))
            state_size += keep * width * channels
            offset -= keep * scale
            width, channels = width + left + right - kernel.shape[1] + 1, kernel.shape[-1]
        elif step["op"] == "act":
            ops.append(("act", step["alpha"]))
        else:
            (size_t, size_f), (stride_t, stride_f) = step["size"], step["strides"]
            if size_t != stride_t or rows % stride_t or hop % (scale * stride_t):
                return None
            residues.append((scale * stride_t, -offset % (scale * stride_t)))
            ops.append(("pool", (size_t, size_f), (stride_t, stride_f)))
            rows, scale = rows // stride_t, scale * stride_t
            width = (width - size_f) // stride_f + 1
    cut_rows = se.cut_shape(top_layers)[0]
    # window k's cut rows are [k hop / scale, + cut_rows); its block ends with its last row
    last = se.WINDOW_FRAMES - hop  # window 0's block
    if (cut_rows - rows) * scale - offset != last or any(last % m != r for m, r in residues):
        return None

    if rows * width * channels == state_size:
        return None  # the interpreter's two outputs are told apart by their shapes

    def step_fn(mel_rows: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.expand_dims(mel_rows / 10.0 + 2.0, -1)  # floor_and_scale without the floor
        at, kept = 0, []
        for op in ops:
            if op[0] == "conv":
                _, kernel, bias, (left, right), keep, w, c = op
                if keep:
                    cached = tf.reshape(state[:, at : at + keep * w * c], [1, keep, w, c])
                    at += keep * w * c
                    x = tf.concat([cached, x], axis=1)
                    kept.append(tf.reshape(x[:, -keep:], [1, keep * w * c]))
                x = tf.pad(x, [[0, 0], [0, 0], [left, right], [0, 0]])
                x = tf.nn.conv2d(x, tf.constant(kernel, tf.float32), 1, "VALID")
                x = x + tf.constant(bias, tf.float32)
            elif op[0] == "act":
                x = tf.maximum(tf.nn.leaky_relu(x, op[1]), se.ACTIVATION_FLOOR)
            else:
                x = tf.nn.max_pool2d(x, op[1], op[2], "VALID")
        return tf.reshape(x, [1, -1]), tf.concat(kept, axis=1)

    fn = tf.function(
        step_fn,
        input_signature=[
            tf.TensorSpec([1, hop, se.MEL_BINS], tf.float32),
            tf.TensorSpec([1, state_size], tf.float32),
        ],
        autograph=False,
    ).get_concrete_function()
    with quiet_converter():
        content = tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()
    first = last - -(-last // hop) * hop  # the earliest block on the grid starting <= 0
    return _BlockPlan(content, state_size, hop, cut_rows, first)


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

    @tf.function(
        input_signature=[tf.TensorSpec([None, se.WINDOW_FRAMES, se.MEL_BINS], tf.float32)],
        autograph=False,
    )
    def embed(windows: tf.Tensor) -> tf.Tensor:
        return se.embed_windows(windows, top_layers)

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
    thread, swaps `SessionState` objects in and out of one session (each made by `reset()`:
    a bare `SessionState()` lacks the buffers of the session's path).
    """

    def __init__(self, model: ExportedModel, clip_stride_ms: float) -> None:
        spec = model.spec
        self.model, self.spec = model, spec
        self.window = spec.desired_samples
        self.stride, from_features = stride_plan(model, clip_stride_ms)  # KwsError if < 1 sample
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
                if self._framer.blocks is not None:
                    self._framer.blocks.reset(self.state)

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
                new = self._embeddings(windows.transpose(0, 2, 1))
                s.frames = np.concatenate([s.frames, new])
                s.mel = s.mel[k * f.hop_frames :]
                s.mel_start += k * f.hop_frames
            return
        frames, n = _take_windows(s.pending, spec.window_size_samples, self.hop)
        if n:
            s.frames = np.concatenate([s.frames, f.spectral(frames)])
            s.pending = s.pending[n * self.hop :]
            s.pending_start += n * self.hop

    def _embeddings(self, windows: np.ndarray) -> np.ndarray:
        """Embedding frames of the next complete mel windows [k, 76, 32] (s.mel from the
        first): from the blocks where the window's floor clamps nothing, else whole."""
        from kws_core.features.speech_embedding import TOP_DB

        s, f = self.state, self._framer
        if f.blocks is None:
            s.whole += len(windows)
            return f.embed(windows)
        out = np.zeros((len(windows), s.frames.shape[1]), np.float32)
        for i, window in enumerate(windows):
            # window k's block: the hop of mel frames that ends with the window
            f.blocks.advance(s, s.mel_start + i * f.hop_frames + len(window) - f.hop_frames)
            if float(window.max()) - float(window.min()) < TOP_DB:
                out[i] = f.blocks.frame(s)
                s.incremental += 1
            else:
                out[i] = f.embed(window[None])[0]
                s.whole += 1
        return out

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


def session_scores(
    model: ExportedModel, samples: np.ndarray, clip_stride_ms: float, progress: bool = False
) -> StreamScores:
    """`score_stream`'s result from one session fed the stream FILE_HOPS hops a push: the same
    windows and times, scores equal up to float noise. `seconds` is the time spent in `push`,
    as `score_stream`'s is its loop (not the session's TFLite conversions, ~1-3 s once)."""
    session = StreamingSession(model, clip_stride_ms)
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 1:
        raise KwsError(f"the stream must be mono 1-D samples, got shape {samples.shape}")
    expected = len(window_starts(len(samples), session.window, session.stride))
    if expected == 0:
        raise too_short(len(samples), model.spec)
    scores = np.zeros((expected, len(model.labels)), np.float32)
    times = np.zeros(expected, np.int64)
    done, hop = 0, session.stride * FILE_HOPS
    with tqdm(total=expected, desc="stream", unit="win", disable=not progress, leave=False) as bar:
        for i in range(0, len(samples), hop):
            out = session.push(samples[i : i + hop])
            for time_ms, row in out:
                times[done], scores[done] = time_ms, row
                done += 1
            bar.update(len(out))
    rate = model.spec.sample_rate
    return StreamScores(
        scores[:done], times[:done], session.state.seconds, len(samples) / rate, "session"
    )
