"""`conv`: the tutorial's default model, roughly 'cnn-trad-fpool3' (Sainath & Parada, 2015).

Topology of `create_conv_model` in tensorflow/examples/speech_commands/models.py:
conv 20x8x64 (SAME) + ReLU + dropout, max-pool 2x2, conv 10x4x64 (SAME) + ReLU + dropout,
flatten, fully connected to the labels. (The original docstring draws a second max-pool; the code
has none, and neither do we.) Same initialisers: truncated normal (stddev 0.01), zero biases.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.models.settings import ModelSettings

NAME = "conv"


def _weights() -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=0.01)


def build(settings: ModelSettings) -> keras.Model:
    time, freq = settings.input_shape
    inputs = keras.Input(shape=(time, freq), name="fingerprint")
    x = layers.Reshape((time, freq, 1), name="fingerprint_4d")(inputs)
    x = layers.Conv2D(
        64, (20, 8), padding="same", activation="relu", kernel_initializer=_weights(), name="first"
    )(x)
    x = layers.Dropout(settings.dropout_rate, name="first_dropout")(x)
    x = layers.MaxPooling2D((2, 2), strides=(2, 2), padding="same", name="max_pool")(x)
    x = layers.Conv2D(
        64, (10, 4), padding="same", activation="relu", kernel_initializer=_weights(), name="second"
    )(x)
    x = layers.Dropout(settings.dropout_rate, name="second_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(settings.label_count, kernel_initializer=_weights(), name="final_fc")(x)
    return keras.Model(inputs, logits, name=NAME)
