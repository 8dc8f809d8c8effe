"""What the training loop reads: one interface, wherever the examples come from.

* `CachedFeatures`: the augmented feature cache (`kws features`): MFCC/log-mel frames, the
  speech embeddings, or the activations below a fine-tuned embedding top, memory-mapped.
* `AudioOnTheFly`: the clips in memory, augmented and featurised every batch (the tutorial's way).

`open_training_data` picks one by `train.feature_source`; the loop never asks which it got.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from kws_core.config import Params
from kws_core.features.front_end import FeatureSpec

NORM_SAMPLE = 4000  # training rows that set a fine-tuned embedding's normalisation
Batch = tuple[np.ndarray, np.ndarray]


class TrainingData(ABC):
    """Training batches by step, fixed validation/test sets, what normalisation needs."""

    validation: Batch
    testing: Batch
    training_labels: np.ndarray
    tags: dict[str, str]  # recorded with the MLflow run

    @abstractmethod
    def batches(self, batch_size: int, first_step: int, last_step: int) -> Iterable[Batch]:
        """Batches of steps first_step..last_step (1-based): the same batch for a step whatever
        step the run started at, so a resumed run sees what an uninterrupted one would."""

    @abstractmethod
    def feature_stats(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin mean and std of training features (the outer normalisation)."""

    @abstractmethod
    def input_sample(self, batch_size: int) -> Iterable[np.ndarray]:
        """Batches of training inputs as the model sees them (an inner normalisation's stats)."""

    def describe(self) -> str:
        """One line for the log saying where the training examples come from ('' = nothing)."""
        return ""

    def close(self) -> None:  # noqa: B027 - most sources have nothing to stop
        """Stop any reader thread the last `batches` started."""


class CachedFeatures(TrainingData):
    """The augmented feature cache, built first if missing (no audio in memory at all)."""

    def __init__(self, params: Params, manifest: pd.DataFrame, data_dir: Path, progress: bool):
        from kws_core.features.cache import build_feature_cache

        self.cache = build_feature_cache(params, manifest, data_dir, progress=progress)
        self.validation = (self.cache.validation, np.asarray(self.cache.validation_labels))
        self.testing = (self.cache.testing, np.asarray(self.cache.testing_labels))
        self.training_labels = np.asarray(self.cache.training_labels)
        self.tags = {"feature_cache": self.cache.key}
        self._seed = params.train.seed
        self._open = None

    def batches(self, batch_size: int, first_step: int, last_step: int) -> Iterable[Batch]:
        # Rows of the memory-mapped cache keyed by (seed, step), gathered by a thread.
        self._open = self.cache.batches(batch_size, first_step, last_step, self._seed)
        return self._open

    def feature_stats(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.norm_stats

    def input_sample(self, batch_size: int) -> Iterator[np.ndarray]:
        rows = self.cache.training[:: max(len(self.cache.training) // NORM_SAMPLE, 1)]
        return (rows[i : i + 500] for i in range(0, len(rows), 500))

    def describe(self) -> str:
        how = "reused" if self.cache.reused else "built"
        return f"Training features: {self.cache.path} ({how})"

    def close(self) -> None:
        if self._open is not None:
            self._open.close()


class AudioOnTheFly(TrainingData):
    """The clips in memory; every batch augmented and featurised in a tf.data pipeline."""

    def __init__(
        self,
        params: Params,
        manifest: pd.DataFrame,
        data_dir: Path,
        labels: list[str],
        spec: FeatureSpec,
        progress: bool,
    ):
        from kws_core.features.augmented_audio import AudioProcessor

        self.processor = AudioProcessor.from_params(
            params, manifest, data_dir, labels, spec, progress=progress
        )
        self.validation = self.processor.features("validation")
        self.testing = self.processor.features("testing")
        self.training_labels = self.processor.sets["training"].labels
        self.tags = {}

    def batches(self, batch_size: int, first_step: int, last_step: int) -> Iterable[Batch]:
        return self.processor.training_dataset(batch_size, first_step, last_step)

    def feature_stats(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.processor.feature_stats(batch_size)

    def input_sample(self, batch_size: int) -> Iterator[np.ndarray]:
        # steps -20..-1: batches no training step draws
        return (x for x, _ in self.processor.training_dataset(batch_size, -20, -1))


def open_training_data(
    params: Params,
    manifest: pd.DataFrame,
    data_dir: Path,
    labels: list[str],
    spec: FeatureSpec,
    progress: bool = True,
) -> TrainingData:
    """The training data `train.feature_source` names ("cache" or "on_the_fly")."""
    if params.train.feature_source == "cache":
        return CachedFeatures(params, manifest, data_dir, progress)
    return AudioOnTheFly(params, manifest, data_dir, labels, spec, progress)
