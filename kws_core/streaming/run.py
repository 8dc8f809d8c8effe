"""Run an exported model over a long stream: one clip-length window every clip_stride_ms.

When the model can take features (a SavedModel export's `features` signature, or a
features-in export) and the stride is a whole number of front-end hops, the stream's features
are computed once and every window is a view of 98 consecutive frames: overlapping windows no
longer recompute the front end (33x for a 30 ms stride). Otherwise windows are views into the
samples and go through the model's own front end. Either way they reach the model in chunks, so
a SavedModel scores hundreds of windows per call; TFLite models (batch 1 on devices) are fed
one window per interpreter call by `ExportedModel`.

`BlockScorer` / `score_stream_blocks` give the same scores for a stream that arrives in blocks
(hours of audio, a file read in pieces), holding only the tail the next windows need. Its
front-end batches make it seconds late on a live microphone: that is
`kws_core.streaming.session.StreamingSession`'s job (one hop late, equal up to float noise).

`score_stream(..., engine=...)` runs either path on a whole stream: ``"batch"`` (the above, the
reference) or ``"session"`` (a `StreamingSession` fed one hop at a time); ``"auto"``, the
`stream.engine` default of `kws test-streaming-accuracy` and `kws stream-eval`, picks the one
measured faster (`resolve_engine`). The result says which ran (`StreamScores.engine`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import get_args

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from kws_core.config import StreamConfig
from kws_core.export.loader import ExportedModel
from kws_core.features.front_end import STREAM_BATCH, stream_features
from kws_core.infra.errors import KwsError
from kws_core.streaming.windows import StreamScores, stride_plan, too_short, window_starts

CHUNK = 512  # windows per model call: 512 x 16000 float32 = 33 MB
ENGINES: tuple[str, ...] = get_args(StreamConfig.model_fields["engine"].annotation)


def resolve_engine(model: ExportedModel, clip_stride_ms: float, engine: str = "auto") -> str:
    """The engine `score_stream` runs for `engine`: "session" or "batch".

    "auto" takes the session only for the embedding front end on the session's frames path
    (a model that takes features: a SavedModel, or a features-in export; a stride of whole
    embedding hops): there each hop computes its new
    embedding frame from its new mel frames, which beats the embeddings of 100-clip batches in
    TensorFlow (default model, 600 s stream: 4.6-7.6 s against 8.1 s of scoring, on 2 busy
    cores). Everywhere else the batches win: an mfcc model's 512 windows a call cost less than
    512 interpreter calls (120 s at 30 ms: 0.30 s against 0.67 s), and a model that takes PCM
    recomputes each window's front end on either path.
    """
    if engine not in ENGINES:
        raise KwsError(f"stream.engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    _, from_features = stride_plan(model, clip_stride_ms)
    return "session" if from_features and model.spec.preprocess == "embedding" else "batch"


def score_stream(
    model: ExportedModel,
    samples: np.ndarray,
    clip_stride_ms: float,
    progress: bool = False,
    engine: str = "batch",
) -> StreamScores:
    """Scores of every window. A result is stamped with its window's centre: the ground truth
    marks a word's loudest point, which sits mid-window when the model is most sure.

    `engine` (see `resolve_engine`): "session" gives the same windows and times with scores
    equal up to float noise (tests/test_stream_session.py states the bound).
    """
    if resolve_engine(model, clip_stride_ms, engine) == "session":
        from kws_core.streaming.session import session_scores

        return session_scores(model, samples, clip_stride_ms, progress=progress)
    spec = model.spec
    window = spec.desired_samples
    stride, from_features = stride_plan(model, clip_stride_ms)
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 1:
        raise KwsError(f"the stream must be mono 1-D samples, got shape {samples.shape}")
    starts = window_starts(len(samples), window, stride)
    if len(starts) == 0:
        raise too_short(len(samples), spec)
    out = np.zeros((len(starts), len(model.labels)), np.float32)
    t0 = time.perf_counter()
    hop = spec.window_stride_samples
    if from_features:
        frames = stream_features(samples, spec)
        # [windows, frames, bins] views: window w is frames (w * stride / hop) onwards.
        view = sliding_window_view(frames, spec.spectrogram_length, axis=0)
        # (An embedding front end's frames cover less than the clip: cut the windows whose
        # clip would run past the stream's end.)
        view = view[:: stride // hop][: len(starts)].transpose(0, 2, 1)
        score = model.scores_from_features
    else:
        view = sliding_window_view(samples, window)[::stride]
        score = model.scores
    bar = tqdm(total=len(starts), desc="stream", unit="win", disable=not progress, leave=False)
    for i in range(0, len(starts), CHUNK):
        out[i : i + CHUNK] = score(np.ascontiguousarray(view[i : i + CHUNK]))
        bar.update(min(CHUNK, len(starts) - i))
    bar.close()
    seconds = time.perf_counter() - t0
    times = (starts + window // 2) * 1000 // spec.sample_rate
    return StreamScores(out, times.astype(np.int64), seconds, len(samples) / spec.sample_rate)


# ---------------------------------------------------------------- block-wise scoring
class BlockScorer:
    """`score_stream` for a stream that arrives in blocks, in memory bounded by one block.

    Feed blocks with `push` and end with `finish`; each returns the (scores, times_ms) of the
    windows it completed, in order. The concatenated results equal `score_stream` on the
    concatenated stream bit for bit: windows start at 0, stride, 2 * stride ... of the whole
    stream, and the model and the front end see exactly the arrays `score_stream` gives them
    (model calls of the same `CHUNK` windows; `stream_features` batches of the same clips),
    because batch shapes change float results (by up to 2e-6 for the front end's batches).
    The tail kept between blocks is at most one model call's samples (CHUNK * stride + window)
    or one front-end batch (100 clips, 1.6 M samples at the defaults), plus the block itself.
    """

    def __init__(self, model: ExportedModel, clip_stride_ms: float) -> None:
        spec = model.spec
        self.model, self.spec = model, spec
        self.window = spec.desired_samples
        self.stride, self.from_features = stride_plan(model, clip_stride_ms)  # as score_stream
        hop = spec.window_stride_samples
        self.samples_seen = 0
        self.seconds = 0.0  # time spent in push/finish (features + model), as score_stream's
        self._finished = False
        self._next_window = 0  # first window not scored yet
        self._samples = np.zeros(0, np.float32)  # stream samples from _samples_start on
        self._samples_start = 0
        # Features path: frames from _frames_start on; front-end batches of stream_features'
        # own size, aligned like its batches over the whole stream.
        self._frames = np.zeros((0, spec.shape[1]), np.float32)
        self._frames_start = 0
        self._batch_frames = STREAM_BATCH * spec.spectrogram_length
        self._batch_need = (self._batch_frames - spec.spectrogram_length) * hop + self.window

    @property
    def audio_seconds(self) -> float:
        return self.samples_seen / self.spec.sample_rate

    def push(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the next samples; scores and times of the windows now complete."""
        if self._finished:
            raise KwsError("BlockScorer.push after finish")
        block = np.asarray(block, np.float32)
        if block.ndim != 1:
            raise KwsError(f"the stream must be mono 1-D samples, got a block of {block.shape}")
        t0 = time.perf_counter()
        self._samples = np.concatenate([self._samples, block])
        self.samples_seen += len(block)
        out = self._advance(final=False)
        self.seconds += time.perf_counter() - t0
        return out

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """End of stream: the remaining windows (the last, short model call)."""
        if self._finished:
            raise KwsError("BlockScorer.finish called twice")
        self._finished = True
        if self.samples_seen < self.window:
            raise too_short(self.samples_seen, self.spec)
        t0 = time.perf_counter()
        out = self._advance(final=True)
        self.seconds += time.perf_counter() - t0
        return out

    def _advance(self, final: bool) -> tuple[np.ndarray, np.ndarray]:
        total = len(window_starts(self.samples_seen, self.window, self.stride))
        if self.from_features:
            self._extract_frames(final)
        scores, first = [], self._next_window
        while self._next_window < total:
            w0 = self._next_window
            w1 = min(w0 + CHUNK, total)
            if w1 - w0 < CHUNK and not final:
                break  # a short call only at the very end, as in score_stream
            if not self._ready(w1):
                break
            scores.append(self._model_call(w0, w1))
            self._next_window = w1
            self._drop_before(w1)
        starts = np.arange(first, self._next_window, dtype=np.int64) * self.stride
        times = (starts + self.window // 2) * 1000 // self.spec.sample_rate
        if scores:
            return np.concatenate(scores), times
        return np.zeros((0, len(self.model.labels)), np.float32), times

    def _extract_frames(self, final: bool) -> None:
        """Front-end batches whose samples have all arrived (at the end: the rest, padded)."""
        hop = self.spec.window_stride_samples
        # At the end, a rest shorter than one front-end window has no frames (stream_features
        # cannot take it).
        rest = self.spec.window_size_samples
        while len(self._samples) >= self._batch_need or (final and len(self._samples) >= rest):
            piece = self._samples[: self._batch_need]
            frames = stream_features(piece, self.spec)
            self._frames = np.concatenate([self._frames, frames])
            self._samples = self._samples[self._batch_frames * hop :]
            self._samples_start += self._batch_frames * hop
            if len(frames) < self._batch_frames:
                self._samples = self._samples[:0]  # the stream's end: nothing more to extract
                break

    def _ready(self, w1: int) -> bool:
        """Whether windows up to w1 (exclusive) can be scored with what is buffered."""
        last = (w1 - 1) * self.stride
        if self.from_features:
            hop = self.spec.window_stride_samples
            need = last // hop + self.spec.spectrogram_length
            return self._frames_start + len(self._frames) >= need
        return self._samples_start + len(self._samples) >= last + self.window

    def _model_call(self, w0: int, w1: int) -> np.ndarray:
        """Scores of windows w0..w1-1, given to the model as one array (as score_stream)."""
        if self.from_features:
            step = self.stride // self.spec.window_stride_samples
            lo = w0 * step - self._frames_start
            hi = (w1 - 1) * step - self._frames_start + self.spec.spectrogram_length
            view = sliding_window_view(self._frames[lo:hi], self.spec.spectrogram_length, axis=0)
            view = view[::step].transpose(0, 2, 1)
            return self.model.scores_from_features(np.ascontiguousarray(view))
        lo = w0 * self.stride - self._samples_start
        hi = (w1 - 1) * self.stride - self._samples_start + self.window
        view = sliding_window_view(self._samples[lo:hi], self.window)[:: self.stride]
        return self.model.scores(np.ascontiguousarray(view))

    def _drop_before(self, w: int) -> None:
        """Forget what no window from w on needs."""
        if self.from_features:
            first = w * (self.stride // self.spec.window_stride_samples)
            cut = min(max(first - self._frames_start, 0), len(self._frames))
            self._frames = self._frames[cut:]
            self._frames_start += cut
        else:
            cut = min(max(w * self.stride - self._samples_start, 0), len(self._samples))
            self._samples = self._samples[cut:]
            self._samples_start += cut


def score_stream_blocks(
    model: ExportedModel, blocks: Iterable[np.ndarray], clip_stride_ms: float
) -> StreamScores:
    """`score_stream` over a stream given as consecutive blocks (a generator, a file read in
    pieces): the same scores and times, without holding the stream in memory."""
    scorer = BlockScorer(model, clip_stride_ms)
    parts = [scorer.push(block) for block in blocks]
    parts.append(scorer.finish())
    scores = np.concatenate([p[0] for p in parts])
    times = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return StreamScores(scores, times, scorer.seconds, scorer.audio_seconds)
