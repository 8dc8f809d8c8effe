"""Recording conditions for training clips: speed, pitch, rooms, microphones, gain, distortion.

Synthetic words are studio-clean; people are recorded by phones and laptops in rooms. The chain
below turns a clean clip into a plausible recording, in two halves around the background noise
that `input_data` mixes in:

- `before_noise`: speed perturbation (resampling, so pitch and formants move together, like a
  different vocal tract), pitch shift (audiomentations), and a simulated room
  (pyroomacoustics image-source rooms of random size, absorption and source/mic positions);
- `after_noise`: a random microphone (audiomentations parametric EQ, high-pass and band limit),
  gain over a wide range, and occasional distortion or codec-like loss.

Every step fires with its own probability from `augment` in params.yaml. Randomness comes from a
generator keyed by (seed, key) per clip, so a clip gets the same treatment whatever batch or
chunk it is computed in, and the same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
from scipy.signal import fftconvolve, resample_poly

from kws_core.config import CHAIN_PROBABILITIES, AugmentConfig
from kws_core.infra.errors import KwsError

# `augment` overrides that switch the whole chain off: the tutorial's augmentation exactly.
CHAIN_OFF = dict.fromkeys(CHAIN_PROBABILITIES, 0.0)
SPEED_STEPS = 200  # speed factors are rounded to 1/200 so resampling uses small integer ratios
MAX_IMAGE_ORDER = 10  # image-source depth: enough for RT60 <= 1 s at 16 kHz, ~2 ms per room
RIR_SECONDS = 0.6  # longer tails are cut (a 1 s clip barely holds more)


def _key_seed(seed: int, *key: object) -> int:
    digest = hashlib.sha256("|".join(map(str, ("kws-recording", seed, *key))).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@contextlib.contextmanager
def _global_seed(value: int) -> Iterator[None]:
    """Seed `random` and `np.random` (what audiomentations draws from), then restore them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(value)
    np.random.seed(value % (2**32))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@lru_cache(maxsize=4)
def room_impulse_responses(
    seed: int, sample_rate: int, rt60: tuple[float, float], rooms: int
) -> tuple[np.ndarray, ...]:
    """`rooms` simulated room impulse responses (float32, unit energy, direct path first).

    Shoebox rooms of 2.5-10 m x 2.5-8 m x 2.3-4 m with a random reverberation time in `rt60`,
    the talker and the microphone at random places at least 0.4 m from the walls.
    """
    import pyroomacoustics as pra

    out = []
    for i in range(rooms):
        rng = np.random.default_rng(_key_seed(seed, "room", i))
        dims = rng.uniform([2.5, 2.5, 2.3], [10.0, 8.0, 4.0])
        target = float(rng.uniform(*rt60))
        try:
            absorption, order = pra.inverse_sabine(target, dims)
        except ValueError:  # a small room cannot ring that long: take its longest
            absorption, order = 0.05, MAX_IMAGE_ORDER
        room = pra.ShoeBox(
            dims,
            fs=sample_rate,
            materials=pra.Material(float(absorption)),
            max_order=int(min(order, MAX_IMAGE_ORDER)),
        )
        room.add_source(rng.uniform(0.4, dims - 0.4))
        room.add_microphone(rng.uniform(0.4, dims - 0.4))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], np.float64)
        start = max(int(np.argmax(np.abs(rir))) - 8, 0)  # keep the word where it was
        rir = rir[start : start + int(RIR_SECONDS * sample_rate)]
        out.append((rir / np.sqrt(np.sum(rir**2))).astype(np.float32))
    return tuple(out)


