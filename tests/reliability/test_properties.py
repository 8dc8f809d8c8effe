"""Property tests (hypothesis): partition hashing, RecognizeCommands, WAV round trips."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kws_core.config import SILENCE_LABEL
from kws_core.data.partition import PARTITIONS, which_set
from kws_core.infra.wav import inspect_wav, read_wav, write_wav
from kws_core.streaming.recognize import Detection, RecognizeCommands, recognize_stream

# No example database: every run explores afresh, whatever earlier runs left in .hypothesis/.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---------------------------------------------------------------- which_set
# File-name characters; no "/" (a directory separator) and no newline: TensorFlow's
# `_nohash_.*$` does not cross a newline, so such a name keeps its suffix (as in TF).
NAME_CHARS = st.characters(blacklist_characters="/\n\r", blacklist_categories=["Cs"])
speakers = st.text(NAME_CHARS, min_size=1, max_size=20).filter(
    # the first `_nohash_` must be the one we append
    lambda s: (s + "_nohash_").find("_nohash_") == len(s)
)
suffixes = st.text(NAME_CHARS, max_size=20)
directories = st.lists(st.text(NAME_CHARS, min_size=1, max_size=8), max_size=3).map("/".join)
percentages = st.floats(min_value=0, max_value=50, allow_nan=False)
RANK = {"validation": 0, "testing": 1, "training": 2}  # held-out first


@pytest.mark.timeout(30)
@PROPERTY
@given(speakers, suffixes, directories, percentages, percentages)
def test_which_set_depends_on_the_speaker_only(speaker, suffix, folder, val, test):
    """Any directory and anything after `_nohash_` give the speaker's own partition."""
    base = which_set(speaker, val, test)
    assert base in PARTITIONS
    assert which_set(speaker, val, test) == base  # deterministic
    assert which_set(f"{speaker}_nohash_{suffix}", val, test) == base
    assert which_set(f"{folder}/{speaker}_nohash_{suffix}.wav", val, test) == base
    assert which_set(f"/abs/{folder}/{speaker}_nohash_0.wav", val, test) == base


@pytest.mark.timeout(30)
@PROPERTY
@given(
    st.lists(speakers, min_size=1, max_size=30),
    percentages,
    percentages,
    st.floats(min_value=0, max_value=30),
    st.floats(min_value=0, max_value=30),
)
def test_which_set_growing_percentages_only_moves_files_towards_held_out(
    names, val, test, more_val, more_test
):
    """A file is validation if its hash h < val, testing if h < val + test, else training.

    So with val and val + test both not smaller, a file only moves training -> testing ->
    validation; growing only testing leaves validation as it was.
    """
    for name in names:
        before = which_set(name, val, test)
        grown_test = which_set(name, val, test + more_test)
        assert RANK[grown_test] <= RANK[before]
        assert (grown_test == "validation") == (before == "validation")
        grown_val = which_set(name, val + more_val, test)
        assert RANK[grown_val] <= RANK[before]
        assert RANK[which_set(name, val + more_val, test + more_test)] <= RANK[before]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("val,test", [(10.0, 10.0), (25.0, 5.0), (0.0, 30.0), (0.0, 0.0)])
def test_which_set_shares_match_the_percentages(val, test):
    """20,000 random speaker ids (fixed seed): each share within 1 point of its target
    (the binomial standard deviation is at most 0.35 points)."""
    rng = np.random.default_rng(0)
    names = [f"{rng.integers(2**32):08x}_nohash_{rng.integers(5)}.wav" for _ in range(20000)]
    sets = [which_set(n, val, test) for n in names]
    share = {p: 100 * sets.count(p) / len(sets) for p in PARTITIONS}
    assert share["validation"] == pytest.approx(val, abs=1.0)
    assert share["testing"] == pytest.approx(test, abs=1.0)
    assert share["training"] == pytest.approx(100 - val - test, abs=1.0)


