"""Build a long test stream: words from one partition over background noise, with ground truth.

Words come from the manifest's test partition, or from any labelled folder (`folder_manifest`,
`stream.words_dir`: e.g. real recordings); noise from the data set's `_background_noise_`, or
from any folder of noise files (`noise_files`, `stream.noise_dir`).

Rebuilds the tutorial's generate_streaming_test_wav.py with these choices:

* Word times: one word per `word_gap_ms` slot, at the slot centre jittered by up to +-20% of
  the gap, so neighbouring words are at least 0.6 gaps apart (1.8 s at the 3 s default, more
  than twice the default 750 ms tolerance: a detection can never sit near two words).
* Ground-truth time: the word's *loudest point* (centre of the loudest 50 ms of the clip); the
  clip is placed so that point lands on the truth time, and cut at the stream's ends. The
  tutorial instead writes the clip's *start* (slot start plus a random offset within the gap);
  the loudest point does not depend on where a clip's padding puts the word. Results
  timestamped at their model window's centre line up with it best; window-start stamps (the
  tutorial's) lead it by about half a clip, which the default 750 ms tolerance absorbs.
* Unknown words: exactly round(words * unknown_fraction) slots, chosen at random, hold an
  `_unknown_`-labelled clip and are written as `_unknown_`; the others a wanted word, the word
  drawn uniformly, then a clip of it. `keywords=False` makes every word unknown.
* Background: 1.5 s segments every 1 s, each from a random noise file (looped if short) at a
  random offset and a volume uniform in [0, background_volume] (as the tutorial), with 0.5 s
  linear cross-fades that sum to one. Words are mixed at their recorded level with 30 ms fades.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kws_core.config import SILENCE_LABEL, UNKNOWN_LABEL
from kws_core.data.labels import labelled_clips
from kws_core.infra.atomic import atomic_path
from kws_core.infra.errors import DataError, KwsError
from kws_core.infra.wav import WavError, read_wav, write_wav
from kws_core.streaming.score import Truth, write_ground_truth

JITTER = 0.2  # word time jitter, share of word_gap_ms either side of the slot centre
PEAK_FRAME_MS = 50
WORD_FADE_MS = 30
SEGMENT_MS = 1000  # background segment stride
CROSSFADE_MS = 500  # background segment overlap


def _word_pools(
    manifest: pd.DataFrame, partition: str, labels: Sequence[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Clip paths per wanted word, and the `_unknown_` clip paths, of one partition."""
    missing = {"path", "label", "partition"} - set(manifest.columns)
    if missing:
        raise DataError(f"manifest lacks columns {sorted(missing)}; rebuild it with `kws manifest`")
    rows = manifest[(manifest["partition"] == partition) & (manifest["label"] != SILENCE_LABEL)]
    rows = rows.sort_values("path", kind="stable")  # independent of the manifest's row order
    wanted = [w for w in labels if w not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    keywords = {w: rows.loc[rows["label"] == w, "path"].tolist() for w in wanted}
    unknown = rows.loc[rows["label"] == UNKNOWN_LABEL, "path"].tolist()
    return {w: p for w, p in keywords.items() if p}, unknown


def folder_manifest(folder: Path, wanted_words: Sequence[str]) -> pd.DataFrame:
    """A labelled folder (`<label>/*.wav`: the official test-set or the tutorial layout) as
    manifest rows of the `testing` partition, so streams can be built from any recordings.

    A folder named after a wanted word gives that word; any other word folder (`_unknown_`
    included) gives `_unknown_`; `_silence_` and `_background_noise_` are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"stream.words_dir: {folder} is not a folder of <label>/*.wav clips")
    rows = []
    for f, label in labelled_clips(folder, [*wanted_words, SILENCE_LABEL]):
        if label == SILENCE_LABEL:
            continue  # silence is the background noise's job
        rel = f.relative_to(folder).as_posix()
        # Which files and how big: a changed folder gives a new stream (no audio read here).
        sha1 = hashlib.sha1(f"{rel}:{f.stat().st_size}".encode()).hexdigest()
        rows.append({"path": rel, "label": label, "partition": "testing", "sha1": sha1})
    if not rows:
        raise DataError(f"stream.words_dir: {folder} holds no <label>/*.wav clips")
    return pd.DataFrame(rows)


def noise_files(folder: Path) -> list[str]:
    """The .wav files of a noise folder (absolute paths), or a one-line DataError."""
    folder = Path(folder)
    files = sorted(str(p.resolve()) for p in folder.glob("*.wav")) if folder.is_dir() else []
    if not files:
        raise DataError(f"stream.noise_dir: {folder} holds no .wav files of background noise")
    return files


def _check_pools(
    keywords: dict[str, list[str]],
    unknown: list[str],
    labels: Sequence[str],
    partition: str,
    want_keywords: bool,
    unknown_fraction: float,
) -> None:
    if want_keywords and not keywords:
        raise DataError(
            f"the {partition} partition of the manifest has no clips of the wanted words "
            f"{[w for w in labels if not w.startswith('_')]}; check wanted_words or rebuild "
            "the manifest (`kws manifest`)"
        )
    if (not want_keywords or unknown_fraction > 0) and not unknown:
        raise DataError(
            f"the {partition} partition of the manifest has no _unknown_ clips; set "
            "unknown_percentage > 0 and rebuild the manifest, or set stream_unknown_fraction to 0"
        )


def _load_noise(background: Sequence[str | Path], data_dir: Path, sample_rate: int) -> list:
    noise = []
    for item in background:
        path = Path(item)
        path = path if path.is_absolute() else data_dir / path
        try:
            x = read_wav(path, sample_rate)
        except (WavError, OSError) as e:
            raise DataError(
                f"background file {path}: {e}; fix or remove it and rebuild the manifest"
            ) from None
        if x.size == 0:
            raise DataError(f"background file {path} has no samples; remove it")
        noise.append(x)
    return noise


def _loudest_point(clip: np.ndarray, frame: int) -> int:
    """Sample index at the centre of the loudest `frame`-sample stretch."""
    if clip.size <= frame:
        return clip.size // 2
    energy = np.cumsum(np.square(clip, dtype=np.float64))
    sums = energy[frame - 1 :] - np.r_[0.0, energy[:-frame]]
    return int(np.argmax(sums)) + frame // 2


def _fade(n: int, ramp: int) -> np.ndarray:
    env = np.ones(n, dtype=np.float32)
    ramp = min(ramp, n // 2)
    if ramp:
        up = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        env[:ramp], env[n - ramp :] = up, up[::-1]
    return env


def _mix_background(
    out: np.ndarray,
    noise: list[np.ndarray],
    volume: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> None:
    """Cross-faded noise segments over the whole of `out` (in place)."""
    stride = SEGMENT_MS * sample_rate // 1000
    ramp = CROSSFADE_MS * sample_rate // 1000
    seg = stride + ramp
    # Loop every file to at least one segment past its end so any offset can be sliced.
    looped = [np.resize(x, x.size + seg) for x in noise]
    up = ((np.arange(ramp, dtype=np.float32) + 0.5) / ramp) if ramp else np.zeros(0, np.float32)
    env = np.concatenate([up, np.ones(stride - ramp, np.float32), 1 - up])
    count = math.ceil(out.size / stride) + 1
    which = rng.integers(len(noise), size=count)
    offsets = rng.random(count)
    volumes = rng.uniform(0.0, volume, size=count).astype(np.float32)
    for k in range(count):
        start = k * stride - ramp  # segment k fades in over [k*stride - ramp, k*stride]
        lo, hi = max(start, 0), min(start + seg, out.size)
        if lo >= hi:
            continue
        src = noise[which[k]]
        off = int(offsets[k] * src.size)
        piece = looped[which[k]][off + lo - start : off + hi - start]
        out[lo:hi] += piece * env[lo - start : hi - start] * volumes[k]


def _word_plan(
    n_words: int,
    word_gap_ms: float,
    unknown_fraction: float,
    keywords: dict[str, list[str]],
    unknown: list[str],
    want_keywords: bool,
    rng: np.random.Generator,
) -> list[tuple[int, str, str]]:
    """(time_ms, truth label, clip path) of every word, in time order."""
    n_unknown = n_words if not want_keywords else round(n_words * unknown_fraction)
    is_unknown = np.zeros(n_words, dtype=bool)
    is_unknown[rng.choice(n_words, size=n_unknown, replace=False)] = True
    jitter = rng.uniform(-JITTER, JITTER, size=n_words)
    words = sorted(keywords)
    plan = []
    for i in range(n_words):
        time_ms = round((i + 0.5 + jitter[i]) * word_gap_ms)
        if is_unknown[i]:
            label, path = UNKNOWN_LABEL, unknown[int(rng.integers(len(unknown)))]
        else:
            label = words[int(rng.integers(len(words)))]
            path = keywords[label][int(rng.integers(len(keywords[label])))]
        plan.append((time_ms, label, path))
    return plan


def _read_clip(path: str, data_dir: Path, sample_rate: int, cache: dict) -> np.ndarray:
    if path not in cache:
        try:
            cache[path] = read_wav(data_dir / path, sample_rate)
        except (WavError, OSError) as e:
            raise DataError(
                f"{data_dir / path}: {e}; rebuild the manifest (`kws manifest`)"
            ) from None
    return cache[path]


def generate_stream(
    manifest: pd.DataFrame,
    data_dir: Path,
    background: Sequence[str | Path],
    labels: Sequence[str],
    duration_s: float,
    word_gap_ms: float = 3000,
    unknown_fraction: float = 0.3,
    background_volume: float = 0.1,
    sample_rate: int = 16000,
    seed: int = 0,
    partition: str = "testing",
    keywords: bool = True,
) -> tuple[np.ndarray, Truth]:
    """A `duration_s` stream (float32 in [-1, 1]) and its ground truth `(label, time_ms)`.

    `background` lists noise files (absolute, or relative to data_dir as in background.csv);
    it may be empty only with background_volume 0. Same seed, same stream.
    """
    if not duration_s > 0 or not word_gap_ms > 0:
        raise KwsError(f"duration_s and word_gap_ms must be > 0 (got {duration_s}, {word_gap_ms})")
    if not 0 <= unknown_fraction <= 1:
        raise KwsError(f"unknown_fraction must be in [0, 1] (got {unknown_fraction})")
    data_dir = Path(data_dir)
    pools, unknown = _word_pools(manifest, partition, labels)
    _check_pools(pools, unknown, labels, partition, keywords, unknown_fraction)
    if not background and background_volume > 0:
        raise DataError(
            f"no background noise files (expected .wav files in {data_dir / '_background_noise_'}"
            " listed in background.csv); add some, or set background_volume to 0"
        )
    rng = np.random.default_rng(seed)
    out = np.zeros(round(duration_s * sample_rate), dtype=np.float32)
    if background_volume > 0:
        _mix_background(
            out, _load_noise(background, data_dir, sample_rate), background_volume, sample_rate, rng
        )

    n_words = math.floor(duration_s * 1000 / word_gap_ms)
    plan = _word_plan(n_words, word_gap_ms, unknown_fraction, pools, unknown, keywords, rng)
    frame = PEAK_FRAME_MS * sample_rate // 1000
    fade = WORD_FADE_MS * sample_rate // 1000
    cache: dict[str, np.ndarray] = {}
    for time_ms, _, path in plan:
        clip = _read_clip(path, data_dir, sample_rate, cache)
        start = round(time_ms * sample_rate / 1000) - _loudest_point(clip, frame)
        lo, hi = max(start, 0), min(start + clip.size, out.size)
        if lo < hi:
            out[lo:hi] += (clip * _fade(clip.size, fade))[lo - start : hi - start]
    np.clip(out, -1.0, 1.0, out=out)
    return out, [(label, time_ms) for time_ms, label, _ in plan]


def write_stream(
    wav_path: str | Path,
    truth_path: str | Path,
    samples: np.ndarray,
    truth: Sequence[tuple[str, float]],
    sample_rate: int = 16000,
) -> tuple[Path, Path]:
    """Write the stream WAV and its ground-truth file; neither appears unless both succeed."""
    with atomic_path(wav_path, ".wav") as wav_tmp, atomic_path(truth_path, ".txt") as truth_tmp:
        write_wav(wav_tmp, samples, sample_rate)
        write_ground_truth(truth_tmp, truth)
    return Path(wav_path), Path(truth_path)
