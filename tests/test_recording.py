"""The recording chain: each lever changes the audio, probability 0 leaves it, keys make it
reproducible, and SNR mixing hits the SNR asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kws_core.config import AugmentConfig, load_params
from kws_core.features.augmented_audio import AudioProcessor
from kws_core.features.front_end import FeatureSpec
from kws_core.features.recording import CHAIN_OFF, RecordingChain, room_impulse_responses
from kws_core.infra.errors import ConfigError
from tests.conftest import tone, write_clip

OFF = CHAIN_OFF


def word_audio(n: int = 4) -> np.ndarray:
    """Tone bursts in the middle of 1 s clips, like a word over silence."""
    out = np.zeros((n, 16000), np.float32)
    for i in range(n):
        out[i, 5000:11000] = 0.3 * tone(f"w{i}", 6000, freq=300 + 100 * i)
    return out


def chain(**on) -> RecordingChain:
    return RecordingChain(AugmentConfig(**(OFF | on)), 16000, seed=3)


KEYS = [("copy", 0, i) for i in range(4)]


def test_all_probabilities_zero_is_the_identity():
    x = word_audio()
    c = chain()
    assert np.array_equal(c.before_noise(x, KEYS), x)
    assert np.array_equal(c.after_noise(x, KEYS), x)


@pytest.mark.parametrize(
    "lever,stage",
    [
        ("speed_probability", "before_noise"),
        ("pitch_probability", "before_noise"),
        ("reverb_probability", "before_noise"),
        ("mic_probability", "after_noise"),
        ("gain_probability", "after_noise"),
        ("distortion_probability", "after_noise"),
    ],
)
def test_each_lever_changes_every_clip_and_is_keyed(lever, stage):
    x = word_audio()
    c = chain(**{lever: 1.0})
    y = getattr(c, stage)(x, KEYS)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.abs(y) <= 1.0)
    changed = [not np.allclose(a, b, atol=1e-6) for a, b in zip(x, y, strict=True)]
    # mic filters each fire with p < 1, so one clip in four may pass unchanged
    assert sum(changed) >= (3 if lever == "mic_probability" else 4), lever
    # the same keys give the same bytes; a clip's result does not depend on its neighbours
    again = getattr(chain(**{lever: 1.0}), stage)(x[2:], KEYS[2:])
    assert np.array_equal(again, y[2:])
    other = getattr(c, stage)(x, [("copy", 1, i) for i in range(4)])
    assert not np.array_equal(other, y)


def test_global_random_state_is_left_alone():
    np.random.seed(5)
    before = np.random.random()
    np.random.seed(5)
    chain(pitch_probability=1.0, mic_probability=1.0).after_noise(word_audio(), KEYS)
    chain(pitch_probability=1.0).before_noise(word_audio(), KEYS)
    assert np.random.random() == before


def test_rooms_are_seeded_unit_energy_and_start_at_the_direct_path():
    a = room_impulse_responses(1, 16000, (0.2, 0.6), 4)
    b = room_impulse_responses(1, 16000, (0.2, 0.6), 4)
    c = room_impulse_responses(2, 16000, (0.2, 0.6), 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    for rir in a:
        assert abs(float(np.sum(rir.astype(np.float64) ** 2)) - 1.0) < 1e-3
        assert int(np.argmax(np.abs(rir))) <= 8


def test_speed_keeps_the_clip_length_and_the_word():
    x = word_audio(1)
    c = chain(speed_probability=1.0, speed_range="0.8,0.8")
    y = c.before_noise(x, KEYS[:1])
    assert y.shape == x.shape
    # slowed down: the burst is longer and still fully inside the clip
    assert np.sum(np.abs(y[0]) > 0.05) > 1.15 * np.sum(np.abs(x[0]) > 0.05)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("noise_snr_db", "5", "range 'lo,hi'"),
        ("noise_snr_db", "20,5", "lo is above hi"),
        ("speed_range", "0.1,1", "outside"),
        ("gain_db", "a,b", "range 'lo,hi'"),
    ],
)
def test_bad_ranges_are_one_line_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_params(None, {key: value})
    assert f"augment.{key}" in str(e.value) and "\n" not in str(e.value)


def test_snr_mixing_hits_the_requested_snr(tmp_path):
    """Word clips get noise at the SNR drawn from noise_snr_db (here one value: 6 dB)."""
    rows = []
    for i in range(6):
        write_clip(tmp_path / "yes" / f"s{i}_nohash_0.wav", 0.2 * tone(f"y{i}", freq=440))
        rows.append({"path": f"yes/s{i}_nohash_0.wav", "label": "yes", "partition": "training"})
    noise = 0.05 * np.random.default_rng(0).standard_normal(16000 * 5)
    write_clip(tmp_path / "_background_noise_" / "n.wav", noise.astype(np.float32))
    params = load_params(
        None,
        {
            "noise_snr_db": "6,6",
            "background_frequency": 1.0,
            "time_shift_ms": 0.0,
            "preprocess": "mfcc",
        }
        | OFF,
    )
    spec = FeatureSpec.from_params(params)
    ap = AudioProcessor(
        pd.DataFrame(rows), tmp_path, ["yes"], spec, params.augment, seed=0, progress=False
    )
    clean = ap.sets["training"].float_audio()
    mixed, _ = ap.augmented_rows(np.arange(6), 0)
    added = mixed.numpy() - clean
    snr = 20 * np.log10(np.sqrt(np.mean(clean**2, axis=1)) / np.sqrt(np.mean(added**2, axis=1)))
    assert np.allclose(snr, 6.0, atol=0.2), snr


def test_noise_dirs_add_the_users_noise(tmp_path):
    """augment.noise_dirs: its recordings are mixed in beside data_dir's (here: none)."""
    from kws_core.features.background import noise_dirs

    rows = []
    for i in range(4):
        write_clip(tmp_path / "d" / "yes" / f"s{i}_nohash_0.wav", 0.2 * tone(f"y{i}", freq=440))
        rows.append({"path": f"yes/s{i}_nohash_0.wav", "label": "yes", "partition": "training"})
    hum = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(16000 * 3) / 16000)
    write_clip(tmp_path / "my noise" / "fridge.wav", hum.astype(np.float32))
    flags = {"background_frequency": 1.0, "time_shift_ms": 0.0, "preprocess": "mfcc"} | OFF

    def mixed_minus_clean(**over):
        params = load_params(None, flags | over)
        ap = AudioProcessor(
            pd.DataFrame(rows),
            tmp_path / "d",
            ["yes"],
            FeatureSpec.from_params(params),
            params.augment,
            seed=0,
            progress=False,
            noise_dirs=noise_dirs(params),
        )
        mixed, _ = ap.augmented_rows(np.arange(4), 0)
        return mixed.numpy() - ap.sets["training"].float_audio()

    assert np.abs(mixed_minus_clean()).max() == 0  # no noise anywhere: nothing mixed
    added = mixed_minus_clean(noise_dirs=str(tmp_path / "my noise"))
    spectrum = np.abs(np.fft.rfft(added, axis=1))
    assert (np.argmax(spectrum, axis=1) == 1000).any()  # the fridge's 1 kHz (1 Hz bins)

    for bad, message in [(tmp_path / "nowhere", "is not a folder"), (tmp_path / "d", "no .wav")]:
        with pytest.raises(ConfigError, match=message) as e:
            noise_dirs(load_params(None, {"noise_dirs": str(bad)}))
        assert "augment.noise_dirs" in str(e.value) and "\n" not in str(e.value)