# ---------------------------------------------------------------- RecognizeCommands
LABEL_SETS = [
    ["_silence_", "_unknown_", "yes", "no"],
    ["_unknown_", "yes", "no"],  # no silence: every state change is a reported detection
    ["yes", "no"],
]


@st.composite
def score_streams(draw: st.DrawFn) -> dict:
    """Labels, results (times non-decreasing, equal times allowed) and recognizer settings."""
    labels = draw(st.sampled_from(LABEL_SETS))
    n = draw(st.integers(1, 80) | st.integers(20, 80))  # long streams detect more
    steps = draw(arrays(np.int64, n, elements=st.integers(0, 250), fill=st.nothing()))
    # Extremes and ties as well as any value, so averages cross the threshold often.
    value = st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1)
    # fill=nothing: every element drawn, not mostly one fill value
    scores = draw(arrays(np.float64, (n, len(labels)), elements=value, fill=st.nothing()))
    settings_ = {
        "average_window_ms": draw(st.integers(1, 1500)),
        "detection_threshold": draw(st.sampled_from([0.0, 0.2, 0.5]) | st.floats(0, 0.9)),
        "suppression_ms": draw(st.integers(0, 1500)),
        "minimum_count": draw(st.integers(1, 5)),
        "repeat_after_suppression": draw(st.booleans()),
    }
    start = draw(st.integers(0, 10_000))
    return {"labels": labels, "times": start + np.cumsum(steps), "scores": scores, **settings_}


def _settings(case: dict) -> dict:
    return {k: v for k, v in case.items() if k not in ("labels", "times", "scores")}


def _feed(case: dict) -> list[tuple[int, str, float]]:
    """Every state change of the streaming class (new commands, `_silence_` included)."""
    rc = RecognizeCommands(case["labels"], **_settings(case))
    changes = []
    for t, row in zip(case["times"].tolist(), case["scores"], strict=True):
        r = rc.process_latest_result(row, t)
        if r.is_new_command:
            changes.append((t, r.found_command, r.score))
    return changes


@pytest.mark.timeout(60)
@PROPERTY
@given(score_streams())
def test_streaming_class_and_recognize_stream_agree(case):
    """The vectorised twin reports exactly the class's new commands, minus `_silence_`."""
    expected = [Detection(t, label, s) for t, label, s in _feed(case) if label != SILENCE_LABEL]
    got = recognize_stream(case["scores"], case["times"], case["labels"], **_settings(case))
    assert got == expected


@pytest.mark.timeout(60)
@PROPERTY
@given(score_streams())
def test_detections_are_above_threshold_window_averages(case):
    """Each detection is its window's top label, averaged over the results the tutorial
    keeps (at most average_window_ms old, at least minimum_count of them spanning a quarter
    window), and strictly above detection_threshold. Recomputed here by a plain mean."""
    times, scores, labels = case["times"], case["scores"], case["labels"]
    avg_ms, minimum = case["average_window_ms"], case["minimum_count"]
    for t, label, score in _feed(case):
        # Results may share a time: the state change came from one of them.
        candidates = np.flatnonzero(times == t).tolist()
        ok = False
        for j in candidates:
            keep = (times[: j + 1] >= t - avg_ms).nonzero()[0]
            mean = scores[keep].mean(axis=0)
            if (
                len(keep) >= minimum
                and t - times[keep[0]] >= avg_ms / 4
                and np.isclose(mean[labels.index(label)], score, rtol=0, atol=1e-9)
                and np.isclose(mean.max(), score, rtol=0, atol=1e-9)
            ):
                ok = True
                break
        assert ok, (t, label, score)
        assert score > case["detection_threshold"]


