"""`embedding_conv`: a temporal convolution head over the speech-embedding sequence.

Input: the `embedding` front end's `[windows, 96]` vectors. Two 1-D convolutions over time
(kernel 3, `embedding_units` channels, ReLU, dropout) see neighbouring embeddings together, a
max over time makes the result independent of where the word sits, and a dense layer gives the
logits. With a short hop (`features.embedding_hop_ms: 40`, 6 windows a clip) it can follow the
word's parts; with the default 80 ms (3 windows) it is close to the MLP.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input
from kws_core.training.models.settings import ModelSettings

NAME = "embedding_conv"


def build(settings: ModelSettings) -> keras.Model:
    units, rate = settings.embedding_units, settings.dropout_rate
    inputs, _ = fingerprint_input(settings)
    x = inputs
    for i in range(2):
        x = layers.Conv1D(units, 3, padding="same", activation="relu", name=f"tconv_{i}")(x)
        x = layers.Dropout(rate, name=f"tconv_{i}_dropout")(x)
    x = layers.GlobalMaxPooling1D(name="max_over_time")(x)
    logits = layers.Dense(settings.label_count, name="final_fc")(x)
    return keras.Model(inputs, logits, name=NAME)
