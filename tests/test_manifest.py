import shutil

import numpy as np
import pandas as pd
import pytest

from kws_core.config import load_params
from kws_core.data.manifest import (
    MANIFEST_COLUMNS,
    build_manifest,
    label_counts,
    load_manifest,
    write_manifest,
)
from kws_core.data.partition import which_set
from kws_core.infra.errors import DataError
from tests.test_audio import BAD, make_bad


def cfg(**kw):
    over = {"wanted_words": "yes,no"} | kw
    return load_params(None, over).data


def test_rows_columns_and_partitions(tiny_dataset):
    root = tiny_dataset()
    res = build_manifest(cfg(), root, progress=False)
    m = res.manifest
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    clips = m[m.source == "clip"]
    for row in clips.itertuples():
        assert row.partition == which_set(row.path, 10, 10)
        assert row.speaker == row.path.split("/")[1].split("_nohash_")[0]
        assert (row.sample_rate, row.channels, row.bits, row.num_samples) == (16000, 1, 16, 16000)
    assert set(m.label) == {"yes", "no", "_unknown_", "_silence_"}
    assert not res.used_lists and res.rejected.empty
    assert len(res.background) == 1


def test_silence_and_unknown_counts_follow_the_tutorial(tiny_dataset):
    root = tiny_dataset(speakers=80)
    m = build_manifest(cfg(silence_percentage=25, unknown_percentage=50), root, False).manifest
    for _part, group in m.groupby("partition"):
        words = (group.label.isin(["yes", "no"])).sum()
        assert (group.label == "_silence_").sum() == -(-words * 25 // 100)
        unknown_pool = ((group.word.isin(["cat", "dog"])) & (group.source == "clip")).sum()
        assert (group.label == "_unknown_").sum() == min(-(-words * 50 // 100), unknown_pool)
        sil = group[group.label == "_silence_"]
        assert (sil.path == "_background_noise_/white_noise.wav").all()
    # deterministic (seed 59185) and independent of file order
    again = build_manifest(cfg(silence_percentage=25, unknown_percentage=50), root, False)
    pd.testing.assert_frame_equal(m, again.manifest)


def test_adding_files_never_moves_an_existing_file(tiny_dataset, tmp_path):
    from tests.conftest import build_tiny_dataset

    root = tiny_dataset(speakers=40)
    before = build_manifest(cfg(), root, False).manifest
    build_tiny_dataset(root, ["yes", "no", "cat", "bird"], 120, utterances=2)
    after = build_manifest(cfg(), root, False).manifest
    old = before[before.source == "clip"].set_index("path")["partition"]
    new = after[after.source == "clip"].drop_duplicates("path").set_index("path")["partition"]
    assert len(new) > len(old)
    # every wanted-word clip is still there; sampled unknowns may differ, compare the common ones
    words = old[old.index.str.match(r"(yes|no)/")]
    assert words.index.isin(new.index).all()
    common = old.index.intersection(new.index)
    assert len(common) >= len(words)
    assert (new.loc[common] == old.loc[common]).all()


def test_shipped_lists_are_used_and_disagreements_reported(tiny_dataset):
    root = tiny_dataset(speakers=30)
    base = build_manifest(cfg(), root, False).manifest
    clips = base[base.label.isin(["yes", "no"])]
    train_path = clips[clips.partition == "training"].path.iloc[0]
    test_paths = list(clips[clips.partition == "testing"].path)
    (root / "validation_list.txt").write_text(train_path + "\n")
    (root / "testing_list.txt").write_text("\n".join(test_paths) + "\n")
    res = build_manifest(cfg(), root, False)
    got = res.manifest.set_index("path")
    assert res.used_lists
    assert got.loc[train_path, "partition"] == "validation"
    assert list(res.disagreements.path) == [train_path]


def test_bad_files_are_rejected_not_fatal(tiny_dataset, tmp_path):
    root = tiny_dataset(speakers=20)
    for kind in BAD:
        (tmp_path / kind).mkdir()
        src = make_bad(tmp_path / kind, kind)
        shutil.copy(src, root / "yes" / f"bad{kind}_nohash_0.wav")
    res = build_manifest(cfg(), root, False)
    assert len(res.rejected) == len(BAD)
    assert set(res.rejected.path) == {f"yes/bad{k}_nohash_0.wav" for k in BAD}
    for row in res.rejected.itertuples():
        assert BAD[row.path.split("bad")[1].split("_nohash")[0]] in row.reason
    assert not res.manifest.path.str.contains("bad").any()


def test_wanted_word_without_clips_is_a_clear_error(tiny_dataset, tmp_path):
    root = tiny_dataset(speakers=5)
    with pytest.raises(DataError, match="wanted word 'left' has no clips"):
        build_manifest(cfg(wanted_words="yes,left"), root, False)
    (root / "left").mkdir()
    shutil.copy(make_bad(tmp_path, "stereo"), root / "left" / "a_nohash_0.wav")
    with pytest.raises(DataError, match="all 1 files in .* were rejected"):
        build_manifest(cfg(wanted_words="yes,left"), root, False)
    with pytest.raises(DataError, match="does not exist"):
        build_manifest(cfg(), tmp_path / "missing", False)


def test_write_and_load(tiny_dataset, tmp_path):
    res = build_manifest(cfg(), tiny_dataset(speakers=10), False)
    paths = write_manifest(res, tmp_path / "out")
    pd.testing.assert_frame_equal(load_manifest(paths["manifest"]), res.manifest)
    assert label_counts(res.manifest).loc["total", "total"] == len(res.manifest)
    assert not list((tmp_path / "out").glob("*.tmp"))
    paths["manifest"].write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable"):
        load_manifest(paths["manifest"])


def test_clips_longer_than_clip_duration_plus_tolerance_are_rejected(tiny_dataset):
    from tests.conftest import write_clip

    root = tiny_dataset(speakers=10)
    write_clip(root / "yes" / "edge_nohash_0.wav", 0.1 * np.ones(16800))  # 1050 ms: kept
    write_clip(root / "yes" / "over_nohash_0.wav", 0.1 * np.ones(16801))  # 1050.06 ms
    write_clip(root / "_background_noise_" / "long.wav", 0.1 * np.ones(16000 * 120))
    res = build_manifest(cfg(), root, False)
    assert list(res.rejected.path) == ["yes/over_nohash_0.wav"]
    assert res.rejected.reason.iloc[0] == (
        "1050.06 ms long, expected a 1000 ms clip (at most 1050 ms)"
    )
    assert "yes/edge_nohash_0.wav" in set(res.manifest.path)
    assert "_background_noise_/long.wav" in set(res.background.path)
    res = build_manifest(cfg(duration_tolerance_ms=0), root, False)
    assert set(res.rejected.path) == {"yes/edge_nohash_0.wav", "yes/over_nohash_0.wav"}
