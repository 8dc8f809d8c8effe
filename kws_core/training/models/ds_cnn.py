"""`ds_cnn`: depthwise-separable CNN of "Hello Edge" (Zhang et al. 2017, arXiv:1711.07128).

Conv 10x4 (stride 2x2 in time and frequency, SAME) + BatchNorm + ReLU, then `ds_cnn_blocks`
blocks of depthwise 3x3 + BatchNorm + ReLU + pointwise 1x1 + BatchNorm + ReLU, all with
`ds_cnn_channels` channels; global average pool, dropout, fully connected to the labels. The
default 64 channels x 4 blocks is DS-CNN-S. Convolutions have no bias (BatchNorm's beta replaces
it; the ARM reference code has both). BatchNorm decay 0.96 as in the ARM reference code.

The paper's "38.6K" for DS-CNN-S is the memory for 8-bit weights *and* activations; the weights
alone are about 23k (ours: 23,180 trainable for 12 labels, plus 1,152 BatchNorm statistics).
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input
from kws_core.training.models.settings import ModelSettings

NAME = "ds_cnn"
BN_MOMENTUM = 0.96


def _bn_relu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build(settings: ModelSettings) -> keras.Model:
    channels = settings.ds_cnn_channels
    inputs, x = fingerprint_input(settings)
    x = layers.Conv2D(
        channels, (10, 4), strides=(2, 2), padding="same", use_bias=False, name="conv_1"
    )(x)
    x = _bn_relu(x, "conv_1")
    for i in range(1, settings.ds_cnn_blocks + 1):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"conv_ds_{i}_dw")(x)
        x = _bn_relu(x, f"conv_ds_{i}_dw")
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"conv_ds_{i}_pw")(x)
        x = _bn_relu(x, f"conv_ds_{i}_pw")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(settings.dropout_rate, name="dropout")(x)
    logits = layers.Dense(settings.label_count, name="fc")(x)
    return keras.Model(inputs, logits, name=NAME)
