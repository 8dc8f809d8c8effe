"""`bc_resnet`: BC-ResNet, "Broadcasted Residual Learning for Efficient Keyword Spotting"
(Kim et al., Interspeech 2021, arXiv:2106.04140), after the authors' reference code
(Qualcomm-AI-research/bcresnet).

Features are laid out `[batch, time, freq, channels]` here (the reference uses
`[batch, channels, freq, time]`), so a "frequency" kernel k x 1 of the paper is (1, k) below.

- Head: conv 5x5, stride 2 in frequency, 2*c channels + BatchNorm + ReLU, with c = int(8 * tau)
  (tau = `bc_resnet_scale`; tau = 1 is BC-ResNet-1).
- Four stages of BC-ResBlocks with c, 1.5c, 2c, 2.5c channels and `bc_resnet_blocks` blocks
  (paper: 2, 2, 4, 4). Stages 2 and 3 halve the frequency axis in their first block; stage i
  dilates the temporal convolution by 2**i (1, 2, 4, 8).
- BC-ResBlock: f2 = frequency-depthwise 3x1 conv + sub-spectral norm (SSN, 5 sub-bands); the
  result is averaged over frequency and fed to f1 = temporal-depthwise 1x3 conv + BatchNorm +
  swish + pointwise 1x1 conv + channel dropout; f1's output is broadcast back over frequency and
  added to f2's output and (except in transition blocks, which change the width through a
  1x1 conv + BatchNorm + ReLU first) to the block input; then ReLU.
- Classifier: depthwise 5x5 conv (no frequency padding) + pointwise conv to 4c + BatchNorm + ReLU,
  global average pool, fully connected to the labels.

The frequency stride of f2 is a stride-1 depthwise conv followed by a 1x1 max-pool with stride 2
(TensorFlow's CPU depthwise kernel only takes equal strides). Sub-spectral norm is built from
standard layers (reshape/transpose + BatchNormalization over sub-band x channel); where the
frequency size is not a multiple of 5 (feature widths other than 40) it falls back to plain
BatchNorm. Channel dropout inside the blocks is the published 0.1, capped by `dropout_rate`
(dropout_rate 0 turns it off). For 12 labels and tau = 1 this has 9,232 trainable weights, the
paper's 9.2k.
"""

from __future__ import annotations

import keras
from keras import layers

from kws_core.training.models.common import fingerprint_input
from kws_core.training.models.settings import ModelSettings

NAME = "bc_resnet"
SUB_BANDS = 5
BLOCK_DROPOUT = 0.1
# PyTorch BatchNorm momentum 0.1 (the reference code) is Keras momentum 0.9: the moving statistics
# must follow the raw MFCC scale quickly or inference lags far behind training.
BN_MOMENTUM = 0.9
STAGE_WIDTHS = (1.0, 1.5, 2.0, 2.5)
STRIDED_STAGES = (1, 2)


def _sub_spectral_norm(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """BatchNorm with separate statistics and affine per (frequency sub-band, channel)."""
    time, freq, channels = x.shape[1:]
    if freq % SUB_BANDS:
        return layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    band = freq // SUB_BANDS
    x = layers.Reshape((time, SUB_BANDS, band, channels), name=f"{name}_split")(x)
    x = layers.Permute((1, 3, 2, 4), name=f"{name}_to_bands")(x)
    x = layers.Reshape((time, band, SUB_BANDS * channels), name=f"{name}_merge")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_ssn")(x)
    x = layers.Reshape((time, band, SUB_BANDS, channels), name=f"{name}_unmerge")(x)
    x = layers.Permute((1, 3, 2, 4), name=f"{name}_from_bands")(x)
    return layers.Reshape((time, freq, channels), name=f"{name}_join")(x)


def _block(
    x: keras.KerasTensor,
    channels: int,
    dilation: int,
    freq_stride: int,
    dropout: float,
    name: str,
) -> keras.KerasTensor:
    widen = x.shape[-1] != channels
    # A block that changes the width or the frequency size has no identity shortcut.
    transition = widen or freq_stride > 1
    shortcut = x
    if widen:
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_expand")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(name=f"{name}_expand_relu")(x)
    # f2: 2D part, depthwise over frequency.
    x = layers.DepthwiseConv2D((1, 3), padding="same", use_bias=False, name=f"{name}_f2")(x)
    if freq_stride > 1:
        # TensorFlow's CPU depthwise kernel needs equal strides; a 1x1 pool with stride 2 keeps
        # every other bin, which is the reference's stride-2 conv with padding 1 exactly.
        x = layers.MaxPooling2D((1, 1), strides=(1, freq_stride), name=f"{name}_f2_subsample")(x)
    aux = _sub_spectral_norm(x, f"{name}_f2")
    # f1: 1D part on the frequency average, depthwise over time.
    x = layers.AveragePooling2D((1, aux.shape[2]), name=f"{name}_freq_avg")(aux)
    x = layers.DepthwiseConv2D(
        (3, 1), dilation_rate=(dilation, 1), padding="same", use_bias=False, name=f"{name}_f1"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_f1_bn")(x)
    x = layers.Activation("swish", name=f"{name}_f1_swish")(x)
    x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_f1_pw")(x)
    x = layers.SpatialDropout2D(dropout, name=f"{name}_f1_dropout")(x)
    # Broadcast f1 ([batch, time, 1, ch]) over frequency.
    residuals = [aux, x] if transition else [shortcut, aux, x]
    x = layers.Add(name=f"{name}_add")(residuals)
    return layers.ReLU(name=f"{name}_relu")(x)


def build(settings: ModelSettings) -> keras.Model:
    time, freq = settings.input_shape
    base = int(settings.bc_resnet_scale * 8)
    dropout = min(settings.dropout_rate, BLOCK_DROPOUT)
    inputs, x = fingerprint_input(settings)
    x = layers.Conv2D(
        2 * base, 5, strides=(1, 2), padding="same", use_bias=False, name="head_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    for stage, (blocks, width) in enumerate(
        zip(settings.bc_resnet_blocks, STAGE_WIDTHS, strict=True)
    ):
        channels = int(base * width)
        for b in range(blocks):
            stride = 2 if stage in STRIDED_STAGES and b == 0 else 1
            x = _block(x, channels, 2**stage, stride, dropout, f"stage{stage + 1}_block{b + 1}")
    # Classifier: depthwise 5x5 (SAME in time, VALID in frequency), pointwise, BN, ReLU, pool, fc.
    kernel_freq = min(5, x.shape[2])
    x = layers.ZeroPadding2D(((2, 2), (0, 0)), name="classifier_pad")(x)
    x = layers.DepthwiseConv2D(
        (5, kernel_freq), padding="valid", use_bias=False, name="classifier_dw"
    )(x)
    x = layers.Conv2D(4 * base, 1, use_bias=False, name="classifier_pw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="classifier_bn")(x)
    x = layers.ReLU(name="classifier_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(settings.label_count, name="fc")(x)
    return keras.Model(inputs, logits, name=NAME)
