"""Typed configuration: `params.yaml` loaded once into `Params`, overridable by tutorial flags.

Every leaf key has a unique name across sections, so `--wanted_words=yes,no` works exactly as in
TensorFlow's `train.py`; nested keys can also be given dotted (`--data.synthetic.speakers=20`).
"""

from __future__ import annotations

import difflib
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from kws_core.infra.errors import ConfigError

SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
DEFAULT_WANTED_WORDS = "yes,no,up,down,left,right,on,off,stop,go"
SPEECH_COMMANDS_WORDS = (
    "yes no up down left right on off stop go zero one two three four five six seven eight nine "
    "bed bird cat dog happy house marvin sheila tree wow backward forward follow learn visual"
).split()

Percentage = float
FEATURE_SOURCES = ("cache", "on_the_fly")


class _Section(BaseModel):
    # No NaN/inf: `stream_duration_s: .inf` would pass `gt=0` and then never finish.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# train.seed reaches np.random.seed, which refuses negative or 33-bit values.
SEED_MAX = 2**32 - 1


def _split_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value]
    raise ValueError("expected a comma-separated string or a list")


SOURCE_SPLITS = ("hash", "lists", "training", "validation", "testing")


class SourceSpec(BaseModel):
    """One extra training source: a labelled folder, its clip weight and how it is split."""

    path: str
    weight: float = 1.0
    split: str = "hash"


def parse_sources(value: str) -> list[SourceSpec]:
    """'DIR[:WEIGHT[:SPLIT]],...' -> specs; ValueError naming the bad entry."""
    out = []
    for entry in _split_list(value):
        parts = entry.split(":")
        if len(parts) > 3 or not parts[0]:
            raise ValueError(f"{entry!r} is not DIR[:WEIGHT[:SPLIT]]")
        weight = 1.0
        if len(parts) > 1 and parts[1]:
            try:
                weight = float(parts[1])
            except ValueError:
                raise ValueError(f"{entry!r}: weight {parts[1]!r} is not a number") from None
            if not 0 < weight <= 1000 or weight != weight:
                raise ValueError(f"{entry!r}: weight must be in (0, 1000]")
        split = parts[2] if len(parts) > 2 and parts[2] else "hash"
        if split not in SOURCE_SPLITS:
            raise ValueError(f"{entry!r}: split {split!r} is not one of {', '.join(SOURCE_SPLITS)}")
        out.append(SourceSpec(path=parts[0], weight=weight, split=split))
    return out


# The generators of kws_core.data.synth.noise (NOISE_NAMES + EXTRA_NOISE_NAMES; a test checks).
NOISE_TYPES = ("white_noise", "pink_noise", "brown_noise", "machinery_hum", "babble", "music")
DEFAULT_NOISE_TYPES = "white_noise,pink_noise,brown_noise,machinery_hum,babble"


class SyntheticConfig(_Section):
    """The embedded default data set: espeak-ng speakers in the Speech Commands layout."""

    speakers: int = Field(
        1000, ge=1, description="synthetic espeak-ng speakers (each says every word)"
    )
    utterances_per_speaker: int = Field(1, ge=1, description="repetitions of each word per speaker")
    synthetic_words: str = Field(" ".join(SPEECH_COMMANDS_WORDS), description="words to say")
    synthetic_seed: int = Field(0, description="seed of the synthetic set (same seed, same bytes)")
    noise_duration_s: float = Field(60.0, ge=1.0, description="length of each background file")
    noise_types: str = Field(
        DEFAULT_NOISE_TYPES,
        description="generated background noise files (comma list): white_noise, pink_noise, "
        "brown_noise, machinery_hum, babble (espeak voices over each other), music (chords, "
        "bass, melody and drums in a small room)",
    )
    synthetic_workers: int = Field(2, ge=1, description="synthesis processes")
    piper_speakers: int = Field(
        60,
        ge=0,
        description="speakers of Piper's neural voice (each says every word; speed and noise "
        "scales per speaker); needs the `voices` extra (piper-tts, GPL-3.0); 0 = espeak only",
    )
    piper_voice_change: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of the Piper speakers given a higher voice, as women's and "
        "children's are (formants x1.1-1.3 and pitch median 165-300 Hz, by Praat's \"Change "
        'gender"; praat-parselmouth, in the `voices` extra; measured no help on real speech)',
    )
    heldout_dialects: str = Field(
        "en-gb-scotland,en-029",
        description="espeak-ng dialects kept out of training and spoken by the held-out voice "
        "family (a stand-in for speakers never heard); '' = no held-out family",
    )
    heldout_speakers: int = Field(
        30, ge=1, description="speakers of the held-out family (wanted words + 5 others each)"
    )
    heldout_dir: str = Field(
        "data/heldout_voices",
        description="where the held-out family's labelled clips go; training scores it after "
        "every run as eval set `heldout_voices`",
    )

    @property
    def word_list(self) -> list[str]:
        return self.synthetic_words.replace(",", " ").split()

    @property
    def heldout_dialect_list(self) -> list[str]:
        return _split_list(self.heldout_dialects)

    @property
    def noise_type_list(self) -> list[str]:
        return _split_list(self.noise_types)

    @field_validator("noise_types")
    @classmethod
    def _noise_types(cls, v: str) -> str:
        names = _split_list(v)
        unknown = [n for n in names if n not in NOISE_TYPES]
        if unknown or not names:
            got = repr(unknown[0]) if unknown else "nothing"
            raise ValueError(f"got {got}; choose from {', '.join(NOISE_TYPES)}")
        return ",".join(names)


