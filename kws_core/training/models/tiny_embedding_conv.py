"""`tiny_embedding_conv`: the tutorial's second microcontroller model.

Topology of `create_tiny_embedding_conv_model`: conv 10x8x8, stride 2x2, SAME + ReLU + dropout,
conv 10x8x8, stride 8x8, SAME + ReLU + dropout, flatten, fully connected to the labels. (The
original docstring draws three convolutions; the code has two, and so do we.)
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input, tutorial_init
from kws_core.training.models.settings import ModelSettings

NAME = "tiny_embedding_conv"


def build(settings: ModelSettings) -> keras.Model:
    rate = settings.dropout_rate
    inputs, x = fingerprint_input(settings)
    for name, strides in (("first", (2, 2)), ("second", (8, 8))):
        x = layers.Conv2D(
            8,
            (10, 8),
            strides=strides,
            padding="same",
            activation="relu",
            kernel_initializer=tutorial_init(),
            name=name,
        )(x)
        x = layers.Dropout(rate, name=f"{name}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(
        settings.label_count, kernel_initializer=tutorial_init(), name="final_fc"
    )(x)
    return keras.Model(inputs, logits, name=NAME)
