import random
import string
from collections import Counter

import pytest

from kws_core.data.partition import MAX_NUM_WAVS_PER_CLASS, speaker_of, which_set

# File names from the official Speech Commands v0.02 test set: TensorFlow's which_set puts every
# one of them in "testing" (10/10 split); an independent oracle for the hash arithmetic.
OFFICIAL_TEST_NAMES = (
    "0487ba9b_nohash_0.wav 3b4f8f24_nohash_3.wav 5c8af87a_nohash_1.wav 87070229_nohash_0.wav "
    "a6f2fd71_nohash_1.wav ca48dc76_nohash_0.wav f17d21b5_nohash_0.wav 2c6d3924_nohash_0.wav "
    "c0e0f834_nohash_0.wav e41a903b_nohash_2.wav 1acc97de_nohash_1.wav 4c6167ca_nohash_1.wav "
    "6e916de8_nohash_2.wav 90b94017_nohash_0.wav b49caed3_nohash_0.wav d962e5ac_nohash_2.wav "
    "18f8afd5_nohash_3.wav 4620dc14_nohash_0.wav 7bae88ed_nohash_0.wav 97f4c236_nohash_2.wav "
    "b83c1acf_nohash_4.wav daf230ac_nohash_0.wav ffb86d3c_nohash_2.wav 3f170018_nohash_0.wav "
    "5e3dde6b_nohash_2.wav 8769c34c_nohash_3.wav aa233654_nohash_0.wav"
).split()


@pytest.mark.parametrize("name", OFFICIAL_TEST_NAMES)
def test_official_test_set_names_are_testing(name):
    assert which_set(f"yes/{name}", 10, 10) == "testing"


def test_all_real_test_set_clips_are_testing(realdata):
    root = realdata / "speech_commands_test_v0.02_dev"
    names = [
        p.name for p in root.glob("*/*.wav") if p.parent.name not in ("_silence_", "_unknown_")
    ]
    names += [p.name.split("_", 1)[1] for p in (root / "_unknown_").glob("*.wav")]
    assert len(names) > 2000
    assert Counter(which_set(n, 10, 10) for n in names) == {"testing": len(names)}


def test_constant_and_speaker():
    assert MAX_NUM_WAVS_PER_CLASS == 134217727
    assert speaker_of("a/b/3a9f0c12_nohash_4.wav") == "3a9f0c12"
    assert speaker_of("bark.wav") == "bark.wav"  # no _nohash_: the whole basename is hashed


def test_shares_on_many_names_and_speaker_grouping():
    rng = random.Random(1)
    speakers = ["".join(rng.choices(string.hexdigits.lower(), k=8)) for _ in range(20000)]
    sets = Counter(which_set(f"{s}_nohash_0.wav", 10, 10) for s in speakers)
    assert abs(sets["validation"] / 20000 - 0.10) < 0.01
    assert abs(sets["testing"] / 20000 - 0.10) < 0.01
    for s in speakers[:500]:
        parts = {which_set(f"w/{s}_nohash_{n}.wav", 10, 10) for n in range(5)}
        assert len(parts) == 1  # all clips of a speaker share a partition
        # the folder does not matter, only the basename
        assert which_set(f"yes/{s}_nohash_0.wav", 10, 10) == which_set(
            f"no/{s}_nohash_3.wav", 10, 10
        )


def test_percentage_edges():
    names = [f"{i:08x}_nohash_0.wav" for i in range(2000)]
    assert {which_set(n, 0, 0) for n in names} == {"training"}
    assert {which_set(n, 100, 0) for n in names} == {"validation"}
    assert {which_set(n, 0, 100) for n in names} == {"testing"}
    # growing validation only ever moves files out of training/testing into validation
    for n in names:
        if which_set(n, 10, 10) == "validation":
            assert which_set(n, 20, 10) == "validation"