class DataConfig(_Section):
    data_url: str = Field(
        "synthetic",
        description='"synthetic" (generate offline), an http(s)/file URL of a .tar.gz, or "" to '
        "use data_dir as it is",
    )
    data_sha256: str = Field("", description="optional sha256 of the data_url archive")
    data_dir: str = Field("data/speech_commands", description="where the clips live")
    max_extract_mb: float = Field(
        20000.0,
        ge=1,
        description="refuse archives that unpack to more than this (decompression bombs)",
    )
    wanted_words: str = Field(DEFAULT_WANTED_WORDS, description="comma list of words to spot")
    silence_percentage: Percentage = Field(
        10.0, ge=0, le=100, description="silence rows, % of words"
    )
    unknown_percentage: Percentage = Field(
        10.0, ge=0, le=100, description="unknown rows, % of words"
    )
    validation_percentage: Percentage = Field(10.0, ge=0, le=100, description="validation share, %")
    testing_percentage: Percentage = Field(10.0, ge=0, le=100, description="testing share, %")
    sample_rate: int = Field(16000, gt=0, description="expected sample rate (Hz)")
    clip_duration_ms: int = Field(1000, gt=0, description="expected clip length (ms)")
    manifest_dir: str = Field("results/manifest", description="manifest, rejected table, reports")
    duration_tolerance_ms: float = Field(
        50.0, ge=0, description="clips within this of clip_duration_ms count as full length"
    )
    duration_mostly: float = Field(
        0.9, ge=0, le=1, description="share of clips that must be full length (real sets pad)"
    )
    partition_tolerance: Percentage = Field(
        3.0, ge=0, le=100, description="allowed gap (points) between partition shares and targets"
    )
    sources: str = Field(
        "",
        description="more labelled folders to train on beside data_dir, e.g. your own "
        "recordings: comma list of DIR[:WEIGHT[:SPLIT]] (WEIGHT: how much each clip counts "
        "against a data_dir clip, default 1; SPLIT: hash (which_set, default), lists "
        "(its validation/testing_list.txt), or training|validation|testing for all of it)",
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: str) -> str:
        parse_sources(v)
        return v

    @property
    def source_list(self) -> list[SourceSpec]:
        return parse_sources(self.sources)

    @field_validator("wanted_words", mode="before")
    @classmethod
    def _yaml_booleans(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `yes` / `no` as a boolean; the user meant the word.
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list):
            if any(isinstance(x, list | dict) for x in v):
                # str() of nested YAML aliases can expand to gigabytes (a "billion laughs").
                raise ValueError("must be a list of words, not of lists")
            return ",".join(("yes" if x else "no") if isinstance(x, bool) else str(x) for x in v)
        return v

    @field_validator("wanted_words")
    @classmethod
    def _words_nonempty(cls, v: str) -> str:
        words = _split_list(v)
        if not words:
            raise ValueError("needs at least one word")
        bad = [w for w in words if w.startswith("_") or "/" in w]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a word folder name")
        if len(set(words)) != len(words):
            raise ValueError("lists a word twice")
        return v

    @model_validator(mode="after")
    def _shares(self) -> DataConfig:
        if self.validation_percentage + self.testing_percentage > 100:
            raise ValueError(
                "validation_percentage + testing_percentage is over 100 "
                f"({self.validation_percentage} + {self.testing_percentage})"
            )
        return self

    @property
    def wanted_word_list(self) -> list[str]:
        return _split_list(self.wanted_words)


