"""Audio front ends: PCM clips -> 2-D "fingerprints", as in TensorFlow's speech_commands tutorial.

`FeatureSpec` reproduces the tutorial's `models.prepare_model_settings` arithmetic (98 x 40 for the
defaults). `compute_features` is the TensorFlow front end used for training *and* inside the
exported model, so the mfcc / logmel / average paths use only ops that convert to TFLite builtins
(RFFT2D, COMPLEX_ABS, FULLY_CONNECTED, MAXIMUM, LOG, SQUARE, GATHER, PAD, ...): no AudioSpectrogram,
Mfcc or DecodeWav. `compute_features_np` is an independent NumPy implementation of the same math,
used to prove the TensorFlow path right.

What each front end computes (all framing: frame = window_size_samples, hop =
window_stride_samples, only full frames, periodic Hann window, FFT length = next power of two):

* ``mfcc``: the tutorial's ``AudioSpectrogram(magnitude_squared=True)`` + ``Mfcc`` ops: the
  filterbank takes the square root of the power spectrum (i.e. the magnitude), sums it under 40
  HTK-style triangles between 20 and 4000 Hz (the exact ``MfccMelFilterbank`` weights, DC bin
  excluded), floors at 1e-12, takes the natural log and applies the op's DCT-II
  (``sqrt(2/40) * cos(pi/40 * k * (j + 0.5))``, no special scaling of coefficient 0), keeping
  ``feature_bin_count`` coefficients. The DCT is a constant matrix multiply.
* ``logmel``: ``log(mel + 1e-6)`` of the *power* spectrum under ``feature_bin_count`` triangles
  from ``tf.signal.linear_to_mel_weight_matrix`` between 20 Hz and Nyquist.
* ``average``: the tutorial's pooled spectrogram: the power (magnitude-squared) spectrogram,
  average-pooled over frequency with window = stride = ``average_window_width`` and SAME padding
  (padding excluded from each average): the numbers of ``tf.nn.pool(..., 'AVG', 'SAME')``,
  computed as a constant matmul.
* ``micro``: the TFLite Micro frontend op (``audio_microfrontend``) with the tutorial's settings.
  Not convertible to TFLite builtins: models using it must be exported with
  ``features_outside``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kws_core.infra.errors import ConfigError, KwsError

if TYPE_CHECKING:
    import tensorflow as tf

    from kws_core.config import Params

PREPROCESS_MODES = ("mfcc", "average", "micro", "logmel", "embedding")

# The tutorial's Mfcc op defaults (tensorflow/core/kernels/mfcc.cc).
MFCC_LOWER_HZ = 20.0
MFCC_UPPER_HZ = 4000.0
MFCC_FILTERBANK_CHANNELS = 40
MFCC_FLOOR = 1e-12
# logmel: log(mel energy + LOGMEL_OFFSET), triangles from LOGMEL_LOWER_HZ to Nyquist.
LOGMEL_LOWER_HZ = 20.0
LOGMEL_OFFSET = 1e-6
# The tutorial scales the micro frontend's output by 10/256 (input_data.py).
MICRO_SCALE = 10.0 / 256.0

_FIELDS = (
    "sample_rate",
    "clip_duration_ms",
    "window_size_ms",
    "window_stride_ms",
    "feature_bin_count",
    "preprocess",
    "embedding_hop_ms",
    "embedding_finetune_layers",
)
# Exports written before the embedding front end existed have no embedding_hop_ms (and none
# before fine-tuning existed has embedding_finetune_layers).
_FIELD_DEFAULTS = {"embedding_hop_ms": 80, "embedding_finetune_layers": 0}


def next_power_of_two(x: int) -> int:
    """The tutorial's `_next_power_of_two`: smallest power of two >= x (1 for 0)."""
    return 1 if x == 0 else 2 ** (int(x) - 1).bit_length()


