"""SpecAugment (Park et al. 2019): random time and feature masks on training examples.

The masks act on normalised features (a masked value becomes the training mean), inside the
model and only when it is called with `training=True`, like dropout: evaluation, export and
streaming never see them, and the feature cache stays valid when they change. Their randomness
comes from a Keras seed generator, so a seed gives the same masks and a resumed run continues
them (the generator's state is checkpointed with the dropout seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
from keras import ops

if TYPE_CHECKING:
    from kws_core.config import Params

NAME = "spec_augment"


@dataclass(frozen=True)
class SpecAugmentSettings:
    """Masks per example: `time_masks` spans of 0..`time_mask_frames` frames and `feature_masks`
    spans of 0..`feature_mask_bins` bins, on a `probability` share of examples."""

    probability: float = 0.0
    time_masks: int = 2
    time_mask_frames: int = 10
    feature_masks: int = 2
    feature_mask_bins: int = 6

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and (
            self.time_masks * self.time_mask_frames + self.feature_masks * self.feature_mask_bins
            > 0
        )

    @classmethod
    def from_params(cls, params: Params, frame_ms: float, bins: int) -> SpecAugmentSettings:
        """`train.specaugment_*` for frames `frame_ms` apart with `bins` values each."""
        t = params.train
        return cls(
            probability=t.specaugment_probability,
            time_masks=t.specaugment_time_masks,
            time_mask_frames=int(t.specaugment_time_mask_ms // frame_ms),
            feature_masks=t.specaugment_feature_masks,
            feature_mask_bins=int(t.specaugment_feature_mask_fraction * bins),
        )


def _span_mask(batch, count: int, max_width: int, length: int, seed) -> keras.KerasTensor:
    """`[batch, length]` 1.0 where none of `count` random spans (width 0..max_width) falls."""
    width = ops.floor(keras.random.uniform((batch, count, 1), seed=seed) * (max_width + 1))
    width = ops.minimum(width, float(length))
    start = ops.floor(keras.random.uniform((batch, count, 1), seed=seed) * (length - width + 1))
    pos = ops.cast(ops.arange(length), "float32")[None, None, :]
    inside = ops.logical_and(pos >= start, pos < start + width)
    return 1.0 - ops.cast(ops.any(inside, axis=1), "float32")


@keras.saving.register_keras_serializable(package="kws")
class SpecAugment(keras.layers.Layer):
    """`[batch, frames, bins]` -> the same, masked during training (identity otherwise)."""

    def __init__(
        self,
        probability: float = 0.0,
        time_masks: int = 2,
        time_mask_frames: int = 10,
        feature_masks: int = 2,
        feature_mask_bins: int = 6,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = SpecAugmentSettings(
            probability, time_masks, time_mask_frames, feature_masks, feature_mask_bins
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        s = self.settings
        if not training or not s.enabled:
            return x
        batch = ops.shape(x)[0]
        frames, bins = int(x.shape[1]), int(x.shape[2])
        keep = ops.ones_like(x)
        if s.time_masks and s.time_mask_frames:
            m = _span_mask(batch, s.time_masks, s.time_mask_frames, frames, self.seed_generator)
            keep = keep * m[:, :, None]
        if s.feature_masks and s.feature_mask_bins:
            m = _span_mask(batch, s.feature_masks, s.feature_mask_bins, bins, self.seed_generator)
            keep = keep * m[:, None, :]
        chosen = keras.random.uniform((batch, 1, 1), seed=self.seed_generator) < s.probability
        return x * ops.where(chosen, keep, ops.ones_like(keep))

    def get_config(self) -> dict:
        s = self.settings
        return super().get_config() | {
            "probability": s.probability,
            "time_masks": s.time_masks,
            "time_mask_frames": s.time_mask_frames,
            "feature_masks": s.feature_masks,
            "feature_mask_bins": s.feature_mask_bins,
            "seed": self.seed,
        }


def with_spec_augment(x, settings: SpecAugmentSettings):
    """`x` through a SpecAugment layer when `settings` masks anything, else `x` as it is
    (so models without it keep the layer structure of earlier checkpoints)."""
    return SpecAugment(**settings.__dict__, name=NAME)(x) if settings.enabled else x