class FeaturesConfig(_Section):
    preprocess: Literal["mfcc", "average", "micro", "logmel", "embedding"] = Field(
        "embedding",
        description="front end: mfcc, average (pooled spectrogram), micro, logmel, embedding "
        "(Google's pre-trained speech embedding, 96 values per window; see embedding_hop_ms)",
    )
    window_size_ms: float = Field(30.0, gt=0, description="analysis window (ms)")
    window_stride_ms: float = Field(10.0, gt=0, description="hop between windows (ms)")
    feature_bin_count: int = Field(40, gt=0, description="MFCC / mel bins per frame")
    embedding_hop_ms: int = Field(
        80,
        gt=0,
        description="embedding: ms between speech embeddings (a multiple of 10; 80 gives 3 per "
        "1 s clip, 40 gives 6); window_size_ms, window_stride_ms and feature_bin_count then "
        "do not apply",
    )
    embedding_finetune_layers: int = Field(
        5,
        ge=0,
        le=9,
        description="embedding: the speech embedding's top convolutions (0-9) trained with the "
        "model, starting from Google's weights; 0 = the whole embedding frozen. The feature "
        "cache then holds the activations below them",
    )
    cache_copies: int = Field(
        4, gt=0, description="augmented copies of each training clip in the feature cache"
    )
    cache_dir: str = Field(
        "results/features", description="augmented feature cache (`kws features`), one folder a key"
    )


# The recording chain's steps (kws_core.features.recording), each on with its own probability.
CHAIN_PROBABILITIES = (
    "speed_probability",
    "pitch_probability",
    "reverb_probability",
    "mic_probability",
    "gain_probability",
    "distortion_probability",
)


class AugmentConfig(_Section):
    background_volume: float = Field(0.1, ge=0, le=1, description="max background noise volume")
    background_frequency: float = Field(
        0.8, ge=0, le=1, description="share of training clips with background noise mixed in"
    )
    time_shift_ms: float = Field(100.0, ge=0, description="max random time shift (ms)")
    noise_snr_db: str = Field(
        "",
        description="background noise of word clips at a random SNR in this dB range "
        "(lo,hi); '' = the tutorial's random volume up to background_volume",
    )
    speed_probability: float = Field(
        0.0, ge=0, le=1, description="share of clips sped up or slowed down (pitch moves too)"
    )
    speed_range: str = Field("0.9,1.1", description="speed factor range (lo,hi)")
    pitch_probability: float = Field(
        0.0, ge=0, le=1, description="share of clips pitch-shifted (tempo kept)"
    )
    pitch_semitones: float = Field(2.0, ge=0, le=12, description="max pitch shift (semitones)")
    reverb_probability: float = Field(
        0.5, ge=0, le=1, description="share of clips played in a simulated room (pyroomacoustics)"
    )
    reverb_rt60_s: str = Field(
        "0.15,0.8", description="reverberation time range of the simulated rooms (s, lo,hi)"
    )
    reverb_rooms: int = Field(
        64, ge=1, le=10000, description="random rooms (source and mic positions) per seed"
    )
    mic_probability: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of clips through a random microphone: parametric EQ, "
        "high-pass and band limit",
    )
    gain_probability: float = Field(0.0, ge=0, le=1, description="share of clips with a gain")
    gain_db: str = Field("-18,6", description="gain range (dB, lo,hi); peaks clip at full scale")
    distortion_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of clips with mild distortion or codec-like loss (saturation, "
        "clipping, bit depth, aliasing)",
    )
    noise_dirs: str = Field(
        "",
        description="more folders of noise .wav files (e.g. your own `_background_noise_` "
        "recordings of the rooms your device will hear), comma list, mixed into training "
        "clips and cut into silence beside data_dir's `_background_noise_`; '' = none",
    )

    @property
    def noise_dir_list(self) -> list[str]:
        return _split_list(self.noise_dirs)

    @field_validator("noise_snr_db", "speed_range", "reverb_rt60_s", "gain_db")
    @classmethod
    def _range(cls, v: str, info: Any) -> str:
        if info.field_name == "noise_snr_db" and not str(v).strip():
            return ""
        parts = _split_list(v)
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"{v!r} is not a range 'lo,hi' of two numbers") from None
        if lo > hi:
            raise ValueError(f"{v!r}: lo is above hi")
        limits = {
            "noise_snr_db": (-30, 60),
            "speed_range": (0.5, 2.0),
            "reverb_rt60_s": (0.05, 3.0),
            "gain_db": (-60, 30),
        }[info.field_name]
        if lo < limits[0] or hi > limits[1]:
            raise ValueError(f"{v!r} is outside {limits[0]:g}..{limits[1]:g}")
        return f"{lo:g},{hi:g}"

    def pair(self, name: str) -> tuple[float, float] | None:
        """A 'lo,hi' range field as numbers (None when empty)."""
        value = getattr(self, name)
        if not value:
            return None
        lo, hi = (float(p) for p in value.split(","))
        return lo, hi

    @property
    def recording_chain(self) -> bool:
        """True when any numpy-side recording augmentation (speed, room, mic, ...) is on."""
        return any(getattr(self, key) > 0 for key in CHAIN_PROBABILITIES)