@dataclass(frozen=True)
class FeatureSpec:
    """Front-end settings plus the tutorial's derived sizes (`prepare_model_settings`).

    Construction validates the settings and raises a one-line `ConfigError` naming the key.
    """

    sample_rate: int = 16000
    clip_duration_ms: float = 1000
    window_size_ms: float = 30.0
    window_stride_ms: float = 10.0
    feature_bin_count: int = 40
    preprocess: str = "mfcc"
    embedding_hop_ms: int = 80
    embedding_finetune_layers: int = 0  # top embedding convolutions the model trains

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ConfigError(
                f"features.preprocess: unknown front end {self.preprocess!r}; "
                f"choose one of {', '.join(PREPROCESS_MODES)}"
            )
        for key, value in (
            ("data.sample_rate", self.sample_rate),
            ("data.clip_duration_ms", self.clip_duration_ms),
            ("features.window_size_ms", self.window_size_ms),
            ("features.window_stride_ms", self.window_stride_ms),
            ("features.feature_bin_count", self.feature_bin_count),
        ):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key}: must be a positive number (got {value!r})")
        for key, value in (
            ("data.sample_rate", self.sample_rate),
            ("features.feature_bin_count", self.feature_bin_count),
        ):
            if not isinstance(value, numbers.Integral):
                raise ConfigError(f"{key}: must be a whole number (got {value!r})")
        # Plain Python numbers (NumPy scalars would leak into to_dict() and JSON).
        for name in ("sample_rate", "feature_bin_count"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("clip_duration_ms", "window_size_ms", "window_stride_ms"):
            value = getattr(self, name)
            object.__setattr__(
                self, name, int(value) if isinstance(value, numbers.Integral) else float(value)
            )
        if self.window_size_samples < 2:
            raise ConfigError(
                f"features.window_size_ms: {self.window_size_ms} ms is under 2 samples at "
                f"{self.sample_rate} Hz; use a longer window"
            )
        if self.window_stride_samples < 1:
            raise ConfigError(
                f"features.window_stride_ms: {self.window_stride_ms} ms is under 1 sample at "
                f"{self.sample_rate} Hz; use a longer stride"
            )
        if self.preprocess != "embedding" and self.window_size_samples > self.desired_samples:
            raise ConfigError(
                f"features.window_size_ms: the {self.window_size_ms} ms window is longer than "
                f"the {self.clip_duration_ms} ms clip (data.clip_duration_ms); use a shorter "
                "window or a longer clip"
            )
        if self.preprocess == "embedding":
            self._check_embedding()
        else:  # like embedding_hop_ms, it does not apply to the other front ends
            object.__setattr__(self, "embedding_finetune_layers", 0)
        if self.preprocess == "mfcc":
            if self.feature_bin_count > MFCC_FILTERBANK_CHANNELS:
                raise ConfigError(
                    f"features.feature_bin_count: mfcc keeps at most {MFCC_FILTERBANK_CHANNELS} "
                    f"DCT coefficients of its {MFCC_FILTERBANK_CHANNELS}-channel filterbank "
                    f"(got {self.feature_bin_count})"
                )
            if self.sample_rate < 2 * MFCC_UPPER_HZ:
                raise ConfigError(
                    f"data.sample_rate: mfcc needs at least {2 * MFCC_UPPER_HZ:.0f} Hz for its "
                    f"{MFCC_UPPER_HZ:.0f} Hz filterbank (got {self.sample_rate})"
                )
        if self.preprocess == "average" and self.feature_bin_count > self.fft_bin_count:
            raise ConfigError(
                f"features.feature_bin_count: average pools {self.fft_bin_count} FFT bins, so "
                f"it cannot make {self.feature_bin_count} bins; use at most {self.fft_bin_count}"
            )
        if self.preprocess == "micro":
            for key, ms in (
                ("features.window_size_ms", self.window_size_samples * 1000 / self.sample_rate),
                ("features.window_stride_ms", self.window_stride_samples * 1000 / self.sample_rate),
            ):
                if abs(ms - round(ms)) > 1e-6:
                    raise ConfigError(
                        f"{key}: the micro frontend takes whole milliseconds (got {ms:g} ms)"
                    )

    def _check_embedding(self) -> None:
        from kws_core.features import speech_embedding as se

        if self.sample_rate != se.SAMPLE_RATE:
            raise ConfigError(
                f"data.sample_rate: the speech embedding was trained on {se.SAMPLE_RATE} Hz "
                f"audio (got {self.sample_rate}); use 16000 or another front end"
            )
        hop = self.embedding_hop_ms
        if not isinstance(hop, numbers.Integral) or isinstance(hop, bool) or hop <= 0:
            raise ConfigError(
                f"features.embedding_hop_ms: must be a positive whole number of ms (got {hop!r})"
            )
        if hop % 10:
            raise ConfigError(
                f"features.embedding_hop_ms: {hop} is not a multiple of the embedding's 10 ms "
                "mel frame; use e.g. 40 or 80"
            )
        object.__setattr__(self, "embedding_hop_ms", int(hop))
        top = se.check_top_layers(self.embedding_finetune_layers)
        object.__setattr__(self, "embedding_finetune_layers", top)
        if self.spectrogram_length < 1:
            raise ConfigError(
                f"data.clip_duration_ms: {self.clip_duration_ms} ms is shorter than one speech "
                f"embedding window ({1000 * se.WINDOW_SAMPLES / se.SAMPLE_RATE:.0f} ms)"
            )

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: Params) -> FeatureSpec:
        f = params.features
        return cls(
            sample_rate=params.data.sample_rate,
            clip_duration_ms=params.data.clip_duration_ms,
            window_size_ms=f.window_size_ms,
            window_stride_ms=f.window_stride_ms,
            feature_bin_count=f.feature_bin_count,
            preprocess=f.preprocess,
            embedding_hop_ms=f.embedding_hop_ms,
            embedding_finetune_layers=f.embedding_finetune_layers,
        )

    def to_dict(self) -> dict[str, Any]:
        """Settings and derived sizes (what an export records next to the model)."""
        out: dict[str, Any] = dataclasses.asdict(self)
        out.update(
            desired_samples=self.desired_samples,
            window_size_samples=self.window_size_samples,
            window_stride_samples=self.window_stride_samples,
            spectrogram_length=self.spectrogram_length,
            fingerprint_width=self.fingerprint_width,
            fingerprint_size=self.fingerprint_size,
            average_window_width=self.average_window_width,
            fft_length=self.fft_length,
        )
        return out

    def describe(self) -> str:
        """One line naming the settings that decide the input shape."""
        if self.preprocess == "embedding":
            return (
                f"speech embedding, {self.spectrogram_length} x {self.fingerprint_width} "
                f"(one every {self.embedding_hop_ms} ms), {self.sample_rate} Hz, "
                f"{self.clip_duration_ms} ms clips"
                + (
                    f", below the top {self.embedding_finetune_layers} convolutions"
                    if self.embedding_finetune_layers
                    else ""
                )
            )
        return (
            f"{self.preprocess} {self.feature_bin_count} bins, {self.sample_rate} Hz, "
            f"{self.clip_duration_ms} ms clips, window {self.window_size_ms}/"
            f"{self.window_stride_ms} ms"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        """Rebuild from `to_dict()` output; derived sizes, if present, must agree."""
        d = _FIELD_DEFAULTS | dict(d)
        missing = [k for k in _FIELDS if k not in d]
        if missing:
            raise ConfigError(f"feature spec: missing key {missing[0]!r}")
        spec = cls(**{k: d[k] for k in _FIELDS})
        derived = spec.to_dict()
        for key, value in d.items():
            if key not in derived:
                raise ConfigError(f"feature spec: unknown key {key!r}")
            if key not in _FIELDS and value != derived[key]:
                raise ConfigError(
                    f"feature spec: {key} is {value!r} but the settings give {derived[key]!r}"
                )
        return spec

    # ---- derived sizes (models.prepare_model_settings) ----------------------------------
    @property
    def desired_samples(self) -> int:
        return int(self.sample_rate * self.clip_duration_ms / 1000)

    @property
    def window_size_samples(self) -> int:
        """Samples behind one frame (for `embedding`: behind one embedding, 12,512)."""
        if self.preprocess == "embedding":
            from kws_core.features.speech_embedding import WINDOW_SAMPLES

            return WINDOW_SAMPLES
        return int(self.sample_rate * self.window_size_ms / 1000)

    @property
    def window_stride_samples(self) -> int:
        """Samples between frames (for `embedding`: between embeddings)."""
        if self.preprocess == "embedding":
            return int(self.sample_rate * self.embedding_hop_ms / 1000)
        return int(self.sample_rate * self.window_stride_ms / 1000)

    @property
    def frame_ms(self) -> float:
        """Milliseconds between frames (for `embedding`: between embeddings)."""
        return 1000 * self.window_stride_samples / self.sample_rate

    @property
    def spectrogram_length(self) -> int:
        length_minus_window = self.desired_samples - self.window_size_samples
        if length_minus_window < 0:
            return 0
        return 1 + length_minus_window // self.window_stride_samples

    @property
    def fft_length(self) -> int:
        return next_power_of_two(self.window_size_samples)

    @property
    def fft_bin_count(self) -> int:
        return 1 + self.fft_length // 2

    @property
    def average_window_width(self) -> int:
        """Frequency bins per pooled bin for `average`; -1 otherwise (as in the tutorial)."""
        if self.preprocess != "average":
            return -1
        return int(math.floor(self.fft_bin_count / self.feature_bin_count))

    @property
    def fingerprint_width(self) -> int:
        if self.preprocess == "embedding":
            from kws_core.features.speech_embedding import cut_shape

            return math.prod(cut_shape(self.embedding_finetune_layers))
        if self.preprocess == "average":
            return int(math.ceil(self.fft_bin_count / self.average_window_width))
        return self.feature_bin_count

    @property
    def fingerprint_size(self) -> int:
        return self.spectrogram_length * self.fingerprint_width

    @property
    def shape(self) -> tuple[int, int]:
        return (self.spectrogram_length, self.fingerprint_width)


# ---- constant matrices (NumPy, float64) -----------------------------------------------------
def _hertz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def periodic_hann(n: int) -> np.ndarray:
    """The spectrogram op's window: 0.5 - 0.5 cos(2 pi i / n)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _mfcc_band_mapper(spec: FeatureSpec) -> tuple[int, int, np.ndarray, np.ndarray]:
    """`MfccMelFilterbank::Initialize`: (start, end, band_mapper, weights) per FFT bin.

    Bin i (start <= i <= end) adds weights[i] * |X_i| to channel band_mapper[i] (if >= 0) and
    (1 - weights[i]) * |X_i| to channel band_mapper[i] + 1 (if < channel count).
    """
    n_bins, channels = spec.fft_bin_count, MFCC_FILTERBANK_CHANNELS
    mel_low, mel_hi = _hertz_to_mel(MFCC_LOWER_HZ), _hertz_to_mel(MFCC_UPPER_HZ)
    spacing = (mel_hi - mel_low) / (channels + 1)
    centers = mel_low + spacing * (np.arange(channels + 1) + 1)
    hz_per_sbin = 0.5 * spec.sample_rate / (n_bins - 1)
    start = int(1.5 + MFCC_LOWER_HZ / hz_per_sbin)
    end = int(MFCC_UPPER_HZ / hz_per_sbin)
    mapper = np.full(n_bins, -2, dtype=np.int64)
    weights = np.zeros(n_bins, dtype=np.float64)
    channel = 0
    for i in range(start, end + 1):
        melf = float(_hertz_to_mel(i * hz_per_sbin))
        while channel < channels and centers[channel] < melf:
            channel += 1
        mapper[i] = channel - 1
        if channel - 1 >= 0:
            c = channel - 1
            weights[i] = (centers[c + 1] - melf) / (centers[c + 1] - centers[c])
        else:
            weights[i] = (centers[0] - melf) / (centers[0] - mel_low)
    return start, end, mapper, weights


@functools.lru_cache(maxsize=32)
def mfcc_mel_matrix(spec: FeatureSpec) -> np.ndarray:
    """[fft_bin_count, 40] dense form of the Mfcc op's filterbank (applied to magnitudes)."""
    start, end, mapper, weights = _mfcc_band_mapper(spec)
    m = np.zeros((spec.fft_bin_count, MFCC_FILTERBANK_CHANNELS), dtype=np.float64)
    for i in range(start, end + 1):
        c = mapper[i]
        if c >= 0:
            m[i, c] += weights[i]
        if c + 1 < MFCC_FILTERBANK_CHANNELS:
            m[i, c + 1] += 1.0 - weights[i]
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=32)
def mfcc_dct_matrix(input_length: int, coefficient_count: int) -> np.ndarray:
    """[input_length, coefficient_count] matrix of the Mfcc op's DCT (`MfccDct`)."""
    j = np.arange(input_length)[:, None]
    k = np.arange(coefficient_count)[None, :]
    m = math.sqrt(2.0 / input_length) * np.cos(np.pi / input_length * k * (j + 0.5))
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=32)
def logmel_matrix(spec: FeatureSpec) -> np.ndarray:
    """[fft_bin_count, feature_bin_count] from tf.signal.linear_to_mel_weight_matrix."""
    import tensorflow as tf

    with tf.init_scope():
        m = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=spec.feature_bin_count,
            num_spectrogram_bins=spec.fft_bin_count,
            sample_rate=spec.sample_rate,
            lower_edge_hertz=LOGMEL_LOWER_HZ,
            upper_edge_hertz=spec.sample_rate / 2.0,
            dtype=tf.float64,
        ).numpy()
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=32)
def average_pool_matrix(spec: FeatureSpec) -> np.ndarray:
    """[fft_bin_count, fingerprint_width]: tf.nn.pool(AVG, SAME) over frequency as a matmul.

    Window = stride = average_window_width; SAME padding puts floor(pad / 2) bins before and the
    rest after, and padded bins do not count in the average (as in TensorFlow's AvgPool).
    """
    n, width, out = spec.fft_bin_count, spec.average_window_width, spec.fingerprint_width
    pad_before = (out * width - n) // 2
    m = np.zeros((n, out), dtype=np.float64)
    for o in range(out):
        lo, hi = max(o * width - pad_before, 0), min(o * width - pad_before + width, n)
        m[lo:hi, o] = 1.0 / (hi - lo)
    m.setflags(write=False)
    return m


