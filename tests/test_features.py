"""Front ends: tutorial arithmetic, NumPy == TensorFlow, tutorial ops, TFLite builtins, errors."""

from __future__ import annotations

import importlib
import json
import math
import sys
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kws_core.config import load_params  # noqa: E402
from kws_core.features.front_end import (  # noqa: E402
    LOGMEL_LOWER_HZ,
    LOGMEL_OFFSET,
    MICRO_OP_MODULE,
    FeatureSpec,
    compute_features,
    compute_features_np,
    stream_features,
)
from kws_core.infra.errors import ConfigError, KwsError  # noqa: E402

RATE = 16000


def _noise(batch: int = 3, seed: int = 0, n: int = RATE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, n)).astype(np.float32)


def _chirp(n: int = RATE) -> np.ndarray:
    """A 300 -> 3300 Hz chirp from 0.3 s to 0.7 s over faint noise (quiet parts too)."""
    t = np.arange(n) / RATE
    x = 0.3 * np.sin(2 * np.pi * (300 + 3750 * (t - 0.3)) * (t - 0.3)) * ((t > 0.3) & (t < 0.7))
    x = x + 0.001 * np.random.default_rng(1).standard_normal(n)
    return x.astype(np.float32)[None]


def _tone(hz: float, amplitude: float = 0.5, n: int = RATE) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(n) / RATE)).astype(np.float32)[None]


def _has_micro() -> bool:
    try:
        importlib.import_module(MICRO_OP_MODULE)
    except Exception:
        return False
    return True


# ---- spec arithmetic ------------------------------------------------------------------------
def test_default_spec_matches_prepare_model_settings():
    spec = FeatureSpec.from_params(load_params(None, {"preprocess": "mfcc"}))
    assert spec == FeatureSpec()
    assert spec.desired_samples == 16000
    assert spec.window_size_samples == 480
    assert spec.window_stride_samples == 160
    # 1 + (16000 - 480) // 160 = 1 + 97 = 98
    assert spec.spectrogram_length == 98
    assert spec.fingerprint_width == 40
    assert spec.shape == (98, 40)
    assert spec.fingerprint_size == 3920
    assert spec.fft_length == 512
    assert spec.average_window_width == -1


def test_average_spec_by_hand():
    spec = FeatureSpec(preprocess="average")
    # 30 ms at 16 kHz = 480 samples -> next power of two 512 -> fft_bin_count = 1 + 512/2 = 257;
    # average_window_width = floor(257 / 40) = 6; fingerprint_width = ceil(257 / 6) = 43.
    assert spec.fft_bin_count == 257
    assert spec.average_window_width == 6
    assert spec.fingerprint_width == 43
    assert spec.shape == (98, 43)


@pytest.mark.parametrize(
    ("kwargs", "shape", "extra"),
    [
        # micro_speech's settings: 30 ms window, 20 ms stride -> 1 + 15520 // 320 = 49 frames.
        (dict(window_stride_ms=20.0, preprocess="micro"), (49, 40), {}),
        # 8 kHz, 40 ms / 20 ms: window 320, stride 160, 1 + (8000 - 320) // 160 = 49 frames.
        (dict(sample_rate=8000, window_size_ms=40.0, window_stride_ms=20.0, feature_bin_count=10),
         (49, 10), {"fft_length": 512}),
        # 20 ms window = 320 samples -> 512 FFT, 257 bins; 20 bins: width floor(257/20) = 12,
        # ceil(257/12) = 22 pooled bins; frames 1 + (16000 - 320) // 160 = 99.
        (dict(window_size_ms=20.0, feature_bin_count=20, preprocess="average"), (99, 22),
         {"average_window_width": 12}),
        # 25 ms = 400 samples, 1.5 s clip: 1 + (24000 - 400) // 160 = 148 frames.
        (dict(window_size_ms=25.0, clip_duration_ms=1500, preprocess="logmel"), (148, 40),
         {"window_size_samples": 400, "desired_samples": 24000}),
    ],
)  # fmt: skip
def test_other_spec_settings(kwargs, shape, extra):
    spec = FeatureSpec(**kwargs)
    assert spec.shape == shape
    for key, value in extra.items():
        assert getattr(spec, key) == value


