"""Turn a stream of per-window model scores into discrete command detections.

This is the tutorial's `RecognizeCommands` (speech_commands/recognize_commands.py and .cc):

* results older than `average_window_ms` before the latest one are dropped (a result exactly
  `average_window_ms` old is kept), the rest are averaged per label;
* with fewer than `minimum_count` results in the window, or when they span less than a quarter
  of the window (the tutorial's second bail-out), the answer is the previous top label, score 0,
  not new;
* the top averaged label is a *new* command when its score is above `detection_threshold`, it
  differs from the previously reported label AND more than `suppression_ms` have passed since
  that report (TensorFlow's speech_commands rule, the default). Time since the last report
  counts as infinite while the previous label is `_silence_` (its start value).

`repeat_after_suppression=True` gives the OR rule of TFLite Micro's `RecognizeCommands`
(micro_speech): the same label may fire again once `suppression_ms` has passed. With a 1 s
averaging window a word's average stays high for longer than 500 ms, so the OR rule reports most
words twice: on the default model's 10-minute test stream it raised false positives from 18% to
98.5% of the words at the same false-reject rate, so the TF rule is the default.

Window sums are differences of running float64 cumulative sums, in the streaming class and in
the vectorised `recognize_stream` alike, so both give bit-identical averages and detections.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kws_core.config import SILENCE_LABEL, StreamConfig
from kws_core.infra.errors import ConfigError, KwsError


@dataclass(frozen=True)
class RecognizeResult:
    """What `RecognizeCommands.process_latest_result` says about the latest window."""

    found_command: str
    score: float
    is_new_command: bool


@dataclass(frozen=True)
class Detection:
    """A reported command: when (the result's time), which label, its averaged score."""

    time_ms: int
    label: str
    score: float


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = [str(label) for label in labels]
    if not labels:
        raise KwsError("RecognizeCommands needs at least one label; check the labels file")
    if len(set(labels)) != len(labels):
        dup = next(label for label in labels if labels.count(label) > 1)
        raise KwsError(f"label {dup!r} appears twice in the label list; fix the labels file")
    return labels


def _check_settings(average_window_ms: float, suppression_ms: float, minimum_count: int) -> None:
    if average_window_ms <= 0:
        raise KwsError(f"average_window_ms must be > 0 (got {average_window_ms})")
    if suppression_ms < 0:
        raise KwsError(f"suppression_ms must be >= 0 (got {suppression_ms})")
    if minimum_count < 1:
        raise KwsError(f"minimum_count must be >= 1 (got {minimum_count})")


def _is_new(
    label: str,
    score: float,
    time_ms: int,
    previous_label: str,
    previous_time: int | None,
    threshold: float,
    suppression_ms: float,
    repeat_after_suppression: bool,
) -> bool:
    """The tutorial's decision for one smoothed result (shared by both code paths)."""
    if previous_label == SILENCE_LABEL or previous_time is None:
        since = math.inf
    else:
        since = time_ms - previous_time
    if not score > threshold:
        return False
    if repeat_after_suppression:
        return label != previous_label or since > suppression_ms
    return label != previous_label and since > suppression_ms


class RecognizeCommands:
    """Smooth per-window scores over `average_window_ms` and report new commands."""

    def __init__(
        self,
        labels: Sequence[str],
        average_window_ms: float = 1000,
        detection_threshold: float = 0.2,
        suppression_ms: float = 500,
        minimum_count: int = 3,
        repeat_after_suppression: bool = False,
    ) -> None:
        self.labels = _check_labels(labels)
        _check_settings(average_window_ms, suppression_ms, minimum_count)
        self.average_window_ms = average_window_ms
        self.detection_threshold = detection_threshold
        self.suppression_ms = suppression_ms
        self.minimum_count = minimum_count
        self.repeat_after_suppression = repeat_after_suppression
        # (time, running total *before* this result): a window sum is total_now - front total.
        self._window: deque[tuple[int, np.ndarray]] = deque()
        self._total = np.zeros(len(self.labels), dtype=np.float64)
        self._last_time: int | None = None
        self._previous_label = SILENCE_LABEL
        self._previous_time: int | None = None  # the tutorial's -inf

    def process_latest_result(self, scores: np.ndarray, time_ms: int) -> RecognizeResult:
        """Add the scores of the window at `time_ms` and return the smoothed verdict."""
        row = np.asarray(scores, dtype=np.float64).ravel()
        if row.size != len(self.labels):
            raise KwsError(
                f"result at {time_ms} ms has {row.size} scores but there are "
                f"{len(self.labels)} labels; use the labels file that belongs to the model"
            )
        if not np.all(np.isfinite(row)):
            raise KwsError(f"result at {time_ms} ms contains NaN or infinite scores")
        if self._last_time is not None and time_ms < self._last_time:
            raise KwsError(
                f"results must be fed in time order, but {time_ms} ms came after "
                f"{self._last_time} ms"
            )
        self._last_time = time_ms
        self._window.append((time_ms, self._total))
        self._total = self._total + row  # a new array: stored totals stay untouched
        limit = time_ms - self.average_window_ms
        while self._window[0][0] < limit:
            self._window.popleft()

        count = len(self._window)
        earliest = self._window[0][0]
        if count < self.minimum_count or time_ms - earliest < self.average_window_ms / 4:
            return RecognizeResult(self._previous_label, 0.0, False)

        average = (self._total - self._window[0][1]) / count
        top = int(np.argmax(average))
        label, score = self.labels[top], float(average[top])
        new = _is_new(
            label,
            score,
            time_ms,
            self._previous_label,
            self._previous_time,
            self.detection_threshold,
            self.suppression_ms,
            self.repeat_after_suppression,
        )
        if new:
            self._previous_label, self._previous_time = label, time_ms
        return RecognizeResult(label, score, new)


# ---------------------------------------------------------------- vectorised path
@dataclass(frozen=True)
class SmoothedScores:
    """Per-result window averages, independent of threshold and suppression."""

    times_ms: np.ndarray  # [n] int64
    top_index: np.ndarray  # [n] int64, argmax of the window average
    top_score: np.ndarray  # [n] float64
    valid: np.ndarray  # [n] bool: enough results in the window to decide
    labels: list[str]


def _check_stream(scores: Any, times_ms: Any, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != n_labels:
        raise KwsError(
            f"scores must be an array [results, {n_labels} labels], got shape {scores.shape}; "
            "use the labels file that belongs to the model"
        )
    times = np.asarray(times_ms)
    if times.shape != (scores.shape[0],):
        raise KwsError(f"times_ms has shape {times.shape}, expected ({scores.shape[0]},)")
    if times.size and not np.array_equal(times, np.round(times)):
        raise KwsError("times_ms must be whole milliseconds")
    times = times.astype(np.int64)
    back = np.flatnonzero(np.diff(times) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise KwsError(
            f"results must be in time order, but result {i} at {times[i]} ms came after "
            f"{times[i - 1]} ms"
        )
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
        raise KwsError(f"result at {times[bad[0]]} ms contains NaN or infinite scores")
    return np.ascontiguousarray(scores), times


def smooth_scores(
    scores: np.ndarray,
    times_ms: np.ndarray,
    labels: Sequence[str],
    average_window_ms: float = 1000,
    minimum_count: int = 3,
) -> SmoothedScores:
    """Window averages of every result at once (cumulative sums, as RecognizeCommands)."""
    labels = _check_labels(labels)
    _check_settings(average_window_ms, 0, minimum_count)
    scores, times = _check_stream(scores, times_ms, len(labels))
    n = len(times)
    totals = np.zeros((n + 1, len(labels)), dtype=np.float64)
    np.cumsum(scores, axis=0, out=totals[1:])  # sequential adds, like the running total
    start = np.searchsorted(times, times - average_window_ms, side="left")
    count = np.arange(1, n + 1) - start
    average = (totals[1:] - totals[start]) / count[:, None]
    top = np.argmax(average, axis=1) if n else np.zeros(0, dtype=np.int64)
    top_score = average[np.arange(n), top]
    valid = (count >= minimum_count) & ~(times - times[start] < average_window_ms / 4)
    return SmoothedScores(times, top.astype(np.int64), top_score, valid, labels)


def detect(
    smoothed: SmoothedScores,
    detection_threshold: float = 0.2,
    suppression_ms: float = 500,
    repeat_after_suppression: bool = False,
) -> list[Detection]:
    """Replay RecognizeCommands' state machine over smoothed scores; `_silence_` dropped.

    State only changes at results above the threshold, so it walks runs of same-label
    candidates and jumps over suppressed results with binary search instead of looping rows.
    """
    if suppression_ms < 0:
        raise KwsError(f"suppression_ms must be >= 0 (got {suppression_ms})")
    cand = np.flatnonzero(smoothed.valid & (smoothed.top_score > detection_threshold))
    if cand.size == 0:
        return []
    lab, times = smoothed.top_index[cand], smoothed.times_ms[cand]
    breaks = np.flatnonzero(lab[1:] != lab[:-1]) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, cand.size]
    previous_label, previous_time = SILENCE_LABEL, None
    found: list[Detection] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        label = smoothed.labels[int(lab[s])]
        run = times[s:e]
        j = _first_new(
            label, run, previous_label, previous_time, suppression_ms, repeat_after_suppression
        )
        if j is None:
            continue
        if label == SILENCE_LABEL:
            # Every later result of the run is "new" too (time since silence is infinite),
            # but silence is not a command: only the state matters.
            previous_label, previous_time = label, int(run[-1])
            continue
        while True:
            found.append(Detection(int(run[j]), label, float(smoothed.top_score[cand[s + j]])))
            previous_label, previous_time = label, int(run[j])
            if not repeat_after_suppression:
                break  # the same label can never be new again within this run
            j = int(np.searchsorted(run, run[j] + suppression_ms, side="right"))
            if j >= len(run):
                break
    return found


def _first_new(
    label: str,
    run: np.ndarray,
    previous_label: str,
    previous_time: int | None,
    suppression_ms: float,
    repeat_after_suppression: bool,
) -> int | None:
    """Index of the first result of a same-label run that is a new command, or None."""
    since_infinite = previous_label == SILENCE_LABEL or previous_time is None
    differs = label != previous_label
    if not repeat_after_suppression and not differs:
        return None
    if since_infinite or (repeat_after_suppression and differs):
        return 0
    j = int(np.searchsorted(run, previous_time + suppression_ms, side="right"))
    return j if j < len(run) else None


def recognize_stream(
    scores: np.ndarray,
    times_ms: np.ndarray,
    labels: Sequence[str],
    average_window_ms: float = 1000,
    detection_threshold: float = 0.2,
    suppression_ms: float = 500,
    minimum_count: int = 3,
    repeat_after_suppression: bool = False,
) -> list[Detection]:
    """All new commands of a whole stream of results [n, labels] at times_ms.

    Exactly what feeding RecognizeCommands one result at a time reports as new, minus
    `_silence_` (the tutorial's test_streaming_accuracy drops it too); `_unknown_` is kept.
    """
    smoothed = smooth_scores(scores, times_ms, labels, average_window_ms, minimum_count)
    return detect(smoothed, detection_threshold, suppression_ms, repeat_after_suppression)


def recognize_settings(stream: Any) -> dict[str, Any]:
    """RecognizeCommands keyword arguments from a `StreamConfig` (params.yaml `stream:`)."""
    return {
        "average_window_ms": stream.average_window_ms,
        "detection_threshold": stream.detection_threshold,
        "suppression_ms": stream.suppression_ms,
        "minimum_count": stream.minimum_count,
        "repeat_after_suppression": stream.repeat_after_suppression,
    }


def check_decoder_settings(stream: StreamConfig, clip_duration_ms: float) -> None:
    """ConfigError for params.yaml `stream:` settings that can never detect a word.

    Called before any stream is generated or scored: such settings would otherwise run the
    model for nothing and report a 100% false-reject rate. Results come every `clip_stride_ms`
    and a window holds those at most `average_window_ms` old, so it holds
    floor(window / stride) + 1 of them over floor(window / stride) strides; a decision needs
    `minimum_count` of them spanning a quarter of the window, i.e. window >= max(count - 1, 1)
    strides.
    """
    stride, window, count = stream.clip_stride_ms, stream.average_window_ms, stream.minimum_count
    if stride > clip_duration_ms:
        raise ConfigError(
            f"stream.clip_stride_ms {stride} is longer than the model's {clip_duration_ms:g} ms "
            "clip, so the audio between windows is never heard; set stream.clip_stride_ms to "
            f"at most {clip_duration_ms:g} (e.g. 30 or 80)"
        )
    need = max(count - 1, 1) * stride
    if window < need:
        holds = window // stride + 1
        why = f"stream.minimum_count {count}" if count > 1 else "2 to span a quarter of it"
        lower = (
            "stream.minimum_count or stream.clip_stride_ms"
            if count > 2
            else "stream.clip_stride_ms"
        )
        raise ConfigError(
            f"stream.average_window_ms {window} can never decide: with a result every {stride} "
            f"ms (stream.clip_stride_ms) it holds {holds}, but a decision needs "
            f"{max(count, 2)} ({why}); set stream.average_window_ms to at least {need}, or "
            f"lower {lower}"
        )
    if stream.detection_threshold >= 1:
        raise ConfigError(
            f"stream.detection_threshold {stream.detection_threshold} can never be exceeded "
            "(averaged scores are at most 1); set it below 1 (default 0.2)"
        )
