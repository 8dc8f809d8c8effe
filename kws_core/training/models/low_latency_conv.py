"""`low_latency_conv`: roughly 'cnn-one-fstride4' (Sainath & Parada, 2015), as in the tutorial.

Topology of `create_low_latency_conv_model`: one conv whose filter spans the whole time axis
(spectrogram_length x 8, 186 filters, VALID, stride 1 as in the published code) + ReLU + dropout,
then three fully connected layers 128 -> 128 -> labels with dropout between them. As in the
original, the two hidden fully connected layers are linear (no activation).
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input, tutorial_init
from kws_core.training.models.settings import ModelSettings

NAME = "low_latency_conv"


def build(settings: ModelSettings) -> keras.Model:
    time, freq = settings.input_shape
    rate = settings.dropout_rate
    inputs, x = fingerprint_input(settings)
    x = layers.Conv2D(
        186,
        (time, min(8, freq)),
        padding="valid",
        activation="relu",
        kernel_initializer=tutorial_init(),
        name="first",
    )(x)
    x = layers.Dropout(rate, name="first_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, kernel_initializer=tutorial_init(), name="first_fc")(x)
    x = layers.Dropout(rate, name="first_fc_dropout")(x)
    x = layers.Dense(128, kernel_initializer=tutorial_init(), name="second_fc")(x)
    x = layers.Dropout(rate, name="second_fc_dropout")(x)
    logits = layers.Dense(
        settings.label_count, kernel_initializer=tutorial_init(), name="final_fc"
    )(x)
    return keras.Model(inputs, logits, name=NAME)