@pytest.mark.timeout(60)
@PROPERTY
@given(score_streams())
def test_suppression_between_state_changes(case):
    """What suppression_ms guarantees, per rule (the tutorial's and micro_speech's code).

    Both rules: a label is never new twice in a row within suppression_ms (the state changes
    after a `_silence_` one are exempt: time since `_silence_` counts as infinite).
    TF rule (default): any new command, whatever its label, comes more than suppression_ms
    after the previous non-silence one, so reported detections are > suppression_ms apart.
    OR rule (repeat_after_suppression): a *different* label may fire at once; see
    test_or_rule_lets_a_different_label_fire_inside_suppression.
    """
    suppression = case["suppression_ms"]
    changes = _feed(case)
    for (t0, a, _), (t1, b, _) in zip(changes, changes[1:], strict=False):
        if a == SILENCE_LABEL:
            continue
        if a == b:
            assert t1 - t0 > suppression
        if not case["repeat_after_suppression"]:
            assert a != b
            assert t1 - t0 > suppression
    if not case["repeat_after_suppression"]:
        reported = recognize_stream(
            case["scores"], case["times"], case["labels"], **_settings(case)
        )
        gaps = np.diff([d.time_ms for d in reported])
        assert np.all(gaps > suppression)


@pytest.mark.timeout(10)
def test_or_rule_lets_a_different_label_fire_inside_suppression():
    """The issue's "no two detections closer than suppression_ms" holds for the default TF
    rule only: micro_speech's OR rule reports a label change at once (by design)."""
    labels = ["_unknown_", "yes", "no"]
    yes, no = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    times = np.arange(0, 1000, 100)
    scores = np.stack([yes] * 3 + [no] * 7)
    common = {"average_window_ms": 200, "minimum_count": 1, "suppression_ms": 500}
    tf_rule = recognize_stream(scores, times, labels, **common)
    or_rule = recognize_stream(scores, times, labels, repeat_after_suppression=True, **common)
    # The first result spanning a quarter window is at 100 ms; "no" tops the average at 400.
    assert [(d.time_ms, d.label) for d in tf_rule] == [(100, "yes"), (700, "no")]
    assert [(d.time_ms, d.label) for d in or_rule] == [(100, "yes"), (400, "no")]


# ---------------------------------------------------------------- WAV round trip
RATES = st.sampled_from([8000, 16000, 22050, 44100, 48000]) | st.integers(1, 200_000)
LSB = 1 / 32768  # read_wav divides by 32768; write_wav scales by 32767 and rounds
TOL = 1.5 * LSB  # |round(32767 x) / 32768 - x| <= 0.5 / 32768 + |x| / 32768


def _round_trip(samples: np.ndarray, rate: int) -> tuple[np.ndarray, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        write_wav(path, samples, rate)
        return read_wav(path, rate), inspect_wav(path, rate)


@pytest.mark.timeout(60)
@PROPERTY
@given(
    st.sampled_from([32, 64]).flatmap(
        lambda bits: arrays(
            np.dtype(f"float{bits}"), st.integers(1, 3000), elements=st.floats(-1, 1, width=bits)
        )
    ),
    RATES,
)
def test_wav_round_trip_within_one_step(samples, rate):
    back, info = _round_trip(samples, rate)
    x = samples.astype(np.float64)
    assert back.dtype == np.float32 and back.shape == samples.shape
    # The exact 16-bit codes, and the error bound they imply.
    np.testing.assert_array_equal(back * 32768, np.round(x * 32767))
    assert np.max(np.abs(back - x)) <= TOL
    assert (info.num_samples, info.sample_rate, info.channels, info.bits) == (
        len(samples),
        rate,
        1,
        16,
    )
    assert info.peak == pytest.approx(float(np.max(np.abs(back))))


@pytest.mark.timeout(60)
@PROPERTY
@given(
    arrays(np.float64, st.integers(1, 500), elements=st.floats(-1e30, 1e30)),
    RATES,
)
def test_wav_out_of_range_samples_are_clipped(samples, rate):
    assume(np.any(np.abs(samples) > 1))
    back, info = _round_trip(samples, rate)
    assert np.all(back >= -1.0) and np.all(back < 1.0)
    assert np.max(np.abs(back - np.clip(samples, -1, 1))) <= TOL
    assert info.num_samples == len(samples)