class TrainConfig(_Section):
    model_architecture: str = Field("embedding_mlp", description="model name in the registry")
    architectures: str = Field(
        "", description="comma list to train and compare (champion exported); '' = just one"
    )
    how_many_training_steps: str = Field("2000,500", description="steps per learning-rate phase")
    learning_rate: str = Field("0.001,0.0001", description="learning rate per phase")
    optimizer: Literal["gradient_descent", "momentum", "adam"] = Field(
        "adam", description="optimizer (tutorial: gradient_descent)"
    )
    batch_size: int = Field(100, gt=0, description="examples per step")
    eval_step_interval: int = Field(400, gt=0, description="steps between validation runs")
    save_step_interval: int = Field(100, gt=0, description="steps between checkpoints")
    log_step_interval: int = Field(10, gt=0, description="steps between training log lines")
    dropout_rate: float = Field(0.5, ge=0, lt=1, description="dropout during training only")
    specaugment_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training examples given SpecAugment masks (time and feature "
        "spans set to the training mean, in the model, training only; the feature cache stays "
        "valid); 0 = off",
    )
    specaugment_time_masks: int = Field(2, ge=0, le=10, description="SpecAugment: time masks")
    specaugment_time_mask_ms: float = Field(
        100.0, ge=0, description="SpecAugment: longest time mask (ms; whole frames/embeddings)"
    )
    specaugment_feature_masks: int = Field(
        2, ge=0, le=10, description="SpecAugment: feature masks (MFCC/mel bins, embedding values)"
    )
    specaugment_feature_mask_fraction: float = Field(
        0.15, ge=0, le=1, description="SpecAugment: widest feature mask, share of the bins"
    )
    ds_cnn_channels: int = Field(64, gt=0, description="ds_cnn: channels of every layer")
    ds_cnn_blocks: int = Field(4, ge=1, description="ds_cnn: depthwise-separable blocks")
    bc_resnet_scale: float = Field(1.0, gt=0, description="bc_resnet: width multiplier (tau)")
    bc_resnet_blocks: str = Field("2,2,4,4", description="bc_resnet: blocks per stage")
    embedding_units: int = Field(
        128, gt=0, description="embedding_mlp / embedding_conv: units of each hidden layer"
    )
    summaries_dir: str = Field("results/retrain_logs", description="TensorBoard event files")
    reports_dir: str = Field(
        "results/train_reports", description="metrics.json and confusion matrices of the run"
    )
    train_dir: str = Field("results/speech_commands_train", description="checkpoints")
    start_checkpoint: str = Field("", description="checkpoint to resume from")
    check_nans: bool = Field(False, description="abort at the first NaN/Inf")
    normalize_features: bool = Field(
        True, description="scale each feature bin by training mean/std (int8 needs it)"
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed for weights and batch order")
    # cache by default: the speech embedding costs ~2 ms a clip, so it is computed once per
    # augmented copy (the head then trains at ~450 steps/s). For the tutorial's MFCC models
    # on_the_fly is better: with cache_copies 4 low_latency_conv overfits the cached copies over
    # 5000 steps (test 75.6% vs 89.1%, BENCHMARKS.md).
    feature_source: str = Field(
        "cache",
        description='"on_the_fly": augment and featurise every batch; "cache": stream them from '
        "features.cache_dir (5x faster steps, fewer distinct augmentations)",
    )
    balance_classes: bool = Field(
        True,
        description="train with logit adjustment by the training label shares, so the model "
        "predicts as if every label were equally likely (a large _unknown_ share does not make "
        "_unknown_ win by default)",
    )
    eval_dirs: str = Field(
        "",
        description="comma list of labelled folders (<label>/*.wav: the official test-set or the "
        "tutorial layout) scored after every training run, e.g. real recordings; '' = none",
    )
    mlflow_tracking_uri: str = Field(
        "sqlite:///results/mlflow.db", description="MLflow store (relative paths: from params.yaml)"
    )
    mlflow_experiment: str = Field("kws", description="MLflow experiment name")
    mlflow_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="seconds the MLflow store gets to answer its check before any work (an "
        "http server: one GET of /health, not MLflow's minutes of retries)",
    )
    mlflow_required: bool = Field(
        True,
        description="true: a tracking store that fails its check stops the command with one "
        "line; false: the command goes on without MLflow and says so",
    )

    @field_validator("how_many_training_steps")
    @classmethod
    def _steps(cls, v: str) -> str:
        parts = _split_list(v)
        try:
            steps = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{v!r} is not a comma list of integers") from None
        if not steps or any(s <= 0 for s in steps):
            raise ValueError(f"{v!r} needs positive step counts")
        return v

    @field_validator("feature_source")
    @classmethod
    def _feature_source(cls, v: str) -> str:
        if v not in FEATURE_SOURCES:
            choices = " or ".join(FEATURE_SOURCES)
            raise ValueError(f"{v!r} is not a feature source; choose {choices}")
        return v

    @field_validator("learning_rate")
    @classmethod
    def _rates(cls, v: str) -> str:
        try:
            rates = [float(p) for p in _split_list(v)]
        except ValueError:
            raise ValueError(f"{v!r} is not a comma list of numbers") from None
        if not rates or any(r <= 0 for r in rates):
            raise ValueError(f"{v!r} needs positive learning rates")
        return v

    @model_validator(mode="after")
    def _same_length(self) -> TrainConfig:
        if len(self.steps) != len(self.rates):
            raise ValueError(
                f"how_many_training_steps has {len(self.steps)} entries but learning_rate has "
                f"{len(self.rates)}; give one learning rate per phase"
            )
        return self

    @property
    def eval_dir_list(self) -> list[str]:
        return _split_list(self.eval_dirs)

    @property
    def architecture_list(self) -> list[str]:
        """The architectures to train: `architectures`, or just `model_architecture`."""
        listed = _split_list(self.architectures)
        return listed or [self.model_architecture]

    @property
    def steps(self) -> list[int]:
        return [int(p) for p in _split_list(self.how_many_training_steps)]

    @property
    def rates(self) -> list[float]:
        return [float(p) for p in _split_list(self.learning_rate)]


