"""`embedding_mlp`: a small fully connected head over the speech-embedding front end.

Input: the `embedding` front end's `[windows, 96]` vectors (Google's frozen speech embedding,
`kws_core.features.speech_embedding`). The windows are flattened, so the head sees where in the
clip each embedding sits, then two ReLU layers of `embedding_units` with dropout and the logits. The
openWakeWord recipe: the backbone carries the knowledge of real speech, the head only has to
separate the words, so a few ten thousand weights suffice and train in seconds.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input
from kws_core.training.models.settings import ModelSettings

NAME = "embedding_mlp"


def build(settings: ModelSettings) -> keras.Model:
    units, rate = settings.embedding_units, settings.dropout_rate
    inputs, _ = fingerprint_input(settings)
    x = layers.Flatten(name="flatten")(inputs)
    for i in range(2):
        x = layers.Dense(units, activation="relu", name=f"fc_{i}")(x)
        x = layers.Dropout(rate, name=f"fc_{i}_dropout")(x)
    logits = layers.Dense(settings.label_count, name="final_fc")(x)
    return keras.Model(inputs, logits, name=NAME)
