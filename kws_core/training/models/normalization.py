"""Per-bin feature normalisation in front of every architecture.

Raw MFCCs span very different ranges (coefficient 0 sits near -250, the rest within +-10), so one
int8 scale for the whole input cannot hold them: naive post-training quantisation of the default
model lost 19 points. Normalising each feature bin with the training set's mean and standard
deviation fixes that and helps optimisation too. The statistics are non-trainable weights, so
they live in every checkpoint and travel with the model into every export.
"""

from __future__ import annotations

import keras
import numpy as np

from kws_core.features.stats import feature_stats
from kws_core.training.models.spec_augment import SpecAugmentSettings, with_spec_augment

NAME = "feature_norm"
MIN_STD = 1e-3  # a constant bin (e.g. a silent band) must not blow up


@keras.saving.register_keras_serializable(package="kws")
class FeatureNormalization(keras.layers.Layer):
    """(x - mean) / std per feature bin; identity until `set_stats` is called."""

    def build(self, input_shape) -> None:
        bins = int(input_shape[-1])
        self.mean = self.add_weight(
            name="mean", shape=(bins,), initializer="zeros", trainable=False
        )
        self.inv_std = self.add_weight(
            name="inv_std", shape=(bins,), initializer="ones", trainable=False
        )

    def call(self, x):
        return (x - self.mean) * self.inv_std

    def set_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.assign(np.asarray(mean, np.float32))
        self.inv_std.assign(1.0 / np.maximum(np.asarray(std, np.float32), MIN_STD))

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.mean.numpy() == 0) and np.all(self.inv_std.numpy() == 1))


def with_normalization(body: keras.Model, augment: SpecAugmentSettings | None = None):
    """`body` behind a FeatureNormalization layer (then SpecAugment, when `augment` masks
    anything), as one model with the body's name."""
    inputs = keras.Input(shape=body.input_shape[1:], name="features")
    x = FeatureNormalization(name=NAME)(inputs)
    if augment is not None:
        x = with_spec_augment(x, augment)
    return keras.Model(inputs, body(x), name=body.name)


def split(model: keras.Model) -> tuple[FeatureNormalization, keras.Model]:
    """The normalisation layer and the architecture behind it (for export)."""
    return model.get_layer(NAME), model.layers[-1]


def set_inner_stats(body: keras.Model, name: str, batches) -> None:
    """Set FeatureNormalization `name` inside `body` from what reaches it for `batches` of
    `body`'s inputs (e.g. the embeddings a fine-tuned top makes of cached activations)."""
    layer = body.get_layer(name)
    upstream = keras.Model(body.input, layer.input)
    layer.set_stats(
        *feature_stats(upstream(np.asarray(x, np.float32), training=False) for x in batches)
    )
