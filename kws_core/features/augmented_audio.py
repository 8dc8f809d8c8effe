"""Audio for training and evaluation: clips in memory, tutorial-style augmentation in TensorFlow.

Training batches are drawn by a `tf.data` pipeline whose randomness is *stateless*, keyed by
(seed, step): batch N is the same whether a run started at step 0 or resumed at step N-1.
Validation and test audio is never augmented and is identical from one evaluation to the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from kws_core.config import SILENCE_LABEL, AugmentConfig, Params
from kws_core.features.background import load_background, noise_dirs
from kws_core.features.front_end import FeatureSpec, compute_features
from kws_core.infra.errors import DataError
from kws_core.infra.wav import WavError, read_wav


@dataclass
class AudioSet:
    """One partition in memory: int16 clips padded/trimmed to the clip length."""

    audio: np.ndarray  # [N, desired_samples] int16
    labels: np.ndarray  # [N] int32
    paths: list[str]
    weights: np.ndarray | None = None  # [N] float: sampling weight of each row (data.sources)

    def __post_init__(self) -> None:
        if self.weights is None:
            self.weights = np.ones(len(self.labels), np.float64)

    def __len__(self) -> int:
        return len(self.labels)

    def float_audio(self) -> np.ndarray:
        return self.audio.astype(np.float32) / 32768.0


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end or trim to n samples (as the tutorial's decoder does)."""
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))


# Second element of the stateless keys of the feature cache's copies (copy c: BASE - 8c - k), far
# from the keys training steps use (step * 8 + k, and small negative steps for stats/calibration).
COPY_KEY_BASE = -(1 << 40)


