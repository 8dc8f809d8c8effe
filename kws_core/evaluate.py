"""Score a trained checkpoint on a folder in the official test-set layout.

`speech_commands_test_set_v0.02` has one folder per label, `_silence_` and `_unknown_` included.
A folder whose name is not one of the model's labels counts as `_unknown_` (the tutorial's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kws_core.audio import WavError, read_wav
from kws_core.checkpoints import resolve_checkpoint, restore
from kws_core.config import UNKNOWN_LABEL, Params
from kws_core.errors import DataError
from kws_core.features import FeatureSpec
from kws_core.input_data import features_of, fit_length
from kws_core.models import build_model
from kws_core.plots import confusion_matrix, format_confusion, plot_confusion


@dataclass
class EvalResult:
    accuracy: float
    n: int
    labels: list[str]
    confusion: np.ndarray
    per_label: dict[str, float]
    skipped: list[tuple[str, str]]
    checkpoint: Path
    png: Path | None = None

    def report(self) -> str:
        lines = [f"Confusion Matrix:\n{format_confusion(self.confusion, self.labels)}"]
        lines += [f"  {k:<10} {100 * v:5.1f}%" for k, v in self.per_label.items()]
        lines.append(f"Test accuracy = {100 * self.accuracy:.1f}% (N={self.n})")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable files (first: {self.skipped[0]})")
        return "\n".join(lines)


def load_model(params: Params, checkpoint: str):
    """Rebuild the configured architecture and restore a checkpoint into it."""
    import tensorflow as tf

    model, labels, spec = build_model(params)
    prefix = resolve_checkpoint(checkpoint, params.resolve(params.train.train_dir))
    restore(tf.train.Checkpoint(model=model), prefix)
    return model, labels, spec, prefix


def load_test_dir(test_dir: Path, labels: list[str], spec: FeatureSpec):
    if not test_dir.is_dir():
        raise DataError(f"test_dir {test_dir} is not a folder (expected one sub-folder per label)")
    index = {label: i for i, label in enumerate(labels)}
    audio, truth, skipped = [], [], []
    for folder in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        label = folder.name if folder.name in index else UNKNOWN_LABEL
        for f in sorted(folder.glob("*.wav")):
            try:
                x = read_wav(f, spec.sample_rate)
            except (WavError, OSError) as e:
                skipped.append((str(f), str(e)))
                continue
            audio.append(fit_length(x, spec.desired_samples))
            truth.append(index[label])
    if not audio:
        raise DataError(f"test_dir {test_dir} holds no readable <label>/*.wav files")
    return np.stack(audio).astype(np.float32), np.array(truth), skipped


def evaluate_dir(
    params: Params, test_dir: Path, checkpoint: str = "best", png: Path | None = None
) -> EvalResult:
    from kws_core.train import evaluate_features

    model, labels, spec, prefix = load_model(params, checkpoint)
    audio, truth, skipped = load_test_dir(Path(test_dir), labels, spec)
    pred = evaluate_features(model, features_of(audio, spec))
    cm = confusion_matrix(truth, pred, len(labels))
    per_label = {
        label: float(cm[i, i] / cm[i].sum()) for i, label in enumerate(labels) if cm[i].sum()
    }
    result = EvalResult(
        accuracy=float(np.mean(pred == truth)),
        n=len(truth),
        labels=labels,
        confusion=cm,
        per_label=per_label,
        skipped=skipped,
        checkpoint=prefix,
    )
    if png is not None:
        result.png = plot_confusion(cm, labels, png, title=f"{Path(test_dir).name}")
    return result