class ExportConfig(_Section):
    output_file: str = Field("results/frozen/model", description="export folder / file stem")
    quantize: bool = Field(True, description="also write a full-integer int8 TFLite model")
    features_outside: bool = Field(False, description="model takes features, not PCM")
    representative_examples: int = Field(200, gt=0, description="int8 calibration clips")
    streaming: bool = Field(
        True,
        description="also write model_streaming.tflite (and, with quantize, "
        "model_streaming_int8.tflite): one front-end hop of PCM in, scores out, state in "
        "external tensors (every front end but micro, for which it is skipped with a note)",
    )


class StreamConfig(_Section):
    clip_stride_ms: int = Field(
        80,
        gt=0,
        description="how often the model runs on the stream (a multiple of the front end's hop "
        "lets a stream compute each frame or embedding once)",
    )
    engine: Literal["auto", "session", "batch"] = Field(
        "auto",
        description="how test-streaming-accuracy and stream-eval score a stream: session = "
        "StreamingSession hop by hop (state kept), batch = windows in batches; auto = session "
        "for the embedding front end, batch otherwise (the faster one)",
    )
    average_window_ms: int = Field(1000, gt=0, description="RecognizeCommands averaging window")
    detection_threshold: float = Field(0.2, ge=0, le=1, description="average score to report")
    suppression_ms: int = Field(500, ge=0, description="quiet time after a detection")
    repeat_after_suppression: bool = Field(
        False, description="true: same label may refire after suppression_ms (micro_speech)"
    )
    minimum_count: int = Field(3, ge=1, description="results needed in the window")
    time_tolerance_ms: int = Field(750, ge=0, description="detection vs truth tolerance")
    stream_duration_s: float = Field(600.0, gt=0, description="length of the test stream")
    word_gap_ms: int = Field(3000, gt=0, description="mean gap between words in the stream")
    stream_unknown_fraction: float = Field(0.3, ge=0, le=1, description="unknown words share")
    negative_duration_s: float = Field(3600.0, gt=0, description="negative-only stream length")
    target_fa_per_hour: float = Field(0.5, ge=0, description="false accepts/hour to meet")
    stream_dir: str = Field("results/streaming", description="streams, reports, curves")
    stream_seed: int = Field(0, ge=0, description="seed of the generated test streams")
    words_dir: str = Field(
        "",
        description="labelled folder (<label>/*.wav) the test streams draw words from, e.g. real "
        "recordings; '' = the data set's test partition",
    )
    noise_dir: str = Field(
        "",
        description="folder of noise .wav files the test streams are mixed over; '' = the data "
        "set's _background_noise_",
    )


