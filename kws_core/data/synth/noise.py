"""Background noise tracks for `_background_noise_/` (the tutorial mixes them into clips)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from kws_core.data.synth import espeak
from kws_core.infra.errors import KwsError

NOISE_NAMES = ("white_noise", "pink_noise", "brown_noise", "machinery_hum", "babble")
# Generators that exist but are not in the default set (data.synthetic.noise_types adds them).
EXTRA_NOISE_NAMES = ("music",)
PEAK_DBFS = (-6.0, -3.0)

# Filler vocabulary for babble: everyday words, none of them a Speech Commands keyword.
BABBLE_WORDS = """
about after again air also always another answer around ask away back because before begin
being below better between big book both bring but call came can car carry change children
city close come could country cut day did different does done door each early earth end enough
even every example face family far father feel few find first food found friend from game gave
girl give good great group grow had hand hard have head hear help here high hold home hour idea
important just keep kind know land large last late later leave letter life light like line
list little live long look made make man many may mean might mile more morning most mother
mountain move much music must name near need never new next night not now number often old
once only open other our over page paper part people picture place plant play point put
question quick quite read real really room run said same saw say school sea second see seem
sentence set should show side small something sometimes song soon sound spell stand start state
still story study such sun sure table take talk tell than that their them then there these
thing think this those thought through time today together too took town travel try turn under
until use very walk want warm was watch water way week well went were what when where which
while white who why will with without word work world would write year young your
""".split()


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _normalise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        raise KwsError("a generated background noise track came out silent: this is a bug")
    target = 10 ** (rng.uniform(*PEAK_DBFS) / 20)
    return (x * (target / peak)).astype(np.float32)


def _coloured(n: int, sample_rate: int, rng: np.random.Generator, exponent: float, f_lo: float):
    """Gaussian noise with power spectrum ~ 1/f**exponent above f_lo (flat below, no DC)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    gain = np.maximum(freqs, f_lo) ** (-exponent / 2)
    gain[0] = 0.0
    return np.fft.irfft(spectrum * gain, n)