def _seeded(seed: int, *keys: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, (seed, *keys))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class AudioProcessor:
    """Loads the manifest's clips and serves training batches and fixed evaluation sets."""

    def __init__(
        self,
        manifest: pd.DataFrame,
        data_dir: Path,
        labels: list[str],
        spec: FeatureSpec,
        augment: AugmentConfig,
        seed: int = 0,
        progress: bool = True,
        noise_dirs: Sequence[Path] = (),
    ) -> None:
        self.spec = spec
        self.augment = augment
        self.labels = labels
        self.seed = seed
        self.data_dir = data_dir
        self._mix = None
        self._chain = None
        if augment.recording_chain:
            from kws_core.features.recording import RecordingChain

            self._chain = RecordingChain(augment, spec.sample_rate, seed)
        self.index = {label: i for i, label in enumerate(labels)}
        n = spec.desired_samples
        self.background = load_background(data_dir, spec.sample_rate, n, noise_dirs)
        # Without `_background_noise_` recordings, noise mixing is skipped and silence examples
        # are digital zeros, as in the tutorial.
        self.sets: dict[str, AudioSet] = {}
        for partition in ("training", "validation", "testing"):
            rows = manifest[manifest["partition"] == partition]
            self.sets[partition] = self._load(rows, partition, progress)
        if len(self.sets["training"]) == 0:
            raise DataError("the manifest has no training rows; check validation/testing shares")

    @classmethod
    def from_params(
        cls,
        params: Params,
        manifest: pd.DataFrame,
        data_dir: Path,
        labels: list[str],
        spec: FeatureSpec,
        progress: bool = True,
    ) -> AudioProcessor:
        """The processor training, the feature cache and int8 calibration all use: params'
        augmentation, seed and noise folders."""
        return cls(
            manifest,
            data_dir,
            labels,
            spec,
            params.augment,
            seed=params.train.seed,
            progress=progress,
            noise_dirs=noise_dirs(params),
        )

    def _load(self, rows: pd.DataFrame, partition: str, progress: bool) -> AudioSet:
        n = self.spec.desired_samples
        audio = np.zeros((len(rows), n), dtype=np.int16)
        labels = np.zeros(len(rows), dtype=np.int32)
        weights = rows["weight"].to_numpy(np.float64) if "weight" in rows else np.ones(len(rows))
        paths = []
        it = tqdm(
            enumerate(rows.itertuples()),
            total=len(rows),
            desc=f"load {partition}",
            unit="clip",
            disable=not progress,
            leave=False,
        )
        for i, row in it:
            label = row.label
            if label not in self.index:
                raise DataError(f"manifest label {label!r} is not in the label list {self.labels}")
            labels[i] = self.index[label]
            paths.append(row.path)
            if label == SILENCE_LABEL:
                if partition != "training":
                    audio[i] = self._fixed_silence(partition, i)
                continue  # training silence is mixed from noise per batch
            try:
                x = read_wav(self.data_dir / row.path, self.spec.sample_rate)
            except (WavError, OSError) as e:
                raise DataError(
                    f"{self.data_dir / row.path}: {e}; rebuild the manifest (`kws manifest`)"
                ) from None
            audio[i] = np.round(fit_length(x, n) * 32767.0).astype(np.int16)
        return AudioSet(audio, labels, paths, weights)

    def _fixed_silence(self, partition: str, i: int) -> np.ndarray:
        """A deterministic silence clip for evaluation: background noise at a seeded volume."""
        n = self.spec.desired_samples
        if not self.background:
            return np.zeros(n, dtype=np.int16)
        rng = _seeded(self.seed, "silence", partition, i)
        noise = self.background[int(rng.integers(len(self.background)))]
        start = int(rng.integers(0, len(noise) - n))
        volume = rng.uniform(0, self.augment.background_volume)
        clip = np.clip(noise[start : start + n] * volume, -1.0, 1.0)
        return np.round(clip * 32767.0).astype(np.int16)

    # ---------------------------------------------------------------- training batches
    def training_dataset(self, batch_size: int, first_step: int, last_step: int) -> tf.data.Dataset:
        """Batches of (features, labels) for steps first_step..last_step (1-based, inclusive)."""
        make_audio = self._audio_batch_fn(batch_size)
        spec = self.spec

        def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x, y = make_audio(step)
            return compute_features(x, spec), y

        steps = tf.data.Dataset.range(first_step, last_step + 1)
        return steps.map(
            make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        ).prefetch(2)

    def augmented_audio(self, count: int, batch_size: int = 100) -> np.ndarray:
        """`count` augmented training clips (float PCM), from steps training never draws.

        The int8 export calibrates on these: the same mixture of words, silence, shifts and
        background noise the model saw in training.
        """
        make_audio = self._audio_batch_fn(batch_size)
        batches = -(-count // batch_size)
        out = [make_audio(tf.constant(-1000 - b, tf.int64))[0].numpy() for b in range(batches)]
        return np.concatenate(out)[:count]

    def _audio_batch_fn(self, batch_size: int):
        """step -> (augmented float audio [batch, samples], labels), keyed by (seed, step)."""
        count = len(self.sets["training"])
        seed = self.seed
        mix, mix_audio = self._mix_fn()
        chain = self._chain
        train = self.sets["training"]
        n = self.spec.desired_samples

        def before(idx: np.ndarray, step: np.int64) -> np.ndarray:
            keys = [("step", int(step), k) for k in range(len(idx))]
            return chain.before_noise(train.audio[idx].astype(np.float32) / 32768.0, keys)

        def after(x: np.ndarray, step: np.int64) -> np.ndarray:
            return chain.after_noise(x, [("step", int(step), k) for k in range(len(x))])

        w = train.weights
        logits = None if np.all(w == w[0]) else tf.constant(np.log(w)[None, :], tf.float32)

        def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            keys = [tf.stack([tf.constant(seed, tf.int64), step * 8 + k]) for k in range(8)]
            if logits is None:
                idx = tf.random.stateless_uniform([batch_size], keys[0], 0, count, tf.int64)
            else:  # data.sources weights: rows drawn in proportion to weight
                idx = tf.random.stateless_categorical(logits, batch_size, keys[0])[0]
            draws = self._draws(keys, batch_size)
            if chain is None:
                return mix(idx, draws)
            x = tf.numpy_function(before, [idx, step], tf.float32, stateful=False)
            x = tf.ensure_shape(x, [batch_size, n])
            x, y = mix_audio(x, tf.gather(train.labels, idx), draws)
            x = tf.numpy_function(after, [x, step], tf.float32, stateful=False)
            return tf.ensure_shape(x, [batch_size, n]), y

        return make_batch

    def augmented_rows(self, indices: np.ndarray, copy: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Augmented copy `copy` of training rows `indices`: (float audio [n, samples], labels).

        Row i of copy c gets the same shift, noise and volume whichever chunk it is computed in:
        the draws are made for the whole partition with keys (seed, copy) and then indexed, so
        the feature cache is the same for any chunk size. Silence rows get fresh noise per copy.
        """
        if self._mix is None:
            self._mix = self._mix_fn()
        mix, mix_audio = self._mix
        train = self.sets["training"]
        count = len(train)
        base = COPY_KEY_BASE - 8 * int(copy)
        keys = [tf.constant([self.seed, base - k], tf.int64) for k in range(8)]
        indices = np.asarray(indices, np.int64)
        idx = tf.constant(indices)
        draws = {k: tf.gather(v, idx) for k, v in self._draws(keys, count).items()}
        if self._chain is None:
            return mix(idx, draws)
        clip_keys = [("copy", int(copy), int(i)) for i in indices]
        x = self._chain.before_noise(train.audio[indices].astype(np.float32) / 32768.0, clip_keys)
        x, y = mix_audio(tf.constant(x), tf.constant(train.labels[indices]), draws)
        return tf.constant(self._chain.after_noise(x.numpy(), clip_keys)), y

    def _draws(self, keys: list[tf.Tensor], size: int) -> dict[str, tf.Tensor]:
        """The per-clip random numbers of the augmentation, `size` of each, from keys[1:6]."""
        shift_max = int(self.spec.sample_rate * self.augment.time_shift_ms / 1000)
        out: dict[str, tf.Tensor] = {}
        if shift_max > 0:
            out["shift"] = tf.random.stateless_uniform(
                [size], keys[1], -shift_max, shift_max + 1, tf.int64
            )
        if self.background:
            out["which"] = tf.random.stateless_uniform(
                [size], keys[2], 0, len(self.background), tf.int64
            )
            out["offset"] = tf.random.stateless_uniform([size], keys[3])
            out["use"] = tf.random.stateless_uniform([size], keys[4])
            out["volume"] = tf.random.stateless_uniform([size], keys[5])
            if self.augment.noise_snr_db:
                out["snr"] = tf.random.stateless_uniform([size], keys[6])
        return out

    def _mix_fn(self):
        """Two jitted functions: (training row indices, draws) -> (augmented audio, labels), and
        the same from (float audio, labels, draws) for audio the recording chain changed first."""
        train = self.sets["training"]
        spec, aug = self.spec, self.augment
        n = spec.desired_samples
        shift_max = int(spec.sample_rate * aug.time_shift_ms / 1000)
        audio = tf.constant(train.audio)
        labels = tf.constant(train.labels)
        silence_id = self.index.get(SILENCE_LABEL, -1)
        if self.background:
            noise = tf.constant(np.concatenate(self.background))
            starts = np.cumsum([0] + [len(b) for b in self.background[:-1]])
            noise_start = tf.constant(starts, tf.int64)
            noise_room = tf.constant([len(b) - n for b in self.background], tf.int64)

        snr = aug.pair("noise_snr_db")

        def mix_audio(x: tf.Tensor, y: tf.Tensor, draws: dict[str, tf.Tensor]):
            if shift_max > 0:
                shift = draws["shift"]
                padded = tf.pad(x, [[0, 0], [shift_max, shift_max]])
                pos = (shift_max - shift)[:, None] + tf.range(n, dtype=tf.int64)[None, :]
                x = tf.gather(padded, pos, batch_dims=1)
            is_silence = tf.equal(y, silence_id)
            x = tf.where(is_silence[:, None], tf.zeros_like(x), x)
            if self.background:
                which = draws["which"]
                room = tf.cast(tf.gather(noise_room, which), tf.float32)
                offset = tf.cast(draws["offset"] * room, tf.int64)
                pos = (tf.gather(noise_start, which) + offset)[:, None] + tf.range(
                    n, dtype=tf.int64
                )
                bg = tf.gather(noise, pos)
                use = draws["use"] < aug.background_frequency
                use = tf.logical_or(use, is_silence)
                volume = draws["volume"] * aug.background_volume
                if snr is not None:
                    # Word clips: noise at an SNR against the clip's level; silence keeps volume.
                    db = snr[0] + draws["snr"] * (snr[1] - snr[0])
                    speech = tf.sqrt(tf.reduce_mean(tf.square(x), axis=1))
                    noise_rms = tf.sqrt(tf.reduce_mean(tf.square(bg), axis=1)) + 1e-9
                    by_snr = speech / (noise_rms * tf.pow(10.0, db / 20.0))
                    volume = tf.where(is_silence | (speech <= 0), volume, by_snr)
                volume = tf.where(use, volume, 0.0)
                x = tf.clip_by_value(x + bg * volume[:, None], -1.0, 1.0)
            return x, y

        def mix(idx: tf.Tensor, draws: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.cast(tf.gather(audio, idx), tf.float32) / 32768.0
            return mix_audio(x, tf.gather(labels, idx), draws)

        # XLA turns the two [batch, samples] element gathers into contiguous copies: 7x faster
        # than TensorFlow's GatherV2 kernels, which were the input pipeline's hot spot
        # (bench/profile_ops.py). The random draws stay outside: XLA's RNG differs.
        return tf.function(mix, jit_compile=True), tf.function(mix_audio, jit_compile=True)

    def feature_stats(self, batch_size: int, batches: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin mean and std of augmented training features (what the model will see)."""
        from kws_core.features.stats import feature_stats

        # Negative step ids: batches of the same distribution that training itself never draws.
        data = self.training_dataset(batch_size, -batches, -1)
        return feature_stats(x.numpy() for x, _ in data)

    # ---------------------------------------------------------------- evaluation sets
    def features(self, partition: str, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Un-augmented features and labels of a partition (the same on every call)."""
        data = self.sets[partition]
        return features_of(data.float_audio(), self.spec, batch), data.labels


def features_of(audio: np.ndarray, spec: FeatureSpec, batch: int = 1000) -> np.ndarray:
    """Features of float audio [N, samples] computed in batches."""
    h, w = spec.shape
    out = np.zeros((len(audio), h, w), dtype=np.float32)
    for i in range(0, len(audio), batch):
        out[i : i + batch] = compute_features(tf.constant(audio[i : i + batch]), spec).numpy()
    return out