class ChecksConfig(_Section):
    """Quality gates of the Dagster asset checks (not inputs of any stage)."""

    warn_test_accuracy: float = Field(
        0.85, ge=0, le=1, description="warn when the champion's test accuracy is below"
    )
    fail_test_accuracy: float = Field(
        0.5, ge=0, le=1, description="fail when the champion's test accuracy is below"
    )
    warn_false_reject_rate: float = Field(
        0.3, ge=0, le=1, description="warn when the streaming false-reject rate is above"
    )
    fail_false_reject_rate: float = Field(
        0.6, ge=0, le=1, description="fail when the streaming false-reject rate is above"
    )


MANIFEST_FILE = "manifest.parquet"
METRICS_FILE = "metrics.json"
STREAM_REPORT_FILE = "report.json"
# The compact numbers `dvc metrics show/diff` and `dvc exp show` compare (the wide files above
# hold the details): one beside each of them.
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Layout:
    """Where the data and every output of one params file live: the one place that resolves
    the configured paths (relative ones from the params file's folder)."""

    data_dir: Path
    heldout_dir: Path
    manifest_dir: Path
    cache_dir: Path
    train_dir: Path
    summaries_dir: Path
    reports_dir: Path
    export_dir: Path  # export.output_file: the export folder
    stream_dir: Path

    @property
    def manifest(self) -> Path:
        """`kws manifest`'s table of clips (read by every later stage)."""
        return self.manifest_dir / MANIFEST_FILE

    @property
    def background_listing(self) -> Path:
        """`kws manifest`'s list of usable background-noise files."""
        return self.manifest_dir / "background.csv"

    @property
    def metrics(self) -> Path:
        """`kws train`'s metrics (kws_core.training.report.read_metrics reads it)."""
        return self.reports_dir / METRICS_FILE

    @property
    def metrics_summary(self) -> Path:
        """`kws train`'s compact metrics for DVC (kws_core.training.report.summarize)."""
        return self.reports_dir / SUMMARY_FILE

    @property
    def evaluate_dir(self) -> Path:
        """`kws evaluate`'s pictures: a folder of its own, no other stage's output."""
        return self.reports_dir / "evaluate"

    @property
    def stream_summary(self) -> Path:
        """`kws stream-eval`'s compact metrics for DVC."""
        return self.stream_dir / SUMMARY_FILE

    @property
    def stream_report(self) -> Path:
        """`kws stream-eval`'s report (kws_core.streaming.report.read_stream_report reads it)."""
        return self.stream_dir / STREAM_REPORT_FILE


