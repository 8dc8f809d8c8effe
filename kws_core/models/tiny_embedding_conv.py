"""`tiny_embedding_conv`: the tutorial's second microcontroller model.

Topology of `create_tiny_embedding_conv_model`: conv 10x8x8, stride 2x2, SAME + ReLU + dropout,
conv 10x8x8, stride 8x8, SAME + ReLU + dropout, flatten, fully connected to the labels. (The
original docstring draws three convolutions; the code has two, and so do we.)
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.models.settings import ModelSettings

NAME = "tiny_embedding_conv"


def _weights() -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=0.01)


def build(settings: ModelSettings) -> keras.Model:
    time, freq = settings.input_shape
    rate = settings.dropout_rate
    inputs = keras.Input(shape=(time, freq), name="fingerprint")
    x = layers.Reshape((time, freq, 1), name="fingerprint_4d")(inputs)
    for name, strides in (("first", (2, 2)), ("second", (8, 8))):
        x = layers.Conv2D(
            8,
            (10, 8),
            strides=strides,
            padding="same",
            activation="relu",
            kernel_initializer=_weights(),
            name=name,
        )(x)
        x = layers.Dropout(rate, name=f"{name}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(settings.label_count, kernel_initializer=_weights(), name="final_fc")(x)
    return keras.Model(inputs, logits, name=NAME)
