"""The Great Expectations suite passes on a sound manifest and fails, in plain words, on a
manifest built to break each expectation."""

import hashlib
import json

import pandas as pd
import pytest

from kws_core.config import load_params
from kws_core.data.partition import which_set
from kws_core.data.validate import validate_manifest

CFG = load_params(None, {"wanted_words": "yes,no"}).data


def sound_manifest(speakers: int = 300) -> pd.DataFrame:
    rows = []
    for i in range(speakers):
        spk = hashlib.sha1(f"s{i}".encode()).hexdigest()[:8]
        part = which_set(f"{spk}_nohash_0.wav", 10, 10)
        for w in ("yes", "no", "cat"):
            rows.append(
                dict(
                    path=f"{w}/{spk}_nohash_0.wav",
                    word=w,
                    label=w if w != "cat" else "_unknown_",
                    speaker=spk,
                    partition=part,
                    source="clip",
                    sample_rate=16000,
                    channels=1,
                    bits=16,
                    num_samples=16000,
                    duration_ms=1000.0,
                    peak=0.5,
                    rms=0.1,
                    sha1=hashlib.sha1(f"{w}{i}".encode()).hexdigest(),
                    origin="data_dir",
                    weight=1.0,
                )
            )
    for part in ("training", "validation", "testing"):
        rows.append(
            dict(rows[0], path="_background_noise_/w.wav", word="_silence_", label="_silence_")
            | dict(speaker="", partition=part, source="silence", peak=0.0, rms=0.0, sha1="")
        )
    return pd.DataFrame(rows)


def first_clip(m, partition="training", label="yes"):
    return m[(m.partition == partition) & (m.label == label)].index[0]


def brk_sample_rate(m):
    m.loc[first_clip(m), "sample_rate"] = 8000


def brk_channels(m):
    m.loc[first_clip(m), "channels"] = 2


def brk_bits(m):
    m.loc[first_clip(m), "bits"] = 24


def brk_too_long(m):
    m.loc[first_clip(m), "duration_ms"] = 1500.0


def brk_mostly_short(m):
    m.loc[m.index[::2], "duration_ms"] = 400.0


def brk_label(m):
    m.loc[first_clip(m), "label"] = "maybe"


def brk_partition(m):
    m.loc[first_clip(m), "partition"] = "train"


def brk_duplicate_path(m):
    m.loc[first_clip(m, label="no"), "path"] = m.loc[first_clip(m), "path"]


def brk_sha1(m):
    m.loc[first_clip(m), "sha1"] = "not-a-digest"


def brk_peak(m):
    m.loc[first_clip(m), "peak"] = 1.5


def brk_coverage(m):
    m.drop(m[(m.partition == "testing") & (m.label == "no")].index, inplace=True)


def brk_shares(m):
    m.loc[m.partition == "validation", "partition"] = "training"


def brk_speaker_leak(m):
    i = first_clip(m)
    m.loc[i, "partition"] = "validation"


def brk_audio_leak(m):
    m.loc[first_clip(m, "validation"), "sha1"] = m.loc[first_clip(m, "training"), "sha1"]


def brk_type(m):
    m["num_samples"] = m["num_samples"].astype(float)


def brk_missing_column(m):
    m.drop(columns=["rms"], inplace=True)


CASES = {
    brk_sample_rate: ("expect_column_values_to_be_in_set(sample_rate)", "unexpected sample_rate"),
    brk_channels: ("expect_column_values_to_be_in_set(channels)", "unexpected channels"),
    brk_bits: ("expect_column_values_to_be_in_set(bits)", "unexpected bits"),
    brk_too_long: ("expect_column_values_to_be_between(duration_ms)", "unexpected duration_ms"),
    brk_mostly_short: ("expect_column_values_to_be_between(duration_ms)", "1000 +/- 50 ms long"),
    brk_label: ("expect_column_values_to_be_in_set(label)", "(maybe)"),
    brk_partition: ("expect_column_values_to_be_in_set(partition)", "(train)"),
    brk_duplicate_path: ("expect_column_values_to_be_unique(path)", "paths listed twice"),
    brk_sha1: ("expect_column_values_to_match_regex(sha1)", "not-a-digest"),
    brk_peak: ("expect_column_values_to_be_between(peak)", "(1.5)"),
    brk_coverage: ("expect_column_values_to_be_between(count)", "no in testing"),
    brk_shares: ("expect_column_values_to_be_between(excess_pct)", "validation 0.0% (target 10%"),
    brk_speaker_leak: ("expect_column_values_to_be_unique(speaker)", "training and validation"),
    brk_audio_leak: ("expect_column_values_to_be_unique(sha1)", "training and validation"),
    brk_type: ("expect_column_values_to_be_of_type(num_samples)", "expected int64"),
    brk_missing_column: ("columns", "manifest lacks columns: rms"),
}


def test_sound_manifest_passes(tmp_path):
    report = validate_manifest(sound_manifest(), CFG, tmp_path)
    assert report.success, report.summary_lines()
    assert len(report.outcomes) >= 25
    body = json.loads((tmp_path / "validation.json").read_text())
    assert body["success"] is True and "great_expectations" in body
    assert (tmp_path / "data_docs" / "index.html").exists()


@pytest.mark.parametrize("breaker", list(CASES), ids=lambda f: f.__name__[4:])
def test_each_expectation_fails_on_a_manifest_built_to_break_it(breaker):
    m = sound_manifest()
    breaker(m)
    report = validate_manifest(m, CFG)
    name, words = CASES[breaker]
    assert not report.success
    failed = {o.name: o.message for o in report.failures}
    assert name in failed, failed
    assert words in failed[name], failed[name]
    # a single defect is reported once, not drowned in follow-on failures
    assert len(failed) <= 2, failed
    assert any(words in line for line in report.summary_lines())


def test_share_tolerance_widens_for_few_speakers():
    # 40 speakers: a 10% partition naturally swings by several points; not a failure.
    m = sound_manifest(40)
    report = validate_manifest(m, CFG)
    shares = [o for o in report.outcomes if "excess_pct" in o.name]
    assert shares and shares[0].success