def white_noise(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink_noise(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    return _coloured(n, sample_rate, rng, 1.0, 5.0)


def brown_noise(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    return _coloured(n, sample_rate, rng, 2.0, 20.0)


def _slow_wobble(n: int, sample_rate: int, rng: np.random.Generator, hz: float) -> np.ndarray:
    """Smooth random curve in about -1..1 that varies at roughly `hz`."""
    knots = max(int(n / sample_rate * hz) + 2, 2)
    values = rng.uniform(-1.0, 1.0, knots)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), values)


def machinery_hum(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 or 60 Hz, transformer-heavy 2nd harmonic) plus a running motor."""
    mains = float(rng.choice([50.0, 60.0]))
    freq = mains * (1.0 + 0.002 * _slow_wobble(n, sample_rate, rng, 0.2))
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    hum = np.zeros(n)
    for k in range(1, 10):
        if k * mains >= sample_rate / 2 * 0.9:
            break
        level = (1.0 if k == 2 else 0.6 / k ** (0.8 if k % 2 else 1.2)) * rng.uniform(0.6, 1.0)
        hum += level * np.sin(k * phase + rng.uniform(0, 2 * np.pi))

    # Motor: band-limited noise pulsing at the shaft rate, blade-pass tones, slow load changes.
    shaft = rng.uniform(18.0, 45.0) * (1.0 + 0.01 * _slow_wobble(n, sample_rate, rng, 0.1))
    shaft_phase = 2 * np.pi * np.cumsum(shaft) / sample_rate
    hi = min(2500.0, sample_rate / 2 * 0.9)
    sos = butter(4, [150.0, hi], btype="bandpass", fs=sample_rate, output="sos")
    broadband = sosfilt(sos, rng.standard_normal(n))
    broadband *= 1.0 + 0.6 * np.sin(shaft_phase)
    blades = int(rng.integers(3, 8))
    tones = sum(
        (0.5 / h) * np.sin(h * blades * shaft_phase + rng.uniform(0, 2 * np.pi)) for h in (1, 2, 3)
    )
    load = 1.0 + 0.25 * _slow_wobble(n, sample_rate, rng, 0.05)
    motor = load * (broadband / (np.std(broadband) + 1e-12) + tones)
    hum /= np.std(hum) + 1e-12
    mix = hum + rng.uniform(0.5, 0.9) * motor / (np.std(motor) + 1e-12)
    return mix


def _room(n_taps: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Short synthetic room impulse response (direct path + exponentially decaying tail)."""
    rt60 = rng.uniform(0.25, 0.5)
    t = np.arange(n_taps) / sample_rate
    tail = rng.standard_normal(n_taps) * np.exp(-6.9 * t / rt60) * 0.3
    tail[0] = 1.0
    return tail


def babble(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Several espeak voices talking over each other at different levels in a small room."""
    from kws_core.data.synth.speakers import available_variants  # avoid an import cycle

    female, male = available_variants()
    dialects = espeak.list_english_dialects()
    n_voices = int(rng.integers(6, 9))
    mix = np.zeros(n)
    # One private engine for the whole track: same seed -> same call sequence -> same samples.
    with espeak.EspeakEngine() as engine:
        for v in range(n_voices):
            variants = female if v % 2 == 0 else male
            voice = (
                f"{dialects[rng.integers(len(dialects))]}+{variants[rng.integers(len(variants))]}"
            )
            rate = int(rng.integers(140, 211))
            pitch = int(rng.integers(25, 76))
            pitch_range = int(rng.integers(30, 91))
            gain = 10 ** (rng.uniform(-12.0, 0.0) / 20)
            track = np.zeros(n)
            # Start each voice mid-sentence (before t=0) so the track has no quiet lead-in.
            pos = -int(rng.integers(0, 2 * sample_rate))
            for _ in range(100_000):
                if pos >= n:
                    break
                words = rng.choice(BABBLE_WORDS, size=int(rng.integers(4, 13)))
                text = " ".join(words) + rng.choice([".", "?", ","])
                y = engine.synthesize(text, voice, rate, pitch, pitch_range, sample_rate)
                if y.size == 0:
                    continue
                y = y / (np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-12)
                y *= 10 ** (rng.uniform(-4.0, 2.0) / 20)
                end = min(pos + y.size, n)
                if end > 0:
                    start = max(pos, 0)
                    track[start:end] += y[start - pos : end - pos]
                pos = end + int(rng.uniform(0.1, 0.9) * sample_rate)
            mix += gain * track
    taps = _room(int(0.5 * sample_rate), sample_rate, rng)
    return fftconvolve(mix, taps)[:n]


# Scale steps (semitones from the key note) and chord progressions (scale degrees, one a bar).
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 4), (0, 5, 3, 4), (5, 3, 0, 4))


def _note(f0: float, length: int, sample_rate: int, rng: np.random.Generator, decay_s: float):
    """One harmonic tone (a plucked or held instrument): up to 8 partials below Nyquist,
    brightness and decay drawn per note, a 5 ms attack so it does not click."""
    t = np.arange(length) / sample_rate
    tone = np.zeros(length)
    tilt = rng.uniform(0.8, 2.0)
    for k in range(1, 9):
        if k * f0 >= 0.45 * sample_rate:
            break
        tone += k**-tilt * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    attack = np.minimum(t / 0.005, 1.0)
    return tone * attack * np.exp(-t / decay_s)


def music(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like bed: a chord a bar, a bass line, a melody on the beat and noise-burst drums,
    at a random tempo and key, in a small room (a radio or TV playing in the background)."""
    bpm = rng.uniform(70.0, 150.0)
    beat = int(round(60.0 / bpm * sample_rate))
    scale = _SCALES[str(rng.choice(list(_SCALES)))]
    key = 220.0 * 2 ** (int(rng.integers(0, 12)) / 12)  # A3..G#4
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]

    def pitch(degree: int, octave: int) -> float:
        step = scale[degree % 7] + 12 * (degree // 7 + octave)
        return key * 2 ** (step / 12)

    out = np.zeros(n + 4 * beat)
    levels = {"chord": 0.35, "bass": 0.6, "melody": 0.5, "drums": rng.uniform(0.0, 0.5)}
    bar = 0
    for start in range(-int(rng.integers(0, 4 * beat)), n, 4 * beat):
        root = progression[bar % len(progression)]
        bar += 1
        for offset, octave in ((0, 0), (2, 0), (4, 0)):  # triad held for the bar
            note = _note(pitch(root + offset, octave), 4 * beat, sample_rate, rng, 1.2)
            _add(out, start, levels["chord"] * note)
        for b in range(4):
            at = start + b * beat
            if b % 2 == 0:
                note = _note(pitch(root, -2), beat, sample_rate, rng, 0.3)
                _add(out, at, levels["bass"] * note)
            for half in range(2):  # melody in eighth notes, some rests
                if rng.random() < 0.7:
                    degree = root + int(rng.integers(0, 8))
                    note = _note(pitch(degree, 1), beat // 2, sample_rate, rng, 0.15)
                    _add(out, at + half * (beat // 2), levels["melody"] * note)
                hat = rng.standard_normal(beat // 8) * np.exp(-np.arange(beat // 8) / 200.0)
                _add(out, at + half * (beat // 2), 0.3 * levels["drums"] * hat)
            if b % 2 == 1:  # snare on 2 and 4
                snare = rng.standard_normal(beat // 3) * np.exp(-np.arange(beat // 3) / 1500.0)
                _add(out, at, levels["drums"] * snare)
    band = [60.0, min(6000.0, 0.45 * sample_rate)]
    sos = butter(2, band, "bandpass", fs=sample_rate, output="sos")
    mix = sosfilt(sos, out[:n]) * (1.0 + 0.3 * _slow_wobble(n, sample_rate, rng, 0.05))
    return fftconvolve(mix, _room(int(0.4 * sample_rate), sample_rate, rng))[:n]


def _add(out: np.ndarray, at: int, x: np.ndarray) -> None:
    """out[at : at + len(x)] += x, clipped to out (at may be negative)."""
    lo, hi = max(at, 0), min(at + len(x), len(out))
    if hi > lo:
        out[lo:hi] += x[lo - at : hi - at]


_GENERATORS = {
    "white_noise": white_noise,
    "pink_noise": pink_noise,
    "brown_noise": brown_noise,
    "machinery_hum": machinery_hum,
    "babble": babble,
    "music": music,
}


def check_noise_names(names: Sequence[str]) -> None:
    """A KwsError naming the first name no generator has (or an empty list)."""
    unknown = [name for name in names if name not in _GENERATORS]
    if unknown or not names:
        raise KwsError(
            f"no background noise called {unknown[0] if unknown else '(none given)'!r}; "
            f"choose from {', '.join(_GENERATORS)}"
        )


def make_background_noises(
    sample_rate: int = 16000,
    duration_s: float = 60.0,
    seed: int = 0,
    names: Sequence[str] = NOISE_NAMES,
) -> dict[str, np.ndarray]:
    """{name: float32 track} for `names` (NOISE_NAMES and EXTRA_NOISE_NAMES), each
    ceil(duration_s * sample_rate) samples.

    Every track is mean-free and scaled so its peak sits between -6 and -3 dBFS. The same
    (sample_rate, duration_s, seed) always gives the same samples.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise KwsError(f"sample_rate must be an integer in Hz, got {sample_rate!r}")
    if not 8000 <= sample_rate <= 48000:
        raise KwsError(f"sample_rate must be between 8000 and 48000 Hz, got {sample_rate}")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float):
        raise KwsError(f"noise duration must be a number of seconds, got {duration_s!r}")
    if not (math.isfinite(duration_s) and 1.0 <= duration_s <= 3600.0):
        raise KwsError(f"noise duration must be between 1 and 3600 seconds, got {duration_s}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KwsError(f"seed must be an integer, got {seed!r}")
    check_noise_names(names)
    n = math.ceil(duration_s * sample_rate - 1e-9)
    out = {}
    for name in names:
        rng = _rng("kws-synth-noise", seed, name, sample_rate)
        out[name] = _normalise(_GENERATORS[name](n, sample_rate, rng), rng)
    return out
