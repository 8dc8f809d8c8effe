"""`tiny_conv`: the tutorial's microcontroller model (< 20 KB RAM, < 32 KB flash when quantised).

Topology of `create_tiny_conv_model`: conv 10x8x8, stride 2x2, SAME + ReLU + dropout, flatten,
fully connected to the labels.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input, tutorial_init
from kws_core.training.models.settings import ModelSettings

NAME = "tiny_conv"


def build(settings: ModelSettings) -> keras.Model:
    inputs, x = fingerprint_input(settings)
    x = layers.Conv2D(
        8,
        (10, 8),
        strides=(2, 2),
        padding="same",
        activation="relu",
        kernel_initializer=tutorial_init(),
        name="first",
    )(x)
    x = layers.Dropout(settings.dropout_rate, name="first_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(
        settings.label_count, kernel_initializer=tutorial_init(), name="final_fc"
    )(x)
    return keras.Model(inputs, logits, name=NAME)