class Params(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)

    def resolve(self, path: str) -> Path:
        """Resolve a configured path relative to the params file's folder."""
        p = Path(path)
        return p if p.is_absolute() else (self._root / p)

    @property
    def layout(self) -> Layout:
        """Where these params' data and outputs are (computed afresh: params may change)."""
        d, t = self.data, self.train
        return Layout(
            data_dir=self.resolve(d.data_dir),
            heldout_dir=self.resolve(d.synthetic.heldout_dir),
            manifest_dir=self.resolve(d.manifest_dir),
            cache_dir=self.resolve(self.features.cache_dir),
            train_dir=self.resolve(t.train_dir),
            summaries_dir=self.resolve(t.summaries_dir),
            reports_dir=self.resolve(t.reports_dir),
            export_dir=self.resolve(self.export.output_file),
            stream_dir=self.resolve(self.stream.stream_dir),
        )

    def output_folders(self) -> dict[str, Path]:
        """Every folder a stage writes (by params key), besides the data sets themselves."""
        lay = self.layout
        return {
            "data.manifest_dir": lay.manifest_dir,
            "features.cache_dir": lay.cache_dir,
            "train.train_dir": lay.train_dir,
            "train.summaries_dir": lay.summaries_dir,
            "train.reports_dir": lay.reports_dir,
            "export.output_file": lay.export_dir,
            "stream.stream_dir": lay.stream_dir,
        }

    def input_folders(self) -> dict[str, Path]:
        """Every folder of the user's (or the dataset stage's) data that stages read."""
        d = self.data
        found = {"data.data_dir": self.layout.data_dir}
        for i, spec in enumerate(d.source_list):
            found[f"data.sources[{i}]"] = self.resolve(spec.path)
        for i, path in enumerate(self.train.eval_dir_list):
            found[f"train.eval_dirs[{i}]"] = self.resolve(path)
        for i, path in enumerate(self.augment.noise_dir_list):
            found[f"augment.noise_dirs[{i}]"] = self.resolve(path)
        for key, value in (("stream.words_dir", self.stream.words_dir),
                           ("stream.noise_dir", self.stream.noise_dir)):  # fmt: skip
            if value:
                found[key] = self.resolve(value)
        return found

    def check_folders(self) -> None:
        """One-line ConfigError if an output folder is, holds or sits inside an input folder
        or another stage's output folder (a stage would overwrite or sweep the other's files)."""
        outputs = {k: v.resolve() for k, v in self.output_folders().items()}
        inputs = {k: v.resolve() for k, v in self.input_folders().items()}
        keys = list(outputs)
        pairs = [(k, outputs[k], i, inputs[i], "input") for k in keys for i in inputs]
        pairs += [
            (k, outputs[k], o, outputs[o], "output")
            for n, k in enumerate(keys)
            for o in keys[n + 1 :]
        ]  # the data first: that overlap loses the user's files
        for key, out, other, path, kind in pairs:
            if out == path or out.is_relative_to(path) or path.is_relative_to(out):
                where = (
                    "is" if out == path else ("is inside" if out.is_relative_to(path) else "holds")
                )
                raise ConfigError(
                    f"{key} ({out}) {where} {other} ({path}), the pipeline's {kind}: a "
                    "stage would write over or sweep the other's files; give each output "
                    "a folder of its own, apart from the data"
                )

    _root: Path = PrivateAttr(default_factory=lambda: Path("."))


SECTIONS = ("data", "features", "augment", "train", "export", "stream", "checks")


def _leaf_index() -> dict[str, tuple[str, ...]]:
    """Map every leaf name (and every dotted path) to its location in Params."""
    index: dict[str, tuple[str, ...]] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            loc = (*prefix, name)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, loc)
                continue
            index[".".join(loc)] = loc
            if name in index and index[name] != loc:
                raise AssertionError(f"leaf key {name} is not unique")  # programming error
            index[name] = loc

    walk(Params, ())
    return index


LEAF_KEYS = _leaf_index()