# ---- TensorFlow front end ---------------------------------------------------------------
def _check_audio(audio: Any, spec: FeatureSpec) -> tf.Tensor:
    import tensorflow as tf

    audio = tf.convert_to_tensor(audio)
    if audio.dtype != tf.float32:
        audio = tf.cast(audio, tf.float32)
    if audio.shape.rank != 2 or (
        audio.shape[1] is not None and audio.shape[1] != spec.desired_samples
    ):
        raise ValueError(
            f"compute_features expects [batch, {spec.desired_samples}] float32 audio, "
            f"got shape {audio.shape}"
        )
    return audio


def _power_spectrogram(audio: tf.Tensor, spec: FeatureSpec) -> tuple[tf.Tensor, tf.Tensor]:
    """(|STFT|, |STFT|^2), each [batch, frames, fft_bin_count].

    Same numbers as tf.signal.stft(frame_length=window, fft_length=next power of two), but the
    frames are cut fft_length long with a zero-padded window: RFFT then pads nothing, which
    saves a copy of every frame (~25% of the front end's time; bench/profile_ops.py).
    """
    import tensorflow as tf

    extra = spec.fft_length - spec.window_size_samples
    window = np.concatenate([periodic_hann(spec.window_size_samples), np.zeros(extra)])
    padded = tf.pad(audio, [[0, 0], [0, extra]])
    frames = tf.signal.frame(padded, spec.fft_length, spec.window_stride_samples)
    frames = frames[:, : spec.spectrogram_length] * tf.constant(window, tf.float32)
    magnitude = tf.abs(tf.signal.rfft(frames, [spec.fft_length]))
    return magnitude, tf.square(magnitude)


