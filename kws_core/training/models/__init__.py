"""Model registry: keyword-spotting architectures as Keras functional models.

Every model takes float32 features `[batch, spectrogram_length, fingerprint_width]` and returns
logits `[batch, label_count]` (no softmax). Dropout and BatchNorm statistics only act when the
model is called with `training=True`. Only standard Keras layers/ops are used, so every model
converts to TFLite with builtin ops.

    settings = ModelSettings(spectrogram_length=98, fingerprint_width=40, label_count=12)
    model = create_model("ds_cnn", settings)
    model_summary(model)  # {"params": ..., "flops": ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import keras

from kws_core.infra.errors import ConfigError
from kws_core.training.models import (
    bc_resnet,
    conv,
    ds_cnn,
    embedding_conv,
    embedding_mlp,
    low_latency_conv,
    low_latency_svdf,
    single_fc,
    tiny_conv,
    tiny_embedding_conv,
)
from kws_core.training.models.normalization import with_normalization
from kws_core.training.models.settings import ModelSettings
from kws_core.training.models.spec_augment import SpecAugmentSettings, with_spec_augment

__all__ = ["MODELS", "ModelSettings", "create_model", "model_names", "model_summary"]

# One module per architecture; each defines NAME and build(settings) -> keras.Model.
_ARCHITECTURES: tuple[ModuleType, ...] = (
    conv,
    low_latency_conv,
    low_latency_svdf,
    single_fc,
    tiny_conv,
    tiny_embedding_conv,
    ds_cnn,
    bc_resnet,
    embedding_mlp,
    embedding_conv,
)

MODELS: dict[str, Callable[[ModelSettings], keras.Model]] = {
    module.NAME: module.build for module in _ARCHITECTURES
}


def model_names() -> list[str]:
    """Registered architecture names, tutorial models first."""
    return list(MODELS)


def check_architecture(name: str) -> None:
    """An unknown name is a one-line ConfigError listing the known ones."""
    if name not in MODELS:
        raise ConfigError(
            f"model_architecture {name!r} is unknown; choose one of: {', '.join(MODELS)}"
        )


def create_model(name: str, settings: ModelSettings) -> keras.Model:
    """Build architecture `name` for `settings`."""
    check_architecture(name)
    return MODELS[name](settings)


def build_model(params):
    """The configured model for the configured words and features: (model, labels, spec).

    Training, evaluation and export all build it here, so they cannot drift apart.
    """
    from kws_core.data.labels import prepare_words_list
    from kws_core.features.front_end import FeatureSpec

    labels = prepare_words_list(params.data.wanted_word_list)
    spec = FeatureSpec.from_params(params)
    frames, bins = spec.shape
    top = spec.embedding_finetune_layers
    if top:
        from kws_core.features.speech_embedding import EMBEDDING_DIM

        bins = EMBEDDING_DIM  # the architecture sees embeddings, made by the fine-tuned top
    settings = ModelSettings.from_params(params, len(labels), frames, bins)
    body = create_model(params.train.model_architecture, settings)
    # SpecAugment masks normalised features: the embeddings when the top is fine-tuned
    # (the activations below it are not a spectrogram), else the front end's output.
    augment = SpecAugmentSettings.from_params(params, spec.frame_ms, bins)
    if top:
        body = with_embedding_top(body, top, frames, augment)
        return with_normalization(body), labels, spec
    return with_normalization(body, augment), labels, spec


EMBEDDING_NORM = "embedding_norm"


def with_embedding_top(
    head: keras.Model,
    top_layers: int,
    windows: int,
    augment: SpecAugmentSettings | None = None,
) -> keras.Model:
    """`head` behind a trainable copy of the speech embedding's top `top_layers` convolutions:
    `[windows, activations below them]` -> embeddings -> per-value normalisation -> `head`.

    The outer FeatureNormalization stays the identity for such a model (the pre-trained
    convolutions expect the activations as they are); `EMBEDDING_NORM` normalises their output.
    """
    from kws_core.features.speech_embedding import EMBEDDING_DIM, cut_shape, top_model
    from kws_core.training.models.normalization import FeatureNormalization

    shape = cut_shape(top_layers)
    inputs = keras.Input(shape=(windows, math.prod(shape)), name="embedding_below")
    # every window through the same convolutions: fold the windows into the batch
    x = keras.layers.Reshape((windows, *shape), name="windows_4d")(inputs)
    x = keras.layers.Lambda(
        lambda t: keras.ops.reshape(t, (-1, *shape)), output_shape=shape, name="fold_windows"
    )(x)
    x = top_model(top_layers)(x)
    x = keras.layers.Lambda(
        lambda t: keras.ops.reshape(t, (-1, windows, EMBEDDING_DIM)),
        output_shape=(windows, EMBEDDING_DIM),
        name="unfold_windows",
    )(x)
    x = FeatureNormalization(name=EMBEDDING_NORM)(x)
    if augment is not None:
        x = with_spec_augment(x, augment)
    return keras.Model(inputs, head(x), name=head.name)


def _macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates of one example through `layer` (0 for layers without weights)."""
    count = getattr(layer, "count_macs", None)
    if callable(count):
        return int(count())
    if not isinstance(
        layer,
        keras.layers.Dense
        | keras.layers.Conv1D
        | keras.layers.Conv2D
        | keras.layers.DepthwiseConv1D
        | keras.layers.DepthwiseConv2D,
    ):
        return 0
    out_elements = 1
    for dim in layer.output.shape[1:]:
        out_elements *= int(dim)
    if isinstance(layer, keras.layers.Dense):
        per_output = int(layer.kernel.shape[0])
    elif isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
        # kernel [*k, in, multiplier]: each output sees one input channel
        per_output = 1
        for k in layer.kernel.shape[:-2]:
            per_output *= int(k)
    else:
        # Conv kernel [*k, in / groups, out]: each output sees the whole kernel slice
        per_output = 1
        for k in layer.kernel.shape[:-1]:
            per_output *= int(k)
    return out_elements * per_output


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_layers(layer))
        else:
            found.append(layer)
    return found


def model_summary(model: keras.Model) -> dict[str, int]:
    """`{"params": trainable weights, "flops": 2 x multiply-accumulates of one inference}`.

    FLOPs are counted analytically from the layer shapes for Dense, Conv and DepthwiseConv layers
    (and layers with a `count_macs()` method, such as the SVDF); BatchNorm (folded at export),
    activations, pooling and bias additions are not counted. `params` excludes non-trainable
    state such as BatchNorm moving statistics.
    """
    params = sum(math.prod(w.shape) for w in model.trainable_weights)
    flops = 2 * sum(_macs(layer) for layer in _layers(model))
    return {"params": params, "flops": flops}
