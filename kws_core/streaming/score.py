"""Score detections against a stream's ground truth, and sweep the detection threshold.

Matching follows the tutorial's `CalculateAccuracyStats` (accuracy_utils.py / .cc): detections
are taken in time order and each looks at the ground-truth words within `time_tolerance_ms`
(inclusive, |t_detection - t_truth| <= tolerance), earliest first:

* ``matching="unique"`` (default): the first of them *not matched yet* is the match; the same
  label is correct, another label is wrong. With none left (no word near it, or only words
  already taken by earlier detections) the detection is a false positive, so firing twice for
  one word counts one correct and one false positive.
* ``matching="tutorial"``: the tutorial exactly: the first word in the window is the match even
  if already taken; correct only if the label agrees and it was not taken, otherwise wrong.

`_silence_` and `_unknown_` detections are ignored (listed in `events` as "ignored"). Ground
truth `_unknown_` words stay in the truth list: a keyword fired on one is "wrong", as in the
tutorial, and also counts as a false accept (a keyword reported where none was said).

The tutorial's percentages are of all ground-truth words. Added product metrics:
false accepts per hour = (false positives + keywords fired on `_unknown_`/`_silence_` words) /
audio hours, and false-reject rate = keyword words without a correct detection / keyword words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from kws_core.config import SILENCE_LABEL, UNKNOWN_LABEL
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import DataError, KwsError
from kws_core.streaming.recognize import Detection, detect, smooth_scores

NOT_KEYWORDS = frozenset({SILENCE_LABEL, UNKNOWN_LABEL})
Matching = Literal["unique", "tutorial"]
Truth = list[tuple[str, int]]


# ---------------------------------------------------------------- ground-truth files
def read_ground_truth(
    path: str | Path,
    labels: Sequence[str] | None = None,
    stream_ms: float | None = None,
    stream: str | Path | None = None,
) -> Truth:
    """Read `label, time_ms` lines (the tutorial's format), sorted by time.

    Blank lines and `#` comments are skipped; anything else malformed is a DataError naming the
    file and line (the tutorial silently skipped such lines). Given the model's `labels`, a
    word that is none of them (nor `_unknown_`/`_silence_`) is a DataError, and given the
    length `stream_ms` of the `stream` it belongs to, so is a time past its end: either could
    only be scored as a false reject.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"ground-truth file {path} not found; generate it with the streaming test wav"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"ground-truth file {path} is unreadable ({e})") from None
    rows: Truth = []
    strangers: dict[str, int] = {}  # label the model lacks -> its first line
    known = None if labels is None else set(labels) | NOT_KEYWORDS
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label, time_ms = _parse_truth_line(line, path, number)
        if stream_ms is not None and time_ms > stream_ms:
            which = f" {stream}" if stream else ""
            raise DataError(
                f"{path} line {number}: time {time_ms} ms is past the end of the stream{which} "
                f"({stream_ms:.0f} ms long); use the ground truth written with this stream"
            )
        if known is not None and label not in known:
            strangers.setdefault(label, number)
        rows.append((label, time_ms))
    if strangers:
        found = ", ".join(f"{label!r} (line {n})" for label, n in list(strangers.items())[:5])
        if len(strangers) > 5:
            found += f" and {len(strangers) - 5} more"
        raise DataError(
            f"{path}: ground-truth label(s) {found} are not labels of the model "
            f"({', '.join(labels or [])}); label words the model was not trained on "
            "`_unknown_`, or score with a model trained on them"
        )
    rows.sort(key=lambda r: r[1])  # stable: equal times keep file order
    return rows


