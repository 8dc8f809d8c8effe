"""What every model builder needs to know: input shape, label count and the architecture knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kws_core.infra.errors import ConfigError

if TYPE_CHECKING:
    from kws_core.config import Params

# BC-ResNet has four stages (channel multipliers 1, 1.5, 2, 2.5 of 8 * tau).
BC_RESNET_STAGES = 4


def parse_blocks(text: str) -> tuple[int, ...]:
    """Parse `train.bc_resnet_blocks` ("2,2,4,4") into a tuple, or raise a one-line ConfigError."""
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    try:
        blocks = tuple(int(p) for p in parts)
    except ValueError:
        blocks = ()
    if len(blocks) != BC_RESNET_STAGES or any(b < 1 for b in blocks):
        raise ConfigError(
            f"train.bc_resnet_blocks: {text!r} must be {BC_RESNET_STAGES} positive integers, "
            "one block count per stage (e.g. 2,2,4,4)"
        )
    return blocks


@dataclass(frozen=True)
class ModelSettings:
    """Input/output sizes and the architecture knobs of `TrainConfig`.

    The defaults of the tutorial are 98 frames x 40 MFCC bins and 12 labels (10 words plus
    `_silence_` and `_unknown_`). Models take float32 features `[batch, spectrogram_length,
    fingerprint_width]` and return logits `[batch, label_count]`.
    """

    spectrogram_length: int
    fingerprint_width: int
    label_count: int
    dropout_rate: float = 0.5
    ds_cnn_channels: int = 64
    ds_cnn_blocks: int = 4
    bc_resnet_scale: float = 1.0
    bc_resnet_blocks: tuple[int, ...] = (2, 2, 4, 4)
    embedding_units: int = 128

    def __post_init__(self) -> None:
        for name in ("spectrogram_length", "fingerprint_width", "label_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"model settings: {name} must be a positive integer, got {value!r}"
                )
        if not 0 <= self.dropout_rate < 1:
            raise ConfigError(f"train.dropout_rate: must be in [0, 1), got {self.dropout_rate}")
        if self.ds_cnn_channels < 1 or self.ds_cnn_blocks < 1:
            raise ConfigError("train.ds_cnn_channels and train.ds_cnn_blocks must be at least 1")
        if self.embedding_units < 1:
            raise ConfigError("train.embedding_units must be at least 1")
        if int(self.bc_resnet_scale * 8) < 1:
            raise ConfigError(
                f"train.bc_resnet_scale: {self.bc_resnet_scale} gives no channels; use >= 0.125"
            )
        blocks = tuple(self.bc_resnet_blocks)
        if len(blocks) != BC_RESNET_STAGES or any(int(b) != b or b < 1 for b in blocks):
            raise ConfigError(
                f"train.bc_resnet_blocks: {blocks} must be {BC_RESNET_STAGES} positive integers"
            )
        object.__setattr__(self, "bc_resnet_blocks", tuple(int(b) for b in blocks))

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one example (no batch dimension): (frames, bins)."""
        return (self.spectrogram_length, self.fingerprint_width)

    @classmethod
    def from_params(
        cls,
        params: Params,
        label_count: int,
        spectrogram_length: int,
        fingerprint_width: int,
    ) -> ModelSettings:
        """Settings for `params.train`, given the feature shape and the number of labels."""
        train = params.train
        return cls(
            spectrogram_length=spectrogram_length,
            fingerprint_width=fingerprint_width,
            label_count=label_count,
            dropout_rate=train.dropout_rate,
            ds_cnn_channels=train.ds_cnn_channels,
            ds_cnn_blocks=train.ds_cnn_blocks,
            bc_resnet_scale=train.bc_resnet_scale,
            bc_resnet_blocks=parse_blocks(train.bc_resnet_blocks),
            embedding_units=train.embedding_units,
        )
