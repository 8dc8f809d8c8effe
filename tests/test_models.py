"""Model registry: published topologies, weight counts, FLOPs, train/inference modes, TFLite."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kws_core.config import load_params
from kws_core.infra.errors import ConfigError
from kws_core.training.models import MODELS, create_model, model_names, model_summary
from kws_core.training.models.bc_resnet import _sub_spectral_norm
from kws_core.training.models.low_latency_svdf import SVDF
from kws_core.training.models.settings import ModelSettings

TUTORIAL = [
    "conv",
    "low_latency_conv",
    "low_latency_svdf",
    "single_fc",
    "tiny_conv",
    "tiny_embedding_conv",
]
MODERN = ["ds_cnn", "bc_resnet"]
EMBEDDING_HEADS = ["embedding_mlp", "embedding_conv"]  # over the speech-embedding front end
# Tutorial defaults: 1 s at 16 kHz, 30 ms windows every 10 ms -> 1 + (16000 - 480) // 160 = 98
# frames of 40 MFCC bins; 12 labels = 10 words + _silence_ + _unknown_.
DEFAULT = ModelSettings(spectrogram_length=98, fingerprint_width=40, label_count=12)

# Trainable weights of the TF1 graphs of tensorflow/examples/speech_commands/models.py for
# 98 x 40 input and 12 labels (every tf.compat.v1.get_variable with trainable=True).
TF1_WEIGHT_COUNTS = {
    # first_weights 20*8*1*64 = 10,240 + first_bias 64
    # max-pool 2x2 SAME: 98 x 40 -> 49 x 20
    # second_weights 10*4*64*64 = 163,840 + second_bias 64
    # final_fc_weights (49*20*64 = 62,720) * 12 = 752,640 + final_fc_bias 12
    # = 10,240 + 64 + 163,840 + 64 + 752,640 + 12
    "conv": 926_860,
    # first_weights 98*8*1*186 = 145,824 + first_bias 186
    # VALID conv, stride 1: 1 x (40 - 8 + 1 = 33) x 186 = 6,138 elements
    # first_fc 6,138*128 = 785,664 + 128; second_fc 128*128 = 16,384 + 128;
    # final_fc 128*12 = 1,536 + 12
    # = 145,824 + 186 + 785,664 + 128 + 16,384 + 128 + 1,536 + 12
    "low_latency_conv": 949_862,
    # rank 2 x 1280 units = 2,560 filters
    # weights_frequency 40*2,560 = 102,400; weights_time 2,560*98 = 250,880; bias 1,280
    # first_fc 1,280*256 = 327,680 + 256; second_fc 256*256 = 65,536 + 256;
    # final_fc 256*12 = 3,072 + 12
    # (runtime-memory [2560, 1, 98] and first_time_flag are non-trainable streaming state)
    # = 102,400 + 250,880 + 1,280 + 327,680 + 256 + 65,536 + 256 + 3,072 + 12
    "low_latency_svdf": 751_372,
    # weights (98*40 = 3,920)*12 = 47,040 + bias 12
    "single_fc": 47_052,
    # first_weights 10*8*1*8 = 640 + first_bias 8
    # stride 2x2 SAME: ceil(98/2) x ceil(40/2) x 8 = 49*20*8 = 7,840 elements
    # final_fc 7,840*12 = 94,080 + 12
    # = 640 + 8 + 94,080 + 12
    "tiny_conv": 94_740,
    # first_weights 640 + 8 -> 49 x 20 x 8
    # second_weights 10*8*8*8 = 5,120 + 8
    # stride 8x8 SAME: ceil(49/8) x ceil(20/8) x 8 = 7*3*8 = 168 elements
    # final_fc 168*12 = 2,016 + 12
    # = 640 + 8 + 5,120 + 8 + 2,016 + 12
    "tiny_embedding_conv": 7_804,
}

# 2 x multiply-accumulates of one inference, from the same shapes.
TUTORIAL_FLOPS = {
    # conv1: 98*40*64 outputs * 20*8 = 40,140,800; conv2: 49*20*64 * 10*4*64 = 160,563,200;
    # fc: 62,720*12 = 752,640 -> 201,456,640 MACs.
    # The tutorial's prose says "over 800 million FLOPs"; its own graph gives ~403M in TF's
    # profiler (checked below), so that sentence counts twice what a MAC x 2 count gives.
    "conv": 2 * 201_456_640,
    # conv: 6,138 outputs * 98*8 = 4,812,192; fcs: 785,664 + 16,384 + 1,536 -> 5,615,776
    "low_latency_conv": 2 * 5_615_776,
    # time filters over each bin 40*98*2,560 = 10,035,200, then frequency weights 40*2,560 =
    # 102,400 (the original's order, frequency first, needs 10,035,200 + 98*2,560 = 10,286,080);
    # fcs 327,680 + 65,536 + 3,072 -> 10,533,888
    "low_latency_svdf": 2 * 10_533_888,
    "single_fc": 2 * 47_040,
    # conv: 7,840 outputs * 10*8 = 627,200; fc 94,080 -> 721,280
    "tiny_conv": 2 * 721_280,
    # conv1 627,200; conv2 168 outputs * 10*8*8 = 107,520; fc 2,016 -> 736,736
    "tiny_embedding_conv": 2 * 736_736,
}


def ds_cnn_weights(channels: int, blocks: int, labels: int) -> int:
    """Trainable weights of DS-CNN: convs have no bias, each BatchNorm has gamma and beta."""
    first = 10 * 4 * channels + 2 * channels
    block = 3 * 3 * channels + 2 * channels + channels * channels + 2 * channels
    return first + blocks * block + channels * labels + labels


@pytest.fixture(scope="module")
def built() -> dict[str, keras.Model]:
    """Every model for the tutorial defaults (read-only: tests that call training=True or change
    weights build their own)."""
    return {name: create_model(name, DEFAULT) for name in MODELS}


def features(batch: int, settings: ModelSettings = DEFAULT, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (batch, settings.spectrogram_length, settings.fingerprint_width)
    return rng.standard_normal(shape).astype(np.float32)


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Give every weight (BatchNorm statistics too) a random value so outputs are O(1) and any
    difference between two implementations shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) >= 2:
            value = rng.normal(0.0, 1.0 / math.sqrt(math.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        w.assign(value.astype(np.float32))


def test_registry_lists_every_architecture_once():
    assert model_names() == TUTORIAL + MODERN + EMBEDDING_HEADS
    assert list(MODELS) == model_names()
    for name, builder in MODELS.items():
        assert builder.__module__ == f"kws_core.training.models.{name}"


def test_unknown_architecture_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        create_model("foo", DEFAULT)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("model_architecture 'foo' is unknown; choose one of: conv, ")
    assert all(name in msg for name in MODELS)


def test_settings_from_params():
    params = load_params(
        None,
        overrides={
            "dropout_rate": 0.25,
            "ds_cnn_channels": 32,
            "ds_cnn_blocks": 3,
            "bc_resnet_scale": 2.0,
            "bc_resnet_blocks": "1, 1,2,3",
        },
    )
    s = ModelSettings.from_params(
        params, label_count=4, spectrogram_length=49, fingerprint_width=10
    )
    assert s == ModelSettings(49, 10, 4, 0.25, 32, 3, 2.0, (1, 1, 2, 3))
    defaults = ModelSettings.from_params(load_params(None), 12, 98, 40)
    assert defaults == DEFAULT
    assert defaults.input_shape == (98, 40)


@pytest.mark.parametrize("blocks", ["2,2,4", "2,x,4,4", "2,0,4,4", ""])
def test_bad_bc_resnet_blocks_is_a_config_error(blocks):
    params = load_params(None, overrides={"bc_resnet_blocks": blocks})
    with pytest.raises(ConfigError, match="train.bc_resnet_blocks"):
        ModelSettings.from_params(params, 12, 98, 40)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label_count": 0},
        {"spectrogram_length": 0},
        {"dropout_rate": 1.0},
        {"bc_resnet_blocks": (2, 2)},
        {"bc_resnet_scale": 0.1},
    ],
)
def test_bad_settings_are_config_errors(kwargs):
    base = {"spectrogram_length": 98, "fingerprint_width": 40, "label_count": 12}
    with pytest.raises(ConfigError):
        ModelSettings(**{**base, **kwargs})


def test_every_model_maps_features_to_logits(built):
    x = features(3)
    for name, model in built.items():
        assert tuple(model.input_shape) == (None, 98, 40), name
        assert tuple(model.output_shape) == (None, 12), name
        final = model.layers[-1]
        assert isinstance(final, keras.layers.Dense), name
        assert final.activation is keras.activations.linear, name  # logits, no softmax
        y = model(x, training=False)
        assert y.dtype == tf.float32 and tuple(y.shape) == (3, 12), name


def test_every_model_builds_for_other_feature_shapes():
    # 61 frames of 13 bins (odd sizes; SSN falls back to BatchNorm), 5 labels
    settings = ModelSettings(spectrogram_length=61, fingerprint_width=13, label_count=5)
    x = features(2, settings)
    for name in MODELS:
        y = create_model(name, settings)(x, training=False)
        assert tuple(y.shape) == (2, 5), name
    # the narrowest BC-ResNet (c = 1) has a strided block that keeps the width
    narrow = create_model("bc_resnet", ModelSettings(98, 40, 12, bc_resnet_scale=0.125))
    assert tuple(narrow(features(2), training=False).shape) == (2, 12)


def test_tutorial_weight_counts_equal_the_original_tf1_graph(built):
    counts = {name: model_summary(built[name])["params"] for name in TUTORIAL}
    assert counts == TF1_WEIGHT_COUNTS
    # no hidden state in the tutorial models: every weight is trainable
    assert {name: built[name].count_params() for name in TUTORIAL} == TF1_WEIGHT_COUNTS


def test_modern_weight_counts(built):
    ds = model_summary(built["ds_cnn"])["params"]
    # 10*4*64 + 2*64 + 4 * (9*64 + 2*64 + 64*64 + 2*64) + 64*12 + 12
    # = 2,560 + 128 + 4 * 4,928 + 780 = 23,180
    assert ds == ds_cnn_weights(64, 4, 12) == 23_180
    # Hello Edge's 38.6K for DS-CNN-S is KB of 8-bit weights *and* activations; the ARM code's
    # DS-CNN-S has ~22.7k weights (conv biases, BatchNorm beta only). Ours is within 5 % of that.
    assert abs(ds - 22_700) / 22_700 < 0.05
    small = create_model("ds_cnn", ModelSettings(98, 40, 12, ds_cnn_channels=32, ds_cnn_blocks=2))
    assert model_summary(small)["params"] == ds_cnn_weights(32, 2, 12)

    bc = model_summary(built["bc_resnet"])["params"]
    # BC-ResNet-1 (c = 8): head 5*5*16 + BN 2*16 = 432; stages (2, 2, 4, 4 blocks of 8, 12, 16,
    # 20 channels) 560 + 840 + 2,400 + 3,400; classifier 5*5*20 + 20*32 + 2*32 + 32*12 + 12
    # = 1,600 -> 9,232 (the paper's 9.2k; SSN keeps gamma/beta per 5 sub-bands).
    assert bc == 9_232
    assert abs(bc - 9_200) / 9_200 < 0.02
    wide = create_model("bc_resnet", ModelSettings(98, 40, 12, bc_resnet_scale=2.0))
    # BC-ResNet-2: the paper lists 26.8k
    assert abs(model_summary(wide)["params"] - 26_800) / 26_800 < 0.03
    print(f"\nds_cnn {ds:,} weights (paper DS-CNN-S ~22.7k), bc_resnet {bc:,} (paper 9.2k)")


def test_summary_table_and_flops(built):
    summary = {name: model_summary(model) for name, model in built.items()}
    print(f"\n{'model':22s} {'params':>9s} {'MFLOPs':>9s}")
    for name, row in summary.items():
        print(f"{name:22s} {row['params']:>9,d} {row['flops'] / 1e6:>9.2f}")
    assert {name: summary[name]["flops"] for name in TUTORIAL} == TUTORIAL_FLOPS
    conv = summary["conv"]["flops"]
    assert abs(conv - 403e6) / 403e6 < 0.15
    # DS-CNN: conv 49*20*64 * 10*4 = 2,508,800; per block depthwise 62,720*9 = 564,480 and
    # pointwise 62,720*64 = 4,014,080 (x4 = 18,314,240); fc 64*12 = 768 -> 20,823,808 MACs
    assert summary["ds_cnn"]["flops"] == 2 * 20_823_808
    for name in MODERN:
        assert summary[name]["flops"] < conv / 5, name
    assert summary["bc_resnet"]["flops"] < summary["ds_cnn"]["flops"] < conv


def test_flops_agree_with_the_tensorflow_profiler(built):
    # The profiler also counts bias adds and pooling, so allow 1 %.
    for name in TUTORIAL:
        model = built[name]
        fn = tf.function(
            lambda x, m=model: m(x, training=False),
            input_signature=[tf.TensorSpec((1, 98, 40), tf.float32)],
        )
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        profiled = tf.compat.v1.profiler.profile(
            graph=fn.get_concrete_function().graph, options=opts
        ).total_float_ops
        ours = model_summary(model)["flops"]
        assert abs(profiled - ours) / ours < 0.01, (name, profiled, ours)


@pytest.mark.parametrize("name", list(MODELS))
def test_training_only_parts_act_only_in_training(name):
    model = create_model(name, DEFAULT)
    randomize(model)
    x = features(4)
    first = model(x, training=False).numpy()
    second = model(x, training=False).numpy()
    np.testing.assert_array_equal(first, second)
    train = model(x, training=True).numpy()
    if name == "single_fc":
        # the original has no dropout (or anything else) in this model
        np.testing.assert_array_equal(train, first)
    else:
        assert np.abs(train - first).max() > 1e-3


@pytest.mark.parametrize("name", TUTORIAL)
def test_dropout_rate_zero_makes_training_equal_inference(name):
    model = create_model(name, ModelSettings(98, 40, 12, dropout_rate=0.0))
    randomize(model)
    x = features(4)
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=0, atol=0)


def test_bc_resnet_block_dropout_is_the_published_rate_capped_by_dropout_rate():
    def rates(dropout_rate: float) -> set[float]:
        model = create_model("bc_resnet", ModelSettings(98, 40, 12, dropout_rate=dropout_rate))
        return {
            layer.rate for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D)
        }

    assert rates(0.5) == {0.1}
    assert rates(0.05) == {0.05}


def test_sub_spectral_norm_normalizes_each_band_and_channel_separately():
    time, freq, channels = 7, 20, 3
    inputs = keras.Input((time, freq, channels))
    model = keras.Model(inputs, _sub_spectral_norm(inputs, "ssn"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, time, freq, channels))
    band_offsets = np.repeat(np.arange(5) * 10.0, freq // 5)  # each 4-bin band its own level
    x = (x * (1 + band_offsets[:, None]) + band_offsets[:, None] + np.arange(channels)).astype(
        np.float32
    )
    y = model(x, training=True).numpy().reshape(16, time, 5, freq // 5, channels)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 3)), 0.0, atol=1e-3)
    np.testing.assert_allclose(y.std(axis=(0, 1, 3)), 1.0, atol=1e-2)


def test_svdf_matches_the_original_tf1_computation():
    batch, time, freq, units, rank = 3, 5, 6, 4, 2
    layer = SVDF(units, rank)
    x = features(batch, ModelSettings(time, freq, 1))
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    for w in layer.weights:
        w.assign(rng.normal(size=tuple(w.shape)).astype(np.float32))
    wf, wt, bias = (w.numpy() for w in (layer.weights_frequency, layer.weights_time, layer.bias))
    # Original: conv1d over the flat fingerprint with stride = freq -> [batch, time, filters],
    # transpose to [filters, batch, time], matmul with weights_time [filters, time, 1],
    # reshape [units, rank, batch], sum over rank, transpose, add bias.
    activations = np.einsum("btf,fn->btn", x, wf).transpose(2, 0, 1)
    outputs = np.matmul(activations, wt[:, :, None])
    expected = outputs.reshape(units, rank, -1).sum(axis=1).T + bias
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-4)


# Keras's own saving code trips numpy 2's `__array__(copy=...)` deprecation; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_svdf_model_survives_keras_save_and_load(tmp_path):
    model = create_model("low_latency_svdf", DEFAULT)
    randomize(model)
    model.save(tmp_path / "svdf.keras")
    loaded = keras.models.load_model(tmp_path / "svdf.keras")
    x = features(2)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))


@pytest.mark.parametrize("name", list(MODELS))
def test_float_tflite_with_builtin_ops_matches_keras(name):
    model = create_model(name, DEFAULT)
    randomize(model, seed=2)
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((1, 98, 40), tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's LiteRT deprecation notice
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert tuple(out["shape"]) == (1, 12)
    for seed in (0, 1):
        x = features(1, seed=seed)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        want = model(x, training=False).numpy()
        assert np.abs(want).max() > 0.05  # outputs large enough for the comparison to mean much
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_feature_normalization_stats_and_layer():
    from kws_core.training.models.normalization import FeatureNormalization, feature_stats

    rng = np.random.default_rng(0)
    batches = [rng.normal([-250.0, 3.0, 0.0], [20.0, 2.0, 0.0], (4, 7, 3)) for _ in range(5)]
    mean, std = feature_stats(iter(batches))
    flat = np.concatenate(batches).reshape(-1, 3)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-4, atol=1e-6)
    layer = FeatureNormalization()
    x = np.asarray(batches[0], np.float32)
    layer.build(x.shape)
    assert layer.is_identity
    np.testing.assert_allclose(layer(x).numpy(), x)
    layer.set_stats(mean, std)
    y = layer(x).numpy()
    assert not layer.is_identity
    want = (x[..., :2] - mean[:2]) / std[:2]
    np.testing.assert_allclose(y[..., :2], want, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(y))  # the constant bin is floored, not divided by zero


def test_training_sets_normalization_unless_switched_off(tmp_path):
    from kws_core.data.manifest import build_manifest
    from kws_core.training.evaluate import load_model
    from kws_core.training.loop import train
    from kws_core.training.models.normalization import split
    from tests.conftest import build_tiny_dataset
    from tests.test_train import params_for

    data = build_tiny_dataset(tmp_path / "data", ["yes", "no"], 12)
    for on in (True, False):
        p = params_for(tmp_path / str(on), data_dir=str(data), normalize_features=on)
        manifest = build_manifest(p.data, data, progress=False).manifest
        train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
        model, *_ = load_model(p, "best")
        norm, _ = split(model)
        assert norm.is_identity is (not on)
        if on:  # mfcc coefficient 0 is a negative log-energy far from the others
            assert norm.mean.numpy()[0] < -5 < norm.mean.numpy()[1]
