from __future__ import annotations

import numpy as np
import pytest

from kws_core.infra.errors import KwsError
from kws_core.streaming import Detection, RecognizeCommands, recognize_stream

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def onehot(label: str, value: float = 1.0) -> np.ndarray:
    row = np.zeros(len(LABELS))
    row[LABELS.index(label)] = value
    return row


def feed(rc: RecognizeCommands, rows: list[tuple[int, np.ndarray]]) -> list:
    return [rc.process_latest_result(scores, t) for t, scores in rows]


def new_commands(results, rows) -> list[tuple[int, str]]:
    return [
        (t, r.found_command) for (t, _), r in zip(rows, results, strict=True) if r.is_new_command
    ]


def test_below_threshold_reports_nothing():
    rc = RecognizeCommands(LABELS, detection_threshold=0.2)
    rows = [(t, np.array([0.1, 0.1, 0.15, 0.1])) for t in range(0, 3000, 100)]
    results = feed(rc, rows)
    assert not any(r.is_new_command for r in results)
    assert results[-1].found_command == "yes"
    assert results[-1].score == pytest.approx(0.15)


def test_needs_minimum_count_results():
    rc = RecognizeCommands(LABELS, average_window_ms=1000, minimum_count=3)
    rows = [(t, onehot("yes")) for t in (0, 300, 600, 900)]
    results = feed(rc, rows)
    # Too few results: the previous label (initially _silence_), score 0, not new.
    assert [(r.found_command, r.score, r.is_new_command) for r in results[:2]] == [
        ("_silence_", 0.0, False),
        ("_silence_", 0.0, False),
    ]
    assert (results[2].found_command, results[2].is_new_command) == ("yes", True)
    assert results[2].score == pytest.approx(1.0)
    assert not results[3].is_new_command


def test_needs_a_quarter_window_of_results():
    # The tutorial's second bail-out: results must span average_window_ms / 4.
    rc = RecognizeCommands(LABELS, average_window_ms=1000, minimum_count=3)
    rows = [(t, onehot("yes")) for t in range(0, 400, 50)]
    assert new_commands(feed(rc, rows), rows) == [(250, "yes")]


def test_average_drops_results_older_than_the_window():
    rc = RecognizeCommands(LABELS, average_window_ms=1000, minimum_count=1)
    rows = [(0, onehot("yes", 0.9))] + [
        (t, onehot("_silence_", 0.05)) for t in range(100, 1200, 100)
    ]
    results = {t: r for (t, _), r in zip(rows, feed(rc, rows), strict=True)}
    # At 1000 ms the result at 0 ms is exactly one window old and still counts (11 results).
    assert results[1000].found_command == "yes"
    assert results[1000].score == pytest.approx(0.9 / 11)
    # At 1100 ms it has dropped out.
    assert results[1100].found_command == "_silence_"
    assert results[1100].score == pytest.approx(0.05)


def test_same_label_repeats_only_after_suppression():
    rows = [(t, onehot("yes")) for t in range(0, 2001, 100)]
    settings = dict(average_window_ms=300, minimum_count=1, suppression_ms=500)
    # micro_speech's rule (label changes OR suppression passed): again every suppression_ms.
    rc = RecognizeCommands(LABELS, **settings, repeat_after_suppression=True)
    assert new_commands(feed(rc, rows), rows) == [
        (100, "yes"),
        (700, "yes"),
        (1300, "yes"),
        (1900, "yes"),
    ]
    # TensorFlow's speech_commands rule, the default (label changes AND suppression passed).
    rc = RecognizeCommands(LABELS, **settings)
    assert new_commands(feed(rc, rows), rows) == [(100, "yes")]


