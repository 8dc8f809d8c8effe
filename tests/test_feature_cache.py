"""The augmented feature cache: key, reuse, atomic writes, memory maps, training from it, CLI."""

import os
import shutil
import time

import numpy as np
import pytest
import yaml

from kws_core.config import load_params
from kws_core.data.manifest import build_manifest
from kws_core.features.augmented_audio import AudioProcessor
from kws_core.features.cache import (
    CacheBatches,
    build_feature_cache,
    cache_key,
    open_feature_cache,
)
from kws_core.features.front_end import FeatureSpec, compute_features
from tests.conftest import FAST_FLAGS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import build_tiny_dataset

    root = tmp_path_factory.mktemp("cache")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat", "dog"], 40)
    p = params(root)
    return root, data, build_manifest(p.data, data, progress=False).manifest


def params(root, **over):
    base = {
        "wanted_words": "yes,no",
        "data_dir": str(root / "data"),
        "data_url": "",
        "cache_dir": str(root / "features"),
        "cache_copies": 2,
        "how_many_training_steps": "3,1",
        "learning_rate": "0.01,0.001",
        "batch_size": 8,
        "eval_step_interval": 2,
        "save_step_interval": 2,
        "train_dir": str(root / "train"),
        "summaries_dir": str(root / "logs"),
        "reports_dir": str(root / "reports"),
    }
    return load_params(None, FAST_FLAGS | base | over)


@pytest.fixture(scope="module")
def built(tiny):
    root, data, manifest = tiny
    return build_feature_cache(params(root), manifest, data, progress=False)


def test_key_follows_features_augmentation_and_data_not_the_model(tiny, tmp_path):
    root, data, manifest = tiny
    key = cache_key(params(root), manifest, data)
    assert key == cache_key(params(root), manifest.copy(), data)
    same = [
        {"model_architecture": "ds_cnn"},
        {"learning_rate": "0.1,0.01"},
        {"batch_size": 64},
        {"how_many_training_steps": "9,9"},
        {"dropout_rate": 0.1},
        {"feature_source": "on_the_fly"},
        {"specaugment_probability": 0.5},  # masks act in the model, not in the cache
    ]
    for over in same:
        assert cache_key(params(root, **over), manifest, data) == key, over
    changed = [
        {"window_stride_ms": 20.0},
        {"feature_bin_count": 20},
        {"preprocess": "logmel"},
        {"background_volume": 0.2},
        {"time_shift_ms": 50.0},
        {"cache_copies": 3},
        {"seed": 1},
        {"wanted_words": "yes,no,cat"},
        {"sample_rate": 8000},
    ]
    keys = {cache_key(params(root, **over), manifest, data) for over in changed}
    assert key not in keys and len(keys) == len(changed)
    # the data: one clip's content, one row's partition, the background noise
    m = manifest.copy()
    m.loc[m.index[-1], "sha1"] = "0" * 40
    assert cache_key(params(root), m, data) != key
    m = manifest.copy()
    last = m.index[-1]
    m.loc[last, "partition"] = "testing" if m.loc[last, "partition"] != "testing" else "training"
    assert cache_key(params(root), m, data) != key
    other = tmp_path / "data"
    shutil.copytree(data / "_background_noise_", other / "_background_noise_")
    assert cache_key(params(root), manifest, other) == key
    (other / "_background_noise_" / "white_noise.wav").write_bytes(b"changed")
    assert cache_key(params(root), manifest, other) != key
    # augment.noise_dirs: keyed by the files' content, wherever the folder is
    mine, moved = tmp_path / "my_noise", tmp_path / "elsewhere" / "noise"
    shutil.copytree(data / "_background_noise_", mine)
    shutil.copytree(mine, moved)
    with_mine = cache_key(params(root, noise_dirs=str(mine)), manifest, data)
    assert with_mine != key
    assert cache_key(params(root, noise_dirs=str(moved)), manifest, data) == with_mine
    (moved / "white_noise.wav").write_bytes(b"changed")
    assert cache_key(params(root, noise_dirs=str(moved)), manifest, data) != with_mine


def test_build_writes_memmapped_arrays_and_is_reused(tiny, built):
    root, data, manifest = tiny
    p = params(root)
    assert not built.reused and built.path == root / "features" / built.key[:16]
    assert built.key == cache_key(p, manifest, data)
    for arr in (built.training, built.training_labels, built.validation, built.testing):
        assert isinstance(arr, np.memmap)
    n = built.meta["clips"]["training"]
    h, w = FeatureSpec.from_params(p).shape
    assert built.training.shape == (2 * n, h, w) and built.training.dtype == np.float16
    assert built.meta["shapes"]["validation"] == list(built.validation.shape)
    assert sum(built.meta["counts"]["training"].values()) == n
    assert built.mean.shape == built.std.shape == (w,) and np.all(np.isfinite(built.mean))
    assert not list(built.path.parent.glob(".*"))  # no temp leftovers
    again = build_feature_cache(p, manifest, data, progress=False)
    assert again.reused and again.path == built.path and again.key == built.key
    opened = open_feature_cache(p, manifest, data)
    assert opened is not None and opened.reused
    assert open_feature_cache(params(root, seed=5), manifest, data) is None