def _frame_matmul(x: tf.Tensor, matrix: np.ndarray, frames: int) -> tf.Tensor:
    """[batch, frames, bins] @ [bins, out] as a 2-D matmul (TFLite FULLY_CONNECTED)."""
    import tensorflow as tf

    flat = tf.reshape(x, [-1, matrix.shape[0]])
    y = tf.matmul(flat, tf.constant(matrix, dtype=tf.float32))
    return tf.reshape(y, [-1, frames, matrix.shape[1]])


MICRO_OP_MODULE = "tensorflow.lite.experimental.microfrontend.python.ops.audio_microfrontend_op"


def _micro_op() -> Any:
    try:
        module = importlib.import_module(MICRO_OP_MODULE)
    except Exception as e:  # ImportError, or NotFoundError/OSError loading the .so
        raise KwsError(
            "features.preprocess=micro: this TensorFlow build has no audio_microfrontend op "
            f"({type(e).__name__}); use mfcc, logmel or average"
        ) from None
    return module.audio_microfrontend


def _micro_features(audio: tf.Tensor, spec: FeatureSpec) -> tf.Tensor:
    import tensorflow as tf

    frontend = tf.autograph.experimental.do_not_convert(_micro_op)()
    window_ms = int(round(spec.window_size_samples * 1000 / spec.sample_rate))
    step_ms = int(round(spec.window_stride_samples * 1000 / spec.sample_rate))
    # The tutorial's tf.cast(audio * 32768, tf.int16) (truncation), clipped so +1.0 cannot wrap.
    pcm = tf.cast(tf.clip_by_value(audio * 32768.0, -32768.0, 32767.0), tf.int16)

    def one(clip: tf.Tensor) -> tf.Tensor:
        y = frontend(
            clip,
            sample_rate=spec.sample_rate,
            window_size=window_ms,
            window_step=step_ms,
            num_channels=spec.feature_bin_count,
            out_scale=1,
            out_type=tf.float32,
        )
        return tf.ensure_shape(y, spec.shape)

    out = tf.map_fn(
        one,
        pcm,
        fn_output_signature=tf.TensorSpec(spec.shape, tf.float32),
        parallel_iterations=8,
    )
    return out * MICRO_SCALE