def _parse_truth_line(line: str, path: Path, number: int) -> tuple[str, int]:
    parts = [p.strip() for p in line.split(",")]
    fix = "expected `label, time_ms` (e.g. `yes, 1250`)"
    if len(parts) != 2 or not parts[0]:
        raise DataError(f"{path} line {number}: {line.strip()!r} is malformed; {fix}")
    try:
        time_ms = float(parts[1])
    except ValueError:
        raise DataError(f"{path} line {number}: time {parts[1]!r} is not a number; {fix}") from None
    if not math.isfinite(time_ms) or time_ms < 0:
        raise DataError(f"{path} line {number}: time {parts[1]!r} must be >= 0 ms; {fix}")
    return parts[0], round(time_ms)


def write_ground_truth(path: str | Path, rows: Iterable[tuple[str, float]]) -> Path:
    """Write `label, time_ms` lines atomically (whole milliseconds)."""
    lines = []
    for label, time_ms in rows:
        if not label or any(c in label for c in ",\n\r"):
            raise KwsError(
                f"ground-truth label {label!r} cannot be written (empty, comma, newline)"
            )
        lines.append(f"{label}, {round(time_ms)}\n")
    return atomic_write_text(path, "".join(lines))


# ---------------------------------------------------------------- scoring
@dataclass(frozen=True)
class MatchEvent:
    """One detection and what it was scored as (for `--verbose`)."""

    time_ms: int
    label: str
    score: float
    outcome: str  # correct | wrong | false_positive | ignored
    truth_label: str | None = None
    truth_time_ms: int | None = None

    def line(self) -> str:
        """The tutorial's verbose line, e.g. `1230ms yes: 0.83 (Correct)`."""
        state = {
            "correct": "Correct",
            "wrong": "Wrong",
            "false_positive": "False Positive",
            "ignored": "Ignored",
        }[self.outcome]
        truth = (
            f" [truth {self.truth_label} at {self.truth_time_ms}ms]"
            if self.truth_label is not None
            else ""
        )
        return f"{self.time_ms}ms {self.label}: {self.score:.3f} ({state}){truth}"


def _pct(count: int, total: int) -> float:
    return 100.0 * count / total if total else math.nan