def test_spec_dict_round_trip_and_checks():
    spec = FeatureSpec(window_size_ms=20.0, feature_bin_count=20, preprocess="average")
    d = spec.to_dict()
    assert d["fingerprint_width"] == 22 and d["spectrogram_length"] == 99
    assert FeatureSpec.from_dict(d) == spec
    assert json.loads(json.dumps(d)) == d
    np_spec = FeatureSpec(sample_rate=np.int64(16000), feature_bin_count=np.int32(20))
    assert type(np_spec.to_dict()["feature_bin_count"]) is int and np_spec.shape == (98, 20)
    with pytest.raises(ConfigError, match="fingerprint_width"):
        FeatureSpec.from_dict({**d, "fingerprint_width": 40})
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        FeatureSpec.from_dict({**d, "colour": 1})
    with pytest.raises(ConfigError, match="missing key 'preprocess'"):
        FeatureSpec.from_dict({k: v for k, v in d.items() if k != "preprocess"})


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(preprocess="spectrogram"), "features.preprocess"),
        (dict(window_size_ms=1200.0), "features.window_size_ms"),
        (dict(clip_duration_ms=20), "features.window_size_ms"),
        (dict(window_stride_ms=0.01), "features.window_stride_ms"),
        (dict(feature_bin_count=41), "features.feature_bin_count"),
        (dict(feature_bin_count=300, preprocess="average"), "features.feature_bin_count"),
        (dict(window_size_ms=30.5, preprocess="micro"), "features.window_size_ms"),
        (dict(sample_rate=4000, window_size_ms=64.0), "data.sample_rate"),
        (dict(sample_rate=16000.5), "data.sample_rate"),
        (dict(feature_bin_count=0), "features.feature_bin_count"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        FeatureSpec(**kwargs)
    assert str(err.value).startswith(key)
    assert "\n" not in str(err.value)


def test_window_longer_than_clip_from_params():
    params = load_params(None, overrides={"window_size_ms": 1500.0, "preprocess": "mfcc"})
    with pytest.raises(ConfigError, match=r"^features\.window_size_ms: .*data\.clip_duration_ms"):
        FeatureSpec.from_params(params)


def test_wrong_audio_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\[batch, 16000\]"):
        compute_features(np.zeros((2, 8000), np.float32), FeatureSpec())
    with pytest.raises(ValueError, match=r"\[batch, 16000\]"):
        compute_features_np(np.zeros(16000, np.float32), FeatureSpec())


# ---- NumPy == TensorFlow ------------------------------------------------------------------
@pytest.mark.parametrize("preprocess", ["mfcc", "logmel", "average"])
@pytest.mark.parametrize("signal", ["noise", "chirp"])
@pytest.mark.parametrize("bins", [40, 13])
def test_numpy_and_tensorflow_agree(preprocess, signal, bins):
    spec = FeatureSpec(preprocess=preprocess, feature_bin_count=bins)
    audio = _noise() if signal == "noise" else _chirp()
    got = compute_features(audio, spec).numpy()
    want = compute_features_np(audio, spec)
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert got.shape == want.shape == (audio.shape[0], *spec.shape)
    spread = float(want.max() - want.min())
    assert spread > 0
    assert np.abs(got - want).max() < 1e-4 * spread


def test_graph_and_eager_paths_agree():
    spec = FeatureSpec()
    audio = _noise(2, seed=5)
    traced = tf.function(lambda a: compute_features(a, spec))
    np.testing.assert_allclose(traced(audio).numpy(), compute_features(audio, spec), atol=1e-5)


# ---- the tutorial's own ops -------------------------------------------------------------
def _tutorial_power_spectrogram(audio: np.ndarray, spec: FeatureSpec):
    return tf.raw_ops.AudioSpectrogram(
        input=audio.T,  # [samples, channels]; each clip becomes a "channel"
        window_size=spec.window_size_samples,
        stride=spec.window_stride_samples,
        magnitude_squared=True,
    )


@pytest.mark.skipif(not hasattr(tf.raw_ops, "Mfcc"), reason="tf.raw_ops.Mfcc not in this build")
@pytest.mark.parametrize("bins", [40, 13])
def test_mfcc_matches_tutorial_mfcc_op(bins):
    spec = FeatureSpec(feature_bin_count=bins)
    audio = np.concatenate([_noise(2, seed=3), _chirp(), np.zeros((1, RATE), np.float32)])
    want = tf.raw_ops.Mfcc(
        spectrogram=_tutorial_power_spectrogram(audio, spec),
        sample_rate=spec.sample_rate,
        dct_coefficient_count=bins,
    ).numpy()
    got = compute_features(audio, spec).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(got - want).mean() < 1e-4


@pytest.mark.parametrize(("window_ms", "bins"), [(30.0, 40), (20.0, 20)])
def test_average_matches_tutorial_pool(window_ms, bins):
    # (20 ms, 20 bins) pads 7 bins, 3 before and 4 after: checks the SAME split.
    spec = FeatureSpec(window_size_ms=window_ms, feature_bin_count=bins, preprocess="average")
    audio = np.concatenate([_noise(2, seed=4), _chirp()])
    width = spec.average_window_width
    want = tf.nn.pool(
        input=tf.expand_dims(_tutorial_power_spectrogram(audio, spec), -1),
        window_shape=[1, width],
        strides=[1, width],
        pooling_type="AVG",
        padding="SAME",
    )[..., 0].numpy()
    for got in (compute_features(audio, spec).numpy(), compute_features_np(audio, spec)):
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-5 * float(want.max())


# ---- physical sanity ----------------------------------------------------------------------
def test_logmel_tone_lands_in_the_right_mel_bin():
    spec = FeatureSpec(preprocess="logmel")
    feats = compute_features(_tone(1000.0), spec).numpy()[0]
    mel = lambda f: 1127.0 * math.log1p(f / 700.0)  # noqa: E731
    edges = np.linspace(mel(LOGMEL_LOWER_HZ), mel(RATE / 2), spec.feature_bin_count + 2)
    expected = int(np.argmin(np.abs(edges[1:-1] - mel(1000.0))))  # band centred nearest 1 kHz
    peaks = feats.argmax(axis=1)
    assert np.all(np.abs(peaks - expected) <= 1), (peaks, expected)
    assert np.bincount(peaks).argmax() in (expected, expected - 1, expected + 1)
    assert feats[:, expected].mean() > feats.mean() + 5


def test_average_tone_lands_in_the_right_pooled_bin():
    spec = FeatureSpec(preprocess="average")
    feats = compute_features(_tone(1000.0), spec).numpy()[0]
    # 1000 Hz / (16000 / 512) Hz per bin = FFT bin 32; pooled by 6 with no left pad -> 32 // 6.
    assert np.all(feats.argmax(axis=1) == 32 // 6)
    feats_2k = compute_features(_tone(2000.0), spec).numpy()[0]
    assert np.all(feats_2k.argmax(axis=1) == 64 // 6)


@pytest.mark.parametrize("preprocess", ["mfcc", "logmel", "average"])
def test_silence_is_low_and_finite(preprocess):
    spec = FeatureSpec(preprocess=preprocess)
    silent = compute_features(np.zeros((1, RATE), np.float32), spec).numpy()
    loud = compute_features(_noise(1, seed=7) * 0.5, spec).numpy()
    assert np.all(np.isfinite(silent))
    assert np.all(np.isfinite(compute_features_np(np.zeros((1, RATE)), spec)))
    if preprocess == "logmel":
        np.testing.assert_allclose(silent, math.log(LOGMEL_OFFSET), rtol=1e-5)
        assert loud.min() > silent.max() + 10
    elif preprocess == "average":
        assert silent.max() == 0.0 and loud.min() > 0.0
    else:  # c0 is sqrt(2/40) * sum of the 40 log energies
        assert silent[..., 0].max() < loud[..., 0].min() - 50


@pytest.mark.parametrize("preprocess", ["logmel", "average", "mfcc"])
def test_louder_input_gives_larger_log_energies(preprocess):
    spec = FeatureSpec(preprocess=preprocess)
    audio = _noise(1, seed=9)
    quiet = compute_features(0.05 * audio, spec).numpy()
    loud = compute_features(0.5 * audio, spec).numpy()
    if preprocess == "logmel":  # 10x amplitude = 100x power = +log(100) in every band
        np.testing.assert_allclose(loud - quiet, math.log(100.0), atol=1e-3)
    elif preprocess == "average":  # power spectrogram: exactly 100x
        np.testing.assert_allclose(loud / quiet, 100.0, rtol=1e-3)
    else:  # magnitude filterbank: +log(10) per band, c0 gains sqrt(2/40) * 40 * log(10)
        np.testing.assert_allclose(
            loud[..., 0] - quiet[..., 0], math.sqrt(2 / 40) * 40 * math.log(10.0), atol=1e-3
        )
        np.testing.assert_allclose(loud[..., 1:], quiet[..., 1:], atol=1e-3)


# ---- TFLite: builtins only ----------------------------------------------------------------
@pytest.mark.parametrize("preprocess", ["mfcc", "logmel", "average"])
def test_front_end_converts_to_tflite_builtins(preprocess):
    spec = FeatureSpec(preprocess=preprocess)

    @tf.function(input_signature=[tf.TensorSpec([1, spec.desired_samples], tf.float32)])
    def front_end(audio):
        return compute_features(audio, spec)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [front_end.get_concrete_function()], front_end
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()  # raises if any op is not a TFLite builtin
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter deprecation notice
        interpreter = tf.lite.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert out["dtype"] == np.float32
    for audio in (_noise(1, seed=11), _chirp()):
        interpreter.set_tensor(inp["index"], audio)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        want = compute_features(audio, spec).numpy()
        assert got.shape == want.shape == (1, *spec.shape)
        assert np.abs(got - want).max() < 1e-3 * max(1.0, float(want.max() - want.min()))


# ---- micro --------------------------------------------------------------------------------
@pytest.mark.skipif(not _has_micro(), reason="audio_microfrontend op not in this TF build")
@pytest.mark.parametrize("stride_ms", [10.0, 20.0])
def test_micro_shape_and_values(stride_ms):
    spec = FeatureSpec(preprocess="micro", window_stride_ms=stride_ms)
    audio = np.concatenate([np.zeros((1, RATE), np.float32), 0.5 * _noise(2, seed=12)])
    feats = compute_features(audio, spec).numpy()
    assert feats.dtype == np.float32
    assert feats.shape == (3, *spec.shape)
    assert np.all(np.isfinite(feats)) and feats.min() >= 0.0
    # log-scaled uint16-range output times 10/256 stays below 65535 * 10 / 256
    assert feats.max() < 65535 * 10 / 256
    assert feats[1:].mean() > feats[0].mean() + 1.0  # noise is louder than silence
    np.testing.assert_array_equal(compute_features_np(audio, spec), feats)
    # the tutorial's recipe (input_data.py), one clip at a time
    frontend = importlib.import_module(MICRO_OP_MODULE).audio_microfrontend
    for clip, got in zip(audio, feats, strict=True):
        want = frontend(
            tf.cast(clip * 32768, tf.int16),
            sample_rate=RATE,
            window_size=30,
            window_step=int(stride_ms),
            num_channels=40,
            out_scale=1,
            out_type=tf.float32,
        ) * (10.0 / 256.0)
        np.testing.assert_array_equal(got, want.numpy())


def test_micro_missing_op_is_a_kws_error(monkeypatch):
    monkeypatch.setitem(sys.modules, MICRO_OP_MODULE, None)  # makes the import fail
    spec = FeatureSpec(preprocess="micro", feature_bin_count=17)  # not traced elsewhere
    with pytest.raises(KwsError, match="audio_microfrontend"):
        compute_features(np.zeros((1, RATE), np.float32), spec)


@pytest.mark.parametrize("preprocess", ["mfcc", "logmel", "average"])
@pytest.mark.parametrize("length", [16000, 16159, 16160 * 3 + 5, 47040])
def test_stream_features_are_the_frames_of_every_window(preprocess, length):
    spec = FeatureSpec(preprocess=preprocess)
    rng = np.random.default_rng(length)
    stream = (0.1 * rng.standard_normal(length)).astype(np.float32)
    frames = stream_features(stream, spec)
    hop, n = spec.window_stride_samples, spec.spectrogram_length
    assert frames.shape == ((length - spec.window_size_samples) // hop + 1, spec.shape[1])
    starts = range(0, length - 16000 + 1, 3 * hop)
    want = np.asarray(compute_features(np.stack([stream[s : s + 16000] for s in starts]), spec))
    got = np.stack([frames[s // hop : s // hop + n] for s in starts])
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-5)


def test_stream_features_refuse_a_stateful_front_end():
    with pytest.raises(KwsError, match="not frame-wise"):
        stream_features(np.zeros(16000, np.float32), FeatureSpec(preprocess="micro"))