# Bounded repr of a bad value: a nested YAML alias bomb must not be expanded into the message.
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict = 2, 4, 4


def _fail(where: str, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    show = (
        ""
        if isinstance(got, dict) or first["type"] in ("value_error",)
        else f" (got {_SHOW.repr(got)})"
    )
    key = f"{loc}: " if loc else ""
    return ConfigError(f"{where}: {key}{msg}{show}")


def _check_keys(raw: dict[str, Any], model: type[BaseModel], where: str, prefix: str = "") -> None:
    for key, value in raw.items():
        fields = model.model_fields
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            )
            raise ConfigError(f"{where}: unknown key {prefix + str(key)!r}{hint}")
        ann = fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {prefix + key} must be a section (a mapping)")
            _check_keys(value, ann, where, prefix + key + ".")


def parse_override(flag: str) -> tuple[tuple[str, ...], Any]:
    """Parse `--key=value` (tutorial flag name or dotted path; a bare `--key` of a boolean means
    true) into (location, YAML value)."""
    body = flag[2:] if flag.startswith("--") else flag
    if "=" not in body and body in LEAF_KEYS and _annotation(LEAF_KEYS[body]) is bool:
        body += "=true"  # a bare switch: `kws freeze --streaming`
    if "=" not in body:
        raise ConfigError(f"override {flag!r}: use --key=value, e.g. --wanted_words=yes,no")
    key, value = body.split("=", 1)
    key = key.replace("-", "_") if key not in LEAF_KEYS else key
    if key not in LEAF_KEYS:
        close = difflib.get_close_matches(key, [k for k in LEAF_KEYS if "." not in k], n=1)
        hint = f"; did you mean --{close[0]}?" if close else ""
        raise ConfigError(f"override --{key}: unknown key{hint}")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except (yaml.YAMLError, RecursionError):
        parsed = value
    loc = LEAF_KEYS[key]
    # Comma lists and words stay strings even when YAML would read them as numbers or booleans.
    ann = _annotation(loc)
    if ann is str and not isinstance(parsed, str):
        parsed = value
    return loc, parsed


def _annotation(loc: tuple[str, ...]) -> Any:
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model.model_fields[loc[-1]].annotation


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(p: Path, what: str) -> dict[str, Any]:
    if not p.exists():
        raise ConfigError(f"{p}: {what} not found; run from the repo root or pass --params")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: {what} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the {what} ({e.strerror})") from None
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        why = getattr(e, "problem", e)
        raise ConfigError(f"{p}:{line} is not valid YAML ({why})") from None
    except RecursionError:
        raise ConfigError(f"{p}: {what} is nested too deeply to be params") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections {SECTIONS}")
    _check_keys(loaded, Params, str(p))
    return loaded


def load_params(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | dict[str, Any] | None = None,
    profile: str | Path | None = None,
) -> Params:
    """Load and validate params.yaml (None: built-in defaults), merge a profile file (e.g.
    profiles/tutorial.yaml) over it, then apply overrides.

    Raises ConfigError (one line, naming the file and key) before any work starts.
    """
    raw: dict[str, Any] = {}
    where = "defaults"
    root = Path(".")
    if path is not None:
        p = Path(path)
        where = str(p)
        root = p.resolve().parent
        raw = _read_yaml(p, "params file")
    if profile:
        raw = _deep_merge(raw, _read_yaml(Path(profile), "profile"))
        where = f"{where} + {profile}"
    items: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(overrides, dict):
        for k, v in overrides.items():
            if k not in LEAF_KEYS:
                raise ConfigError(f"override {k!r}: unknown key")
            items.append((LEAF_KEYS[k], v))
    elif overrides:
        items = [parse_override(f) for f in overrides]
    for loc, value in items:
        node = raw
        for part in loc[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {'.'.join(loc[:-1])} must be a section")
        node[loc[-1]] = value
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        raise _fail(where if not items else f"{where} (+ overrides)", e) from None
    params._root = root
    params.check_folders()
    return params


def params_to_dict(params: Params) -> dict[str, Any]:
    return params.model_dump(mode="json")


def write_params(params: Params, path: str | Path) -> None:
    from kws_core.infra.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(params_to_dict(params), sort_keys=False))
