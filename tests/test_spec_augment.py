"""SpecAugment: masks only in training, within their widths, seeded, and off by default."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kws_core.config import load_params
from kws_core.training.models import build_model
from kws_core.training.models.spec_augment import NAME, SpecAugment, SpecAugmentSettings

X = np.random.default_rng(0).normal(1.0, 0.1, (64, 98, 40)).astype(np.float32)


def _masked(settings: SpecAugmentSettings, seed: int = 0) -> np.ndarray:
    layer = SpecAugment(**settings.__dict__, seed=seed)
    return layer(X, training=True).numpy()


def test_inference_is_the_identity():
    layer = SpecAugment(probability=1.0, seed=0)
    assert np.array_equal(layer(X, training=False).numpy(), X)
    assert np.array_equal(layer(X).numpy(), X)


def test_time_masks_zero_whole_frames_within_the_widths():
    y = _masked(SpecAugmentSettings(1.0, time_masks=2, time_mask_frames=10, feature_masks=0))
    zero = y == 0
    assert np.array_equal(zero, np.broadcast_to(zero[:, :, :1], zero.shape))  # whole frames
    assert np.array_equal(y[~zero], X[~zero])  # the rest untouched
    per_example = zero[:, :, 0].sum(axis=1)
    assert per_example.max() <= 20 and per_example.min() >= 0
    assert per_example.mean() > 3  # 2 masks of 0..10 frames: ~10 on average


def test_feature_masks_zero_whole_bins():
    y = _masked(SpecAugmentSettings(1.0, time_masks=0, feature_masks=1, feature_mask_bins=6))
    zero = y == 0
    assert np.array_equal(zero, np.broadcast_to(zero[:, :1, :], zero.shape))
    assert zero[:, 0, :].sum(axis=1).max() <= 6
    assert zero.any()


def test_probability_is_the_share_of_examples_masked():
    y = _masked(SpecAugmentSettings(0.5, time_masks=2, time_mask_frames=10))
    masked = (y == 0).any(axis=(1, 2)).mean()
    assert 0.25 < masked < 0.75


def test_the_seed_decides_the_masks():
    s = SpecAugmentSettings(1.0)
    assert np.array_equal(_masked(s, 0), _masked(s, 0))
    assert not np.array_equal(_masked(s, 0), _masked(s, 1))


def _model(**over):
    tf.keras.utils.set_random_seed(0)
    flags = {"preprocess": "mfcc", "model_architecture": "low_latency_conv"} | over
    return build_model(load_params(None, flags))[0]


def test_off_by_default_so_the_model_keeps_its_layers():
    assert NAME not in [layer.name for layer in _model().layers]


def test_widths_follow_the_front_ends_frame_step():
    mfcc = _model(specaugment_probability=0.5, specaugment_time_mask_ms=100)
    s = mfcc.get_layer(NAME).settings
    assert (s.time_mask_frames, s.feature_mask_bins) == (10, 6)  # 10 ms frames, 15% of 40 bins
    tf.keras.utils.set_random_seed(0)
    emb = build_model(load_params(None, {"specaugment_probability": 0.5}))[0]
    # fine-tuned embedding top: the masks act on its normalised embeddings (80 ms apart, 96)
    s = emb.layers[-1].get_layer(NAME).settings
    assert (s.time_mask_frames, s.feature_mask_bins) == (1, 14)


def test_the_model_masks_in_training_only():
    model = _model(specaugment_probability=1.0, dropout_rate=0.0)
    x = X[:8]
    assert np.allclose(model(x, training=False).numpy(), model(x, training=False).numpy())
    assert not np.allclose(model(x, training=True).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("key", ["specaugment_probability", "specaugment_time_masks"])
def test_bad_values_are_one_line_errors(key):
    from kws_core.infra.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.{key}"):
        load_params(None, {key: -1})


def test_inference_graphs_hold_no_random_ops():
    """What export traces (training=False) has no trace of the masks; training's graph does."""
    model = _model(specaugment_probability=1.0, dropout_rate=0.0)  # masks: the only randomness
    spec = tf.TensorSpec([None, 98, 40], tf.float32)

    def ops(training: bool) -> set[str]:
        fn = tf.function(lambda x: model(x, training=training)).get_concrete_function(spec)
        return {op.type for op in fn.graph.get_operations()}

    random = {"RandomUniform", "StatelessRandomUniformV2", "StatelessRandomUniform"}
    assert ops(True) & random
    assert not ops(False) & random
