"""Run an exported model over a long stream: one clip-length window every clip_stride_ms.

When the model can take features (a SavedModel export's `features` signature, or a
features-in export) and the stride is a whole number of front-end hops, the stream's features
are computed once and every window is a view of 98 consecutive frames: overlapping windows no
longer recompute the front end (33x for a 30 ms stride). Otherwise windows are views into the
samples and go through the model's own front end. Either way they reach the model in chunks, so
a SavedModel scores hundreds of windows per call; TFLite models (batch 1 on devices) are fed
one window per interpreter call by `ExportedModel`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from kws_core.errors import KwsError
from kws_core.exported import ExportedModel
from kws_core.features import FRAME_WISE, stream_features

CHUNK = 512  # windows per model call: 512 x 16000 float32 = 33 MB


@dataclass
class StreamScores:
    scores: np.ndarray  # [windows, labels]
    times_ms: np.ndarray  # each window's centre in the stream, int64
    seconds: float  # processing time
    audio_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Processing time / audio time (0.01 = 100x faster than real time)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")


def window_starts(n_samples: int, window: int, stride: int) -> np.ndarray:
    """Start sample of every full window (none when the stream is shorter than one window)."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, stride, dtype=np.int64)


def score_stream(
    model: ExportedModel,
    samples: np.ndarray,
    clip_stride_ms: float,
    progress: bool = False,
) -> StreamScores:
    """Scores of every window. A result is stamped with its window's centre: the ground truth
    marks a word's loudest point, which sits mid-window when the model is most sure."""
    spec = model.spec
    window = spec.desired_samples
    stride = round(clip_stride_ms * spec.sample_rate / 1000)
    if stride < 1:
        raise KwsError(f"stream.clip_stride_ms: {clip_stride_ms} ms is under one sample")
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 1:
        raise KwsError(f"the stream must be mono 1-D samples, got shape {samples.shape}")
    starts = window_starts(len(samples), window, stride)
    if len(starts) == 0:
        raise KwsError(
            f"the stream ({1000 * len(samples) / spec.sample_rate:.0f} ms) is shorter than one "
            f"{spec.clip_duration_ms} ms clip"
        )
    out = np.zeros((len(starts), len(model.labels)), np.float32)
    t0 = time.perf_counter()
    hop = spec.window_stride_samples
    if model.scores_features and spec.preprocess in FRAME_WISE and stride % hop == 0:
        frames = stream_features(samples, spec)
        # [windows, frames, bins] views: window w is frames (w * stride / hop) onwards.
        view = sliding_window_view(frames, spec.spectrogram_length, axis=0)
        view = view[:: stride // hop].transpose(0, 2, 1)
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
