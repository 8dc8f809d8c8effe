"""`kws wav-to-spectrogram`: what a clip looks like, and what the model sees of it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from kws_core.features.augmented_audio import fit_length
from kws_core.features.front_end import FeatureSpec, compute_features
from kws_core.infra.errors import DataError
from kws_core.infra.wav import with_known_length


@dataclass
class LoadedWav:
    samples: np.ndarray  # float32 mono at `sample_rate`
    sample_rate: int
    notes: list[str]  # what was done to it (resampled, down-mixed)


def load_any_wav(path: str | Path, sample_rate: int) -> LoadedWav:
    """Read a WAV of any rate, width or channel count; down-mix and resample to sample_rate."""
    import soundfile as sf
    from scipy.signal import resample_poly

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:  # libsndfile calls an unreadable file a "System error."
        open(p, "rb").close()
    except OSError as e:
        raise DataError(f"{p}: cannot be read ({e.strerror}); check its permissions") from None
    # A recorder's "unknown length" header: read it as the kws reader does (to the end of file).
    fixed = with_known_length(p)
    try:
        source = io.BytesIO(fixed) if fixed is not None else str(p)
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises its own error types for bad files
        raise DataError(
            f"{p}: not a readable WAV file ({str(e).strip().splitlines()[0]})"
        ) from None
    if data.shape[0] == 0:
        raise DataError(f"{p}: the WAV file holds no samples")
    if not 1000 <= rate <= 384000:
        raise DataError(f"{p}: sample rate {rate} Hz is not an audio rate (1 kHz - 384 kHz)")
    if not np.all(np.isfinite(data)):
        raise DataError(f"{p}: the WAV file holds NaN or infinite samples")
    notes = []
    x = data.mean(axis=1)
    if data.shape[1] > 1:
        notes.append(f"down-mixed {data.shape[1]} channels to mono")
    if rate != sample_rate:
        g = gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
        notes.append(f"resampled {rate} Hz to {sample_rate} Hz")
    return LoadedWav(x.astype(np.float32), sample_rate, notes)


def spectrogram_db(x: np.ndarray, rate: int, window_ms: float, stride_ms: float):
    """Power spectrogram in dB: (times s, freqs Hz, [freq, time] dB)."""
    n = int(rate * window_ms / 1000)
    hop = int(rate * stride_ms / 1000)
    nfft = 1 << (n - 1).bit_length()
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    frames = 1 + (len(x) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    power = np.abs(np.fft.rfft(x[idx] * window, nfft)) ** 2
    db = 10 * np.log10(power.T + 1e-10)
    times = (np.arange(frames) * hop + n / 2) / rate
    freqs = np.fft.rfftfreq(nfft, 1 / rate)
    return times, freqs, db


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def wav_to_spectrogram(
    input_wav: str | Path, output_png: str | Path, spec: FeatureSpec
) -> list[str]:
    """Draw the clip's spectrogram and the model's features of it into one PNG; returns notes."""
    from kws_core.infra.plots import plot_spectrogram

    out = Path(output_png)
    if out.exists() and (not out.is_file() or out.read_bytes()[:8] != PNG_MAGIC):
        what = "the input WAV" if out.resolve() == Path(input_wav).resolve() else "not a PNG"
        raise DataError(
            f"--output_png {out} exists and is {what}; it would be overwritten: choose a new "
            "file name for the picture"
        )
    wav = load_any_wav(input_wav, spec.sample_rate)
    times, freqs, db = spectrogram_db(
        wav.samples, spec.sample_rate, spec.window_size_ms, spec.window_stride_ms
    )
    clip = fit_length(wav.samples, spec.desired_samples)[None, :]
    import tensorflow as tf

    features = compute_features(tf.constant(clip), spec).numpy()[0]
    notes = list(wav.notes)
    if len(wav.samples) != spec.desired_samples:
        notes.append(
            f"the model sees the first {spec.clip_duration_ms} ms "
            f"({len(wav.samples) / spec.sample_rate:.2f} s in the file)"
        )
    plot_spectrogram(
        times, freqs, db, features, spec.preprocess, Path(output_png), title=Path(input_wav).name
    )
    return notes
