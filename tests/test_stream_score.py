from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kws_core.infra.errors import DataError
from kws_core.streaming import (
    Detection,
    read_ground_truth,
    recognize_stream,
    score_detections,
    sweep_thresholds,
    threshold_for_target,
    write_ground_truth,
)

TRUTH = [("yes", 1000), ("no", 4000), ("_unknown_", 7000), ("yes", 10000), ("no", 13000)]
DETECTIONS = [
    ("no", 13751),  # 751 ms from the nearest word: false positive (given out of order)
    ("yes", 1300),  # correct
    ("yes", 1500),  # the same word again: its truth is taken
    ("yes", 4200),  # a "no" was said: wrong
    ("_unknown_", 4000),  # ignored
    ("_silence_", 5000),  # ignored
    ("no", 7500),  # fired on an unknown word: wrong, and a false accept
    ("yes", 10750),  # exactly at the tolerance: correct
]


def test_outcomes_with_unique_matching():
    stats = score_detections(DETECTIONS, TRUTH, duration_s=20, time_tolerance_ms=750)
    assert [(e.time_ms, e.outcome) for e in stats.events] == [
        (1300, "correct"),
        (1500, "false_positive"),
        (4000, "ignored"),
        (4200, "wrong"),
        (5000, "ignored"),
        (7500, "wrong"),
        (10750, "correct"),
        (13751, "false_positive"),
    ]
    assert stats.events[3].truth_label == "no" and stats.events[3].truth_time_ms == 4000
    assert (stats.correct, stats.wrong, stats.false_positives) == (2, 2, 2)
    assert (stats.ground_truth_words, stats.keyword_words, stats.matched) == (5, 4, 4)
    assert stats.unknown_accepts == 1 and stats.false_accepts == 3
    assert stats.false_accepts_per_hour == pytest.approx(3 / (20 / 3600))
    assert stats.false_rejects == 2 and stats.false_reject_rate == pytest.approx(0.5)
    assert stats.summary().splitlines()[0] == (
        "80.0% matched, 40.0% correct, 40.0% wrong, 40.0% false positive"
    )
    assert "540.00 per hour" in stats.summary()
    assert "false rejects: 2 of 4 keywords = 50.0%" in stats.summary()
    assert stats.events[0].line() == "1300ms yes: nan (Correct) [truth yes at 1000ms]"


def test_tutorial_matching_counts_a_repeat_as_wrong():
    stats = score_detections(DETECTIONS, TRUTH, 20, 750, matching="tutorial")
    assert (stats.correct, stats.wrong, stats.false_positives, stats.matched) == (2, 3, 1, 4)


def test_a_word_is_matched_once_and_unique_matching_takes_the_next_free_word():
    truth = [("yes", 1000), ("no", 1600)]
    found = [Detection(1100, "yes", 0.9), Detection(1300, "no", 0.8)]
    unique = score_detections(found, truth, 10, 750)
    assert [e.outcome for e in unique.events] == ["correct", "correct"]
    assert unique.false_rejects == 0
    tutorial = score_detections(found, truth, 10, 750, matching="tutorial")
    assert [e.outcome for e in tutorial.events] == ["correct", "wrong"]
    assert tutorial.matched == 1


def test_no_ground_truth_and_negative_stream():
    stats = score_detections([("yes", 100), ("no", 5000)], [], duration_s=3600)
    assert stats.summary().startswith("No ground truth yet, 2 false positives")
    assert stats.false_accepts_per_hour == 2.0
    assert math.isnan(stats.false_reject_rate)
    assert stats.to_dict()["false_reject_rate"] is None
    # A negative-only stream's truth lists unknown words: keywords fired on them are accepts.
    negative = score_detections([("yes", 1000)], [("_unknown_", 1100)], duration_s=1800)
    assert negative.false_positives == 0 and negative.false_accepts_per_hour == 2.0


def test_ground_truth_file_round_trip(tmp_path):
    path = tmp_path / "truth.txt"
    write_ground_truth(path, [("no", 4000), ("yes", 1000.4), ("_unknown_", 7000)])
    assert read_ground_truth(path) == [("yes", 1000), ("no", 4000), ("_unknown_", 7000)]
    # The tutorial writes "%s, %f" lines; blank lines and comments are fine.
    path.write_text("# label, time\nyes, 1234.600000\n\nno,99\n")
    assert read_ground_truth(path) == [("no", 99), ("yes", 1235)]
    assert [p.name for p in tmp_path.iterdir()] == ["truth.txt"]


