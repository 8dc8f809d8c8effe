"""`single_fc`: the tutorial's sanity-check model, one matmul + bias from features to logits.

As in `create_single_fc_model`, there is no dropout (the original creates the dropout placeholder
but never uses it), and the weights start from a truncated normal with stddev 0.001.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.settings import ModelSettings

NAME = "single_fc"


def build(settings: ModelSettings) -> keras.Model:
    inputs = keras.Input(shape=settings.input_shape, name="fingerprint")
    # Row-major flatten keeps the tutorial's fingerprint layout: frames contiguous, oldest first.
    x = layers.Flatten(name="flatten")(inputs)
    logits = layers.Dense(
        settings.label_count,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.001),
        name="fc",
    )(x)
    return keras.Model(inputs, logits, name=NAME)