@dataclass
class StreamingStats:
    """Counts of a scored stream plus the tutorial's percentages and FA/h, FRR."""

    ground_truth_words: int
    keyword_words: int
    matched: int  # distinct ground-truth words matched by some detection
    correct: int
    wrong: int
    false_positives: int
    unknown_accepts: int  # keyword detections matched to an _unknown_/_silence_ truth word
    duration_s: float
    time_tolerance_ms: float
    events: list[MatchEvent] = field(default_factory=list, repr=False)

    @property
    def matched_pct(self) -> float:
        return _pct(self.matched, self.ground_truth_words)

    @property
    def correct_pct(self) -> float:
        return _pct(self.correct, self.ground_truth_words)

    @property
    def wrong_pct(self) -> float:
        return _pct(self.wrong, self.ground_truth_words)

    @property
    def false_positive_pct(self) -> float:
        return _pct(self.false_positives, self.ground_truth_words)

    @property
    def false_accepts(self) -> int:
        return self.false_positives + self.unknown_accepts

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts / (self.duration_s / 3600.0)

    @property
    def false_rejects(self) -> int:
        return self.keyword_words - self.correct

    @property
    def false_reject_rate(self) -> float:
        """Share (0..1) of keyword words not detected correctly; NaN without keywords."""
        return self.false_rejects / self.keyword_words if self.keyword_words else math.nan

    def summary(self) -> str:
        """The tutorial's accuracy line, then false accepts and false rejects."""
        if self.ground_truth_words == 0:
            lines = [f"No ground truth yet, {self.false_positives} false positives"]
        else:
            lines = [
                f"{self.matched_pct:.1f}% matched, {self.correct_pct:.1f}% correct, "
                f"{self.wrong_pct:.1f}% wrong, {self.false_positive_pct:.1f}% false positive"
            ]
        hours = self.duration_s / 3600.0
        lines.append(
            f"false accepts: {self.false_accepts} in {hours:.3g} h = "
            f"{self.false_accepts_per_hour:.2f} per hour ({self.false_positives} false "
            f"positives, {self.unknown_accepts} on unknown words)"
        )
        if self.keyword_words:
            lines.append(
                f"false rejects: {self.false_rejects} of {self.keyword_words} keywords = "
                f"{100 * self.false_reject_rate:.1f}%"
            )
        else:
            lines.append("false rejects: no keywords in the ground truth")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Counts and rates for JSON reports (NaN becomes None)."""
        out = {k: v for k, v in asdict(self).items() if k != "events"}
        for name in (
            "matched_pct",
            "correct_pct",
            "wrong_pct",
            "false_positive_pct",
            "false_accepts",
            "false_accepts_per_hour",
            "false_rejects",
            "false_reject_rate",
        ):
            value = getattr(self, name)
            out[name] = None if isinstance(value, float) and math.isnan(value) else value
        return out


def _as_detection(item: Detection | Sequence[Any]) -> Detection:
    if isinstance(item, Detection):
        return item
    label, time_ms, *rest = item  # (label, time_ms[, score]), the tutorial's found words
    return Detection(int(time_ms), str(label), float(rest[0]) if rest else math.nan)


def score_detections(
    detections: Iterable[Detection | Sequence[Any]],
    truth: Sequence[tuple[str, float]],
    duration_s: float,
    time_tolerance_ms: float = 750,
    matching: Matching = "unique",
) -> StreamingStats:
    """Score detections against ground truth `(label, time_ms)`; see the module docstring."""
    if not duration_s > 0:
        raise KwsError(f"duration_s must be > 0 to compute false accepts per hour ({duration_s})")
    if time_tolerance_ms < 0:
        raise KwsError(f"time_tolerance_ms must be >= 0 (got {time_tolerance_ms})")
    if matching not in ("unique", "tutorial"):
        raise KwsError(f"matching must be 'unique' or 'tutorial' (got {matching!r})")
    ordered = sorted(((str(lab), float(t)) for lab, t in truth), key=lambda r: r[1])
    truth_times = np.array([t for _, t in ordered], dtype=np.float64)
    taken = np.zeros(len(ordered), dtype=bool)
    dets = sorted((_as_detection(d) for d in detections), key=lambda d: d.time_ms)
    counts = {"correct": 0, "wrong": 0, "false_positive": 0, "unknown_accepts": 0}
    events: list[MatchEvent] = []
    for det in dets:
        if det.label in NOT_KEYWORDS:
            events.append(MatchEvent(det.time_ms, det.label, det.score, "ignored"))
            continue
        k = _match(det.time_ms, truth_times, taken, time_tolerance_ms, matching)
        if k is None:
            counts["false_positive"] += 1
            events.append(MatchEvent(det.time_ms, det.label, det.score, "false_positive"))
            continue
        label, t = ordered[k]
        outcome = "correct" if label == det.label and not taken[k] else "wrong"
        counts[outcome] += 1
        counts["unknown_accepts"] += label in NOT_KEYWORDS
        taken[k] = True
        events.append(MatchEvent(det.time_ms, det.label, det.score, outcome, label, round(t)))
    return StreamingStats(
        ground_truth_words=len(ordered),
        keyword_words=sum(label not in NOT_KEYWORDS for label, _ in ordered),
        matched=int(taken.sum()),
        correct=counts["correct"],
        wrong=counts["wrong"],
        false_positives=counts["false_positive"],
        unknown_accepts=counts["unknown_accepts"],
        duration_s=float(duration_s),
        time_tolerance_ms=float(time_tolerance_ms),
        events=events,
    )


def _match(
    time_ms: float, truth_times: np.ndarray, taken: np.ndarray, tolerance: float, matching: str
) -> int | None:
    """Index of the ground-truth word a detection at time_ms matches, or None."""
    lo = int(np.searchsorted(truth_times, time_ms - tolerance, side="left"))
    hi = int(np.searchsorted(truth_times, time_ms + tolerance, side="right"))
    if lo >= hi:
        return None
    if matching == "tutorial":
        return lo
    free = np.flatnonzero(~taken[lo:hi])
    return lo + int(free[0]) if free.size else None


# ---------------------------------------------------------------- threshold sweep
SWEEP_COLUMNS = [
    "threshold",
    "detections",
    "correct",
    "wrong",
    "false_positives",
    "false_accepts",
    "false_accepts_per_hour",
    "false_rejects",
    "false_reject_rate",
    "matched_pct",
    "correct_pct",
    "wrong_pct",
    "false_positive_pct",
]


def sweep_thresholds(
    scores: np.ndarray,
    times_ms: np.ndarray,
    labels: Sequence[str],
    truth: Sequence[tuple[str, float]],
    duration_s: float,
    thresholds: Iterable[float],
    average_window_ms: float = 1000,
    suppression_ms: float = 500,
    minimum_count: int = 3,
    repeat_after_suppression: bool = False,
    time_tolerance_ms: float = 750,
    matching: Matching = "unique",
) -> pd.DataFrame:
    """Score the stream at every detection threshold (one row each, sorted by threshold).

    Window averages are computed once; only the state machine and the matching run per
    threshold. For FA/h on a separate negative-only stream, sweep it too and join on threshold.
    """
    smoothed = smooth_scores(scores, times_ms, labels, average_window_ms, minimum_count)
    rows = []
    for threshold in sorted({float(t) for t in thresholds}):
        found = detect(smoothed, threshold, suppression_ms, repeat_after_suppression)
        stats = score_detections(found, truth, duration_s, time_tolerance_ms, matching)
        rows.append(
            {
                "threshold": threshold,
                "detections": sum(d.label not in NOT_KEYWORDS for d in found),
                "correct": stats.correct,
                "wrong": stats.wrong,
                "false_positives": stats.false_positives,
                "false_accepts": stats.false_accepts,
                "false_accepts_per_hour": stats.false_accepts_per_hour,
                "false_rejects": stats.false_rejects,
                "false_reject_rate": stats.false_reject_rate,
                "matched_pct": stats.matched_pct,
                "correct_pct": stats.correct_pct,
                "wrong_pct": stats.wrong_pct,
                "false_positive_pct": stats.false_positive_pct,
            }
        )
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


class ThresholdChoice(NamedTuple):
    """The chosen threshold (None when no swept threshold meets the target) and why."""

    threshold: float | None
    reason: str


def threshold_for_target(df: pd.DataFrame, target_fa_per_hour: float) -> ThresholdChoice:
    """The lowest swept threshold whose false accepts per hour are <= the target.

    The lowest one keeps the false-reject rate lowest; FA/h need not fall strictly with the
    threshold (suppression interacts), so every row is checked, not just the first crossing.
    """
    if df.empty:
        return ThresholdChoice(None, "no thresholds were swept")
    missing = {"threshold", "false_accepts_per_hour"} - set(df.columns)
    if missing:
        raise KwsError(f"sweep table lacks columns {sorted(missing)}; use sweep_thresholds()")
    ok = df[df["false_accepts_per_hour"] <= target_fa_per_hour].sort_values("threshold")
    if ok.empty:
        best = df.loc[df["false_accepts_per_hour"].idxmin()]
        return ThresholdChoice(
            None,
            f"no swept threshold reaches {target_fa_per_hour:g} false accepts/hour (best "
            f"{best['false_accepts_per_hour']:.2f} at threshold {best['threshold']:g}); sweep "
            "higher thresholds, a longer negative stream or a better model",
        )
    row = ok.iloc[0]
    frr = row.get("false_reject_rate", math.nan)
    frr_text = "" if pd.isna(frr) else f", false-reject rate {100 * frr:.1f}%"
    return ThresholdChoice(
        float(row["threshold"]),
        f"threshold {row['threshold']:g} gives {row['false_accepts_per_hour']:.2f} false "
        f"accepts/hour (target {target_fa_per_hour:g}){frr_text}",
    )