def test_cached_features_match_the_processor(tiny, built):
    root, data, manifest = tiny
    p = params(root)
    spec = FeatureSpec.from_params(p)
    proc = AudioProcessor(
        manifest, data, ["_silence_", "_unknown_", "yes", "no"], spec, p.augment, progress=False
    )
    for part in ("validation", "testing"):
        x, y = proc.features(part)
        got = getattr(built, part)
        np.testing.assert_array_equal(getattr(built, f"{part}_labels"), y)
        # float16 storage: within its rounding (2**-11 relative) of the float32 features
        np.testing.assert_allclose(got.astype(np.float32), x, rtol=2**-11, atol=1e-6)
    # training row c * N + i is copy c of row i, whichever chunk it was computed in
    n = len(proc.sets["training"])
    np.testing.assert_array_equal(built.training_labels, np.tile(proc.sets["training"].labels, 2))
    for c, i in ((0, 0), (1, n - 1), (1, 3)):
        audio, _ = proc.augmented_rows(np.array([i]), c)
        want = compute_features(audio, spec).numpy()[0]
        got = built.training[c * n + i].astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=2**-10, atol=1e-5)
    assert not np.array_equal(built.training[0], built.training[n])  # copies differ


def test_an_interrupted_build_leaves_nothing_and_an_incomplete_cache_is_rebuilt(
    tiny, tmp_path, monkeypatch
):
    root, data, manifest = tiny
    p = params(root, cache_dir=str(tmp_path / "cache"))
    import kws_core.features.front_end

    real, calls = kws_core.features.front_end.compute_features, []

    def flaky(audio, spec):
        calls.append(1)
        if len(calls) == 2:  # after the first chunk is written into training.npy
            raise RuntimeError("disk on fire")
        return real(audio, spec)

    monkeypatch.setattr(kws_core.features.front_end, "compute_features", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_feature_cache(p, manifest, data, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(kws_core.features.front_end, "compute_features", real)
    cache = build_feature_cache(p, manifest, data, progress=False)
    (cache.path / "norm_stats.npz").unlink()  # e.g. deleted by hand
    assert open_feature_cache(p, manifest, data) is None
    rebuilt = build_feature_cache(p, manifest, data, progress=False)
    assert not rebuilt.reused and (rebuilt.path / "norm_stats.npz").exists()


def test_only_the_two_most_recent_caches_are_kept(tiny, tmp_path):
    root, data, manifest = tiny
    stale, busy = tmp_path / ".0123456789abcdef.x1.tmp", tmp_path / ".0123456789abcdef.x2.tmp"
    stale.mkdir(), busy.mkdir()
    os.utime(stale, (time.time() - 2 * 86400,) * 2)  # left by a killed build
    paths = []
    for seed in (0, 1, 2):
        p = params(root, cache_dir=str(tmp_path), seed=seed, cache_copies=1)
        paths.append(build_feature_cache(p, manifest, data, progress=False).path)
    assert sorted(tmp_path.iterdir()) == sorted([busy, *paths[1:]])


def test_batches_are_keyed_by_seed_and_step(built):
    with built.batches(4, 1, 5, seed=0) as full:
        whole = list(full)
    with built.batches(4, 3, 5, seed=0) as tail:
        resumed = list(tail)
    assert len(whole) == 5 and len(resumed) == 3
    for (xa, ya), (xb, yb) in zip(whole[2:], resumed, strict=True):
        assert xa.dtype == np.float32 and ya.dtype == np.int32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = CacheBatches(built, 4, 1, 1, seed=1)
    assert not np.array_equal(next(other)[0], whole[0][0])
    other.close()  # stops the reader thread early
    assert not other._thread.is_alive()


def test_training_streams_from_the_cache(tiny, built, tmp_path, monkeypatch):
    from kws_core.training import loop as train_mod

    root, data, manifest = tiny
    out = {k: str(tmp_path / k) for k in ("train_dir", "summaries_dir", "reports_dir")}
    p = params(root, feature_source="cache", **out)

    def no_audio(*a, **k):
        raise AssertionError("training from the cache must not load the audio")

    # every reader of the audio builds an AudioProcessor (kws_core.training.data imports it
    # when it needs one)
    monkeypatch.setattr("kws_core.features.augmented_audio.AudioProcessor", no_audio)
    lines = []
    result = train_mod.train(p, manifest, data, progress=False, log=lines.append, track=False)
    assert result.final_step == 4
    assert f"Training features: {built.path} (reused)" in lines
    losses = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("Step #")]
    assert losses and all(np.isfinite(losses))
    assert 0.0 <= result.test_accuracy <= 1.0


def test_kws_features_prints_the_cache(tiny, tmp_path, capsys):
    from kws_core.cli import main

    _, data, _ = tiny
    shutil.copytree(data, tmp_path / "data")
    body = {"data": {"data_url": "", "data_dir": "data", "wanted_words": "yes,no"}}
    body["features"] = {"cache_copies": 1}
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(body))
    assert main(["manifest", "--params", str(f), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["features", "--params", str(f), "--no-progress"]) == 0
    out = capsys.readouterr().out
    folder = next(p for p in (tmp_path / "results" / "features").iterdir() if p.name[0] != ".")
    assert f"feature cache {folder} (built in " in out
    assert " MB (float16)" in out and "clips         training " in out
    assert main(["features", "--params", str(f), "--no-progress"]) == 0
    assert f"feature cache {folder} (reused)" in capsys.readouterr().out