def test_a_different_label_under_both_rules():
    rows = [(t, onehot("yes")) for t in range(0, 600, 100)]
    rows += [(t, onehot("no")) for t in range(600, 1500, 100)]
    settings = dict(average_window_ms=200, minimum_count=1, suppression_ms=1000)
    rc = RecognizeCommands(LABELS, **settings, repeat_after_suppression=True)
    assert new_commands(feed(rc, rows), rows) == [(100, "yes"), (700, "no")]
    rc = RecognizeCommands(LABELS, **settings)  # the TF rule also waits for suppression_ms
    assert new_commands(feed(rc, rows), rows) == [(100, "yes"), (1200, "no")]


def test_silence_in_between_lets_a_word_repeat_under_the_tutorial_rule():
    rows = [(t, onehot("yes")) for t in range(0, 500, 100)]
    rows += [(t, onehot("_silence_")) for t in range(500, 1500, 100)]
    rows += [(t, onehot("yes")) for t in range(1500, 2500, 100)]
    rc = RecognizeCommands(
        LABELS, average_window_ms=200, minimum_count=1, repeat_after_suppression=False
    )
    found = new_commands(feed(rc, rows), rows)
    assert [label for _, label in found] == ["yes", "_silence_", "yes"]


def test_out_of_order_and_wrong_length_are_errors():
    rc = RecognizeCommands(LABELS)
    rc.process_latest_result(onehot("yes"), 100)
    rc.process_latest_result(onehot("yes"), 100)  # equal times are fine
    with pytest.raises(KwsError, match="time order.*50 ms came after 100 ms"):
        rc.process_latest_result(onehot("yes"), 50)
    with pytest.raises(KwsError, match="3 scores but there are 4 labels"):
        rc.process_latest_result(np.ones(3), 200)
    with pytest.raises(KwsError, match="NaN"):
        rc.process_latest_result(np.full(4, np.nan), 200)
    with pytest.raises(KwsError, match="time order"):
        recognize_stream(np.ones((3, 4)), np.array([0, 30, 20]), LABELS)
    with pytest.raises(KwsError, match="4 labels"):
        recognize_stream(np.ones((3, 5)), np.array([0, 30, 60]), LABELS)
    with pytest.raises(KwsError, match="twice"):
        RecognizeCommands(["yes", "yes"])


def loop_detections(scores, times, labels, **settings) -> list[Detection]:
    rc = RecognizeCommands(labels, **settings)
    found = []
    for row, t in zip(scores, times, strict=True):
        r = rc.process_latest_result(row, int(t))
        if r.is_new_command and r.found_command != "_silence_":
            found.append(Detection(int(t), r.found_command, r.score))
    return found


def random_stream(rng: np.random.Generator, n: int, n_labels: int):
    times = np.cumsum(rng.choice([0, 10, 30, 30, 30, 70], size=n))
    logits = rng.normal(size=(n, n_labels))
    logits[:, 0] += 2.0  # mostly silence, with bursts of other labels
    for start in rng.integers(0, n, size=n // 40):
        logits[start : start + rng.integers(5, 40), rng.integers(n_labels)] += 5.0
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), times


@pytest.mark.parametrize("seed", range(12))
def test_recognize_stream_equals_the_one_by_one_loop(seed):
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(3, 8))
    labels = ["_silence_", "_unknown_"] + [f"w{i}" for i in range(n_labels - 2)]
    scores, times = random_stream(rng, 1500, n_labels)
    settings = dict(
        average_window_ms=int(rng.choice([100, 300, 1000])),
        detection_threshold=float(rng.uniform(0.1, 0.8)),
        suppression_ms=int(rng.choice([0, 200, 500, 1500])),
        minimum_count=int(rng.integers(1, 5)),
        repeat_after_suppression=bool(seed % 2),
    )
    expected = loop_detections(scores, times, labels, **settings)
    assert len(expected) > 3  # the case must exercise the state machine
    assert recognize_stream(scores, times, labels, **settings) == expected


def test_recognize_stream_of_nothing():
    assert recognize_stream(np.zeros((0, 4)), np.zeros(0, dtype=int), LABELS) == []
