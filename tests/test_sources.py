"""Training on several sources: data_dir plus `data.sources` folders, each with its own split
and weight; a bad source folder is a one-line error and nothing is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kws_core.cli import main
from kws_core.config import load_params
from kws_core.data.manifest import build_manifest
from kws_core.data.partition import which_set
from kws_core.features.augmented_audio import AudioProcessor
from kws_core.features.cache import batch_indices, weights_cdf
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.errors import ConfigError, DataError
from tests.conftest import build_tiny_dataset, tone, write_clip


def own_clips(root: Path, words=("yes", "no"), speakers: int = 20, prefix: str = "me") -> Path:
    """A user's folder of clips (speakers distinct from the tiny data set's)."""
    for s in range(speakers):
        spk = hashlib.sha1(f"{prefix}{s}".encode()).hexdigest()[:8]
        for w in words:
            write_clip(root / w / f"{spk}_nohash_0.wav", tone(f"{prefix}{w}{s}"))
    return root


def manifest_for(tmp_path: Path, sources: str) -> pd.DataFrame:
    params = load_params(None, {"wanted_words": "yes,no", "sources": sources})
    resolved = [(Path(s.path), s) for s in params.data.source_list]
    return build_manifest(params.data, tmp_path / "data", False, sources=resolved).manifest


@pytest.fixture
def two_sources(tmp_path):
    build_tiny_dataset(tmp_path / "data", ["yes", "no", "cat"], 40)
    own_clips(tmp_path / "mine")
    own_clips(tmp_path / "theirs", prefix="them")
    return tmp_path


def test_every_row_records_its_origin_and_weight(two_sources):
    t = two_sources
    m = manifest_for(t, f"{t / 'mine'}:3,{t / 'theirs'}::testing")
    clips = m[m["source"] == "clip"]
    assert set(clips["origin"]) == {"data_dir", "mine", "theirs"}
    assert (clips.loc[clips["origin"] == "mine", "weight"] == 3.0).all()
    assert (clips.loc[clips["origin"] != "mine", "weight"] == 1.0).all()
    mine = clips[clips["origin"] == "mine"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in mine["path"])
    assert set(clips.loc[clips["origin"] == "theirs", "partition"]) == {"testing"}


def test_split_of_each_source_is_stable(two_sources):
    """A clip's partition depends only on its own source and name, not on other sources."""
    t = two_sources
    alone = manifest_for(t, str(t / "mine"))
    both = manifest_for(t, f"{t / 'mine'},{t / 'theirs'}:2:training")
    none = manifest_for(t, "")

    def parts(m, origin):
        rows = m[(m["origin"] == origin) & (m["source"] == "clip")]
        return dict(zip(rows["path"], rows["partition"], strict=True))

    mine = parts(alone, "mine")
    assert mine == parts(both, "mine")
    assert mine == {p: which_set(Path(p).name, 10.0, 10.0) for p in mine}
    assert set(mine.values()) == {"training", "validation", "testing"}
    # data_dir's own words keep their partitions whatever sources are added
    main_words = lambda m: {  # noqa: E731
        p: s for p, s in parts(m, "data_dir").items() if not p.startswith("cat/")
    }
    assert main_words(none) == main_words(alone) == main_words(both)


def test_split_lists_uses_the_folders_own_lists(two_sources):
    t = two_sources
    names = sorted(p.relative_to(t / "mine").as_posix() for p in (t / "mine").rglob("*.wav"))
    (t / "mine" / "testing_list.txt").write_text("\n".join(names[:4]) + "\n")
    (t / "mine" / "validation_list.txt").write_text(names[4] + "\n")
    m = manifest_for(t, f"{t / 'mine'}:1:lists")
    rows = m[m["origin"] == "mine"].set_index("path")["partition"]
    assert rows[(t / "mine" / names[0]).as_posix()] == "testing"
    assert rows[(t / "mine" / names[4]).as_posix()] == "validation"


def test_bad_source_specs_are_one_line_errors(two_sources):
    t = two_sources
    with pytest.raises(ConfigError, match="data.sources: 'x:heavy': weight 'heavy'"):
        load_params(None, {"sources": "x:heavy"})
    with pytest.raises(ConfigError, match="split 'half' is not one of"):
        load_params(None, {"sources": "x:1:half"})
    with pytest.raises(DataError, match=r"data.sources: .*missing is not a folder"):
        manifest_for(t, str(t / "missing"))
    (t / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(DataError, match="has no usable clips"):
        manifest_for(t, str(t / "empty"))
    with pytest.raises(DataError, match="no validation_list.txt"):
        manifest_for(t, f"{t / 'mine'}:1:lists")


def test_cli_with_a_bad_source_writes_nothing(two_sources, capsys):
    t = two_sources
    (t / "params.yaml").write_text(
        f"data:\n  data_url: ''\n  data_dir: data\n  wanted_words: yes,no\n"
        f"  manifest_dir: {t / 'manifest'}\n"
    )
    argv = ["manifest", "--params", str(t / "params.yaml"), "--no-progress"]
    assert main([*argv, f"--sources={t / 'mine'}:2"]) == 0
    before = {p.name: p.read_bytes() for p in (t / "manifest").iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*argv, f"--sources={t / 'nope'}"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.sources" in err[0] and "nope" in err[0]
    after = {p.name: p.read_bytes() for p in (t / "manifest").iterdir() if p.is_file()}
    assert after == before, "a failed run must leave the previous manifest as it was"
    summary = (t / "manifest" / "manifest_summary.json").read_text()
    assert '"mine"' in summary and '"weight": 2.0' in summary


def test_weights_steer_training_batches(two_sources):
    """Rows are drawn in proportion to weight, in cached and in on-the-fly batches."""
    t = two_sources
    m = manifest_for(t, f"{t / 'mine'}:4")
    params = load_params(None, {"wanted_words": "yes,no", "preprocess": "mfcc"})
    spec = FeatureSpec.from_params(params)
    labels = ["_silence_", "_unknown_", "yes", "no"]
    ap = AudioProcessor(m, t / "data", labels, spec, params.augment, seed=0, progress=False)
    train = m[m["partition"] == "training"].reset_index(drop=True)
    w = ap.sets["training"].weights
    assert np.array_equal(w, train["weight"].to_numpy())
    mine = (train["origin"] == "mine").to_numpy()
    expected = w[mine].sum() / w.sum()
    assert 0.4 < expected < 0.9  # weight 4 on ~1/3 of the rows

    cdf = weights_cdf(w)
    drawn = np.concatenate([batch_indices(0, s, 100, len(w), cdf) for s in range(200)])
    assert abs(mine[drawn].mean() - expected) < 0.03
    uniform = np.concatenate([batch_indices(0, s, 100, len(w)) for s in range(200)])
    assert abs(mine[uniform].mean() - mine.mean()) < 0.03
    assert weights_cdf(np.ones(5)) is None

    # on the fly: recover the drawn rows from the (un-augmented) audio of each batch
    make = ap._audio_batch_fn(100)
    import tensorflow as tf

    ys = np.concatenate([make(tf.constant(s, tf.int64))[1].numpy() for s in range(1, 40)])
    yes_no = np.isin(train["label"], ["yes", "no"])
    # mine holds only yes/no: weighting it up raises their share among drawn rows
    weighted = w[yes_no].sum() / w.sum()
    assert abs(np.isin(ys, [2, 3]).mean() - weighted) < 0.04
