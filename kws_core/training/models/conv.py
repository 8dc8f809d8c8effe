"""`conv`: the tutorial's default model, roughly 'cnn-trad-fpool3' (Sainath & Parada, 2015).

Topology of `create_conv_model` in tensorflow/examples/speech_commands/models.py:
conv 20x8x64 (SAME) + ReLU + dropout, max-pool 2x2, conv 10x4x64 (SAME) + ReLU + dropout,
flatten, fully connected to the labels. (The original docstring draws a second max-pool; the code
has none, and neither do we.) Same initialisers: truncated normal (stddev 0.01), zero biases.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input, tutorial_init
from kws_core.training.models.settings import ModelSettings

NAME = "conv"


def build(settings: ModelSettings) -> keras.Model:
    inputs, x = fingerprint_input(settings)
    x = layers.Conv2D(
        64,
        (20, 8),
        padding="same",
        activation="relu",
        kernel_initializer=tutorial_init(),
        name="first",
    )(x)
    x = layers.Dropout(settings.dropout_rate, name="first_dropout")(x)
    x = layers.MaxPooling2D((2, 2), strides=(2, 2), padding="same", name="max_pool")(x)
    x = layers.Conv2D(
        64,
        (10, 4),
        padding="same",
        activation="relu",
        kernel_initializer=tutorial_init(),
        name="second",
    )(x)
    x = layers.Dropout(settings.dropout_rate, name="second_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(
        settings.label_count, kernel_initializer=tutorial_init(), name="final_fc"
    )(x)
    return keras.Model(inputs, logits, name=NAME)
