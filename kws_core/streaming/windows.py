"""What every stream scorer shares: the windows of a stream and the scores they get.

`kws_core.streaming.run` (batched, files) and `kws_core.streaming.session` (live, hop by hop)
both place a window every clip_stride_ms from sample 0 and return `StreamScores`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kws_core.export.loader import ExportedModel
from kws_core.features.front_end import FRAME_WISE
from kws_core.infra.errors import KwsError


@dataclass
class StreamScores:
    scores: np.ndarray  # [windows, labels]
    times_ms: np.ndarray  # each window's centre in the stream, int64
    seconds: float  # processing time
    audio_seconds: float
    engine: str = "batch"  # which path scored it: "batch" or "session"

    @property
    def real_time_factor(self) -> float:
        """Processing time / audio time (0.01 = 100x faster than real time)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")


def window_starts(n_samples: int, window: int, stride: int) -> np.ndarray:
    """Start sample of every full window (none when the stream is shorter than one window)."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, stride, dtype=np.int64)


def stride_plan(model: ExportedModel, clip_stride_ms: float) -> tuple[int, bool]:
    """(stride in samples, whether windows are scored from stream features computed once)."""
    spec = model.spec
    stride = round(clip_stride_ms * spec.sample_rate / 1000)
    if stride < 1:
        raise KwsError(f"stream.clip_stride_ms: {clip_stride_ms} ms is under one sample")
    frame_wise = spec.preprocess in FRAME_WISE and stride % spec.window_stride_samples == 0
    return stride, model.scores_features and frame_wise


def too_short(n_samples: int, spec) -> KwsError:
    return KwsError(
        f"the stream ({1000 * n_samples / spec.sample_rate:.0f} ms) is shorter than one "
        f"{spec.clip_duration_ms} ms clip"
    )