def _compute_graph(audio: tf.Tensor, spec: FeatureSpec) -> tf.Tensor:
    import tensorflow as tf

    frames = spec.spectrogram_length
    if spec.preprocess == "micro":
        return _micro_features(audio, spec)
    if spec.preprocess == "embedding":
        from kws_core.features.speech_embedding import MEL_HOP, embed

        return embed(audio, spec.window_stride_samples // MEL_HOP, spec.embedding_finetune_layers)
    magnitude, power = _power_spectrogram(audio, spec)
    if spec.preprocess == "mfcc":
        mel = _frame_matmul(magnitude, mfcc_mel_matrix(spec), frames)
        log_mel = tf.math.log(tf.maximum(mel, MFCC_FLOOR))
        dct = mfcc_dct_matrix(MFCC_FILTERBANK_CHANNELS, spec.feature_bin_count)
        return _frame_matmul(log_mel, dct, frames)
    if spec.preprocess == "logmel":
        mel = _frame_matmul(power, logmel_matrix(spec), frames)
        return tf.math.log(mel + LOGMEL_OFFSET)
    # average: input_data.py's tf.nn.pool(..., 'AVG', 'SAME') over frequency, done as a constant
    # matmul (same numbers, ~35% faster than AvgPool on CPU, a FULLY_CONNECTED in TFLite).
    return _frame_matmul(power, average_pool_matrix(spec), frames)


@functools.lru_cache(maxsize=16)
def feature_function(spec: FeatureSpec) -> Any:
    """A tf.function [None, desired_samples] float32 -> [None, *spec.shape] (traced once)."""
    import tensorflow as tf

    @tf.function(
        input_signature=[tf.TensorSpec([None, spec.desired_samples], tf.float32, name="audio")],
        autograph=False,
    )
    def features(audio: tf.Tensor) -> tf.Tensor:
        return _compute_graph(audio, spec)

    return features


def compute_features(audio: Any, spec: FeatureSpec) -> tf.Tensor:
    """[batch, desired_samples] float32 in [-1, 1] -> [batch, *spec.shape] float32.

    Eagerly this runs a cached, traced-once tf.function; inside a tf.function or Keras layer it
    adds the ops to the graph being built. For mfcc, logmel and average every op converts to a
    TFLite builtin. `micro` uses the AudioMicrofrontend custom op (one clip at a time through
    tf.map_fn): it does NOT convert to TFLite builtins, so a micro model must be exported with
    the features outside; raises KwsError if the op is missing from this TensorFlow build.
    """
    import tensorflow as tf

    audio = _check_audio(audio, spec)
    if tf.executing_eagerly():
        return feature_function(spec)(audio)
    return _compute_graph(audio, spec)


# Each frame depends on its own samples only (an embedding on its own 12,512 samples).
FRAME_WISE = frozenset({"mfcc", "logmel", "average", "embedding"})
STREAM_BATCH = 100  # clips per front-end call in stream_features


def stream_features(
    samples: np.ndarray, spec: FeatureSpec, batch: int = STREAM_BATCH
) -> np.ndarray:
    """Front-end frames of a whole stream, [frames, bins]: frame f covers samples
    [f * hop, f * hop + window). Only for FRAME_WISE front ends (`micro` carries state).

    The stream is cut into clips that start every `spectrogram_length` hops, so each clip
    yields the next run of frames with the very ops of `compute_features`; a window that starts
    at frame k then has exactly the features of frames k .. k + spectrogram_length - 1.
    """
    if spec.preprocess not in FRAME_WISE:
        raise KwsError(f"stream_features: preprocess {spec.preprocess!r} is not frame-wise")
    samples = np.asarray(samples, np.float32)
    hop, frames = spec.window_stride_samples, spec.spectrogram_length
    total = max((len(samples) - spec.window_size_samples) // hop + 1, 0)
    clips = -(-total // frames)
    step = frames * hop
    padded = np.zeros((clips - 1) * step + spec.desired_samples if clips else 0, np.float32)
    padded[: min(len(samples), len(padded))] = samples[: len(padded)]
    view = np.lib.stride_tricks.sliding_window_view(padded, spec.desired_samples)[::step]
    out = np.zeros((clips * frames, spec.shape[1]), np.float32)
    for i in range(0, clips, batch):
        chunk = np.ascontiguousarray(view[i : i + batch])
        out[i * frames : (i + len(chunk)) * frames] = np.asarray(
            compute_features(chunk, spec)
        ).reshape(-1, spec.shape[1])
    return out[:total]


# ---- NumPy reference --------------------------------------------------------------------
def _np_power_spectrogram(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, spec.window_size_samples, axis=-1)
    frames = frames[..., :: spec.window_stride_samples, :][..., : spec.spectrogram_length, :]
    spectrum = np.fft.rfft(frames * periodic_hann(spec.window_size_samples), n=spec.fft_length)
    return spectrum.real**2 + spectrum.imag**2


def compute_features_np(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """NumPy (float64) version of `compute_features` for mfcc, logmel and average.

    Written independently of the TensorFlow path (loops over the filterbank's bin mapping,
    explicit pooling windows, a NumPy mel matrix) so the two can check each other.
    `micro` calls the TensorFlow op.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 2 or audio.shape[1] != spec.desired_samples:
        raise ValueError(
            f"compute_features_np expects [batch, {spec.desired_samples}] audio, "
            f"got shape {audio.shape}"
        )
    if spec.preprocess in ("micro", "embedding"):  # (tests check embedding against ONNX)
        return np.asarray(compute_features(audio.astype(np.float32), spec))
    power = _np_power_spectrogram(audio, spec)
    if spec.preprocess == "mfcc":
        start, end, mapper, weights = _mfcc_band_mapper(spec)
        channels = MFCC_FILTERBANK_CHANNELS
        mel = np.zeros((*power.shape[:-1], channels))
        for i in range(start, end + 1):  # MfccMelFilterbank::Compute
            spec_val = np.sqrt(power[..., i])
            weighted = spec_val * weights[i]
            if mapper[i] >= 0:
                mel[..., mapper[i]] += weighted
            if mapper[i] + 1 < channels:
                mel[..., mapper[i] + 1] += spec_val - weighted
        log_mel = np.log(np.maximum(mel, MFCC_FLOOR))
        k = np.arange(spec.feature_bin_count)
        out = np.zeros((*power.shape[:-1], spec.feature_bin_count))
        for j in range(channels):  # MfccDct::Compute
            out += (math.sqrt(2.0 / channels) * np.cos(np.pi / channels * k * (j + 0.5))) * log_mel[
                ..., j : j + 1
            ]
    elif spec.preprocess == "logmel":
        out = np.log(power @ _np_mel_matrix(spec) + LOGMEL_OFFSET)
    else:
        # SAME padding with NaN (window = stride = width), then a NaN-ignoring mean.
        width, n = spec.average_window_width, power.shape[-1]
        pooled = -(-n // width)
        total_pad = pooled * width - n
        padded = np.full((*power.shape[:-1], pooled * width), np.nan)
        padded[..., total_pad // 2 : total_pad // 2 + n] = power
        out = np.nanmean(padded.reshape(*power.shape[:-1], pooled, width), axis=-1)
    return out.astype(np.float32)


def _np_mel_matrix(spec: FeatureSpec) -> np.ndarray:
    """NumPy re-derivation of tf.signal.linear_to_mel_weight_matrix (HTK mel, DC bin zeroed)."""
    n_mel = spec.feature_bin_count
    freqs = np.linspace(0.0, spec.sample_rate / 2.0, spec.fft_bin_count)
    bins_mel = _hertz_to_mel(freqs)[1:, None]
    edges = np.linspace(
        _hertz_to_mel(LOGMEL_LOWER_HZ), _hertz_to_mel(spec.sample_rate / 2.0), n_mel + 2
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, n_mel)), weights])