def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster (resampled), cut or padded back around its loudest part."""
    n = len(x)
    down = int(round(factor * SPEED_STEPS))
    y = resample_poly(x, SPEED_STEPS, down).astype(np.float32)
    if len(y) >= n:
        energy = np.cumsum(np.concatenate([[0.0], y.astype(np.float64) ** 2]))
        centre = int(np.searchsorted(energy, energy[-1] / 2))
        start = int(np.clip(centre - n // 2, 0, len(y) - n))
        return y[start : start + n]
    pad = n - len(y)
    return np.pad(y, (pad // 2, pad - pad // 2))


class RecordingChain:
    """The numpy half of training augmentation, configured once from `augment`."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int, seed: int) -> None:
        import audiomentations as am

        self.cfg = cfg
        self.sample_rate = sample_rate
        self.seed = int(seed)
        self.speed = cfg.pair("speed_range")
        self.gain = cfg.pair("gain_db")
        self._rirs: tuple[np.ndarray, ...] | None = None
        nyquist = sample_rate / 2
        self._pitch = am.PitchShift(
            min_semitones=-cfg.pitch_semitones, max_semitones=cfg.pitch_semitones, p=1.0
        )
        self._mic = am.Compose(
            [
                am.SevenBandParametricEQ(min_gain_db=-9.0, max_gain_db=9.0, p=0.8),
                am.HighPassFilter(min_cutoff_freq=60.0, max_cutoff_freq=400.0, p=0.7),
                am.LowPassFilter(
                    min_cutoff_freq=min(3000.0, 0.4 * nyquist),
                    max_cutoff_freq=0.95 * nyquist,
                    p=0.7,
                ),
            ]
        )
        self._distortion = am.OneOf(
            [
                am.TanhDistortion(min_distortion=0.05, max_distortion=0.5, p=1.0),
                am.ClippingDistortion(max_percentile_threshold=20, p=1.0),
                am.BitCrush(min_bit_depth=6, max_bit_depth=10, p=1.0),
                am.Aliasing(
                    min_sample_rate=min(6000, sample_rate // 2),
                    max_sample_rate=min(12000, sample_rate - 1),
                    p=1.0,
                ),
            ]
        )

    @property
    def rirs(self) -> tuple[np.ndarray, ...]:
        if self._rirs is None:
            rt60 = self.cfg.pair("reverb_rt60_s")
            assert rt60 is not None
            self._rirs = room_impulse_responses(
                self.seed, self.sample_rate, rt60, self.cfg.reverb_rooms
            )
        return self._rirs

    def _clip_before(self, x: np.ndarray, key: Sequence[object]) -> np.ndarray:
        cfg = self.cfg
        rng = np.random.default_rng(_key_seed(self.seed, "before", *key))
        draws = rng.random(3)
        if draws[0] < cfg.speed_probability and self.speed is not None:
            x = _speed(x, float(rng.uniform(*self.speed)))
        if draws[1] < cfg.pitch_probability:
            with _global_seed(_key_seed(self.seed, "pitch", *key)):
                x = self._pitch(x, self.sample_rate)
        if draws[2] < cfg.reverb_probability:
            rir = self.rirs[int(rng.integers(len(self.rirs)))]
            peak = float(np.max(np.abs(x)))
            x = fftconvolve(x, rir)[: len(x)].astype(np.float32)
            # Keep the dry peak level: the gain step (after noise) sets the recording level.
            wet = float(np.max(np.abs(x)))
            if wet > 0:
                x *= peak / wet
        return x

    def _clip_after(self, x: np.ndarray, key: Sequence[object]) -> np.ndarray:
        cfg = self.cfg
        rng = np.random.default_rng(_key_seed(self.seed, "after", *key))
        draws = rng.random(3)
        if draws[0] < cfg.mic_probability:
            with _global_seed(_key_seed(self.seed, "mic", *key)):
                x = self._mic(x, self.sample_rate)
        if draws[1] < cfg.gain_probability and self.gain is not None:
            x = x * np.float32(10 ** (rng.uniform(*self.gain) / 20))
        if draws[2] < cfg.distortion_probability:
            with _global_seed(_key_seed(self.seed, "distortion", *key)):
                x = self._distortion(x, self.sample_rate)
        return np.clip(x, -1.0, 1.0).astype(np.float32)

    def _apply(self, fn, audio: np.ndarray, keys: Sequence[Sequence[object]]) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or len(audio) != len(keys):
            raise KwsError(
                f"recording chain: expected [clips, samples] and one key per clip, "
                f"got {audio.shape} and {len(keys)} keys"
            )
        out = np.empty_like(audio)
        for i, (x, key) in enumerate(zip(audio, keys, strict=True)):
            out[i] = fn(x, key) if np.any(x) else x
        return out

    def before_noise(self, audio: np.ndarray, keys: Sequence[Sequence[object]]) -> np.ndarray:
        """Speed, pitch and room for each clip of `audio` [clips, samples] (float PCM)."""
        return self._apply(self._clip_before, audio, keys)

    def after_noise(self, audio: np.ndarray, keys: Sequence[Sequence[object]]) -> np.ndarray:
        """Microphone, gain and distortion for each clip of `audio` [clips, samples]."""
        return self._apply(self._clip_after, audio, keys)
