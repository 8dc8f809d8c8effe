"""Pieces every architecture shares: the feature input and the tutorial's initialiser."""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.settings import ModelSettings


def tutorial_init(stddev: float = 0.01) -> keras.initializers.Initializer:
    """The tutorial's `tf.truncated_normal_initializer(stddev=0.01)`."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


def fingerprint_input(settings: ModelSettings) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The [time, freq] feature input and its [time, freq, 1] image view for convolutions."""
    time, freq = settings.input_shape
    inputs = keras.Input(shape=(time, freq), name="fingerprint")
    return inputs, layers.Reshape((time, freq, 1), name="fingerprint_4d")(inputs)