@pytest.mark.parametrize(
    "line, message",
    [("yes 1000", "malformed"), ("yes, soon", "not a number"), ("yes, -5", ">= 0")],
)
def test_malformed_ground_truth_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "truth.txt"
    path.write_text(f"yes, 100\nno, 200\n{line}\n")
    with pytest.raises(DataError, match=rf"truth.txt line 3: .*{message}"):
        read_ground_truth(path)


def test_missing_ground_truth_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt not found"):
        read_ground_truth(tmp_path / "nope.txt")


LABELS = ["_silence_", "_unknown_", "yes", "no"]


def bump_stream(seed: int = 0):
    """60 s of results every 30 ms: keyword bumps of varied strength, weaker spurious ones."""
    rng = np.random.default_rng(seed)
    times = np.arange(0, 60_000, 30)
    scores = np.zeros((times.size, 4))
    scores[:, 0] = 0.9
    scores[:, 1] = 0.1
    truth = []
    for k, centre in enumerate(range(2000, 58_000, 3000)):
        word = 2 + k % 2
        spurious = k % 4 == 3
        strength = rng.uniform(0.56, 0.64) if spurious else rng.uniform(0.66, 0.98)
        if not spurious:
            truth.append((LABELS[word], centre))
        rows = np.abs(times - centre) <= 450
        scores[rows] = 0.0
        scores[rows, word] = strength
        scores[rows, 0] = 1 - strength
    return scores, times, truth


def test_sweep_is_monotone_and_matches_direct_scoring():
    scores, times, truth = bump_stream()
    thresholds = np.linspace(0, 1, 21)
    df = sweep_thresholds(scores, times, LABELS, truth, 60, thresholds, time_tolerance_ms=750)
    assert list(df.threshold) == sorted(thresholds)
    fa, frr = df.false_accepts_per_hour.to_numpy(), df.false_reject_rate.to_numpy()
    assert np.all(np.diff(fa) <= 0) and np.all(np.diff(frr) >= 0)
    assert fa[0] > 0 and frr[0] == 0  # low threshold: every word, plus the spurious bumps
    last = df.iloc[-1]
    assert (last.detections, last.false_accepts_per_hour, last.false_reject_rate) == (0, 0, 1)
    row = df.iloc[5]
    direct = score_detections(
        recognize_stream(scores, times, LABELS, detection_threshold=row.threshold), truth, 60
    )
    assert (row.correct, row.wrong, row.false_positives) == (
        direct.correct,
        direct.wrong,
        direct.false_positives,
    )


def test_threshold_for_target():
    scores, times, truth = bump_stream()
    df = sweep_thresholds(scores, times, LABELS, truth, 60, np.linspace(0, 1, 21))
    choice = threshold_for_target(df, 0.0)
    assert choice.threshold is not None
    below = df[df.threshold < choice.threshold]
    assert (below.false_accepts_per_hour > 0).all()
    assert df.set_index("threshold").loc[choice.threshold, "false_accepts_per_hour"] == 0
    assert "false-reject rate" in choice.reason

    hard = pd.DataFrame({"threshold": [0.5, 0.9], "false_accepts_per_hour": [9.0, 3.0]})
    threshold, reason = threshold_for_target(hard, 0.5)
    assert threshold is None and "best 3.00 at threshold 0.9" in reason
    assert threshold_for_target(hard.iloc[:0], 0.5).threshold is None


def test_sweep_speed_on_an_hour_of_results():
    import time

    rng = np.random.default_rng(0)
    n = 120_000
    scores = rng.dirichlet(np.ones(12) * 0.3, size=n)
    times = np.arange(n) * 30
    start = time.perf_counter()
    df = sweep_thresholds(
        scores, times, [f"l{i}" for i in range(12)], [], 3600, np.linspace(0, 1, 50)
    )
    assert len(df) == 50
    assert time.perf_counter() - start < 10
