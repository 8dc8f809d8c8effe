"""Score a trained checkpoint on labelled folders (official test-set or tutorial layout).

`speech_commands_test_set_v0.02` has one folder per label, `_silence_` and `_unknown_` included;
the tutorial layout has one folder per word plus `_background_noise_` (skipped). A folder whose
name is not one of the model's labels counts as `_unknown_` (the tutorial's rule).
`train.eval_dirs` names such folders to score after every training run (`score_eval_dirs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kws_core.config import Params
from kws_core.data.labels import labelled_clips
from kws_core.features.augmented_audio import features_of, fit_length
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.errors import ConfigError, DataError
from kws_core.infra.plots import confusion_matrix, format_confusion, plot_confusion
from kws_core.infra.wav import WavError, read_wav
from kws_core.training.checkpoints import restore_checkpoint
from kws_core.training.models import build_model


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


def evaluate_features(model, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Predicted label indices for features x (inference mode)."""
    import tensorflow as tf

    preds = []
    for i in range(0, len(x), batch):
        # float32 per batch: x may be a memory-mapped float16 cache (never loaded in full)
        logits = model(tf.constant(np.asarray(x[i : i + batch], np.float32)), training=False)
        preds.append(np.argmax(logits.numpy(), axis=1))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def load_model(params: Params, checkpoint: str):
    """Rebuild the configured architecture and restore a checkpoint into it."""
    import tensorflow as tf

    model, labels, spec = build_model(params)
    prefix = restore_checkpoint(
        tf.train.Checkpoint(model=model), checkpoint, params.layout.train_dir
    )
    return model, labels, spec, prefix


def load_test_dir(test_dir: Path, labels: list[str], spec: FeatureSpec):
    if not test_dir.is_dir():
        raise DataError(f"test_dir {test_dir} is not a folder (expected one sub-folder per label)")
    index = {label: i for i, label in enumerate(labels)}
    audio, truth, skipped = [], [], []
    for f, label in labelled_clips(test_dir, labels):
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


def score_dir(model, labels: list[str], spec: FeatureSpec, test_dir: Path) -> EvalResult:
    """Accuracy, per-label accuracy and confusion of a built model on one labelled folder."""

    audio, truth, skipped = load_test_dir(Path(test_dir), labels, spec)
    pred = evaluate_features(model, features_of(audio, spec))
    cm = confusion_matrix(truth, pred, len(labels))
    per_label = {
        label: float(cm[i, i] / cm[i].sum()) for i, label in enumerate(labels) if cm[i].sum()
    }
    return EvalResult(
        accuracy=float(np.mean(pred == truth)),
        n=len(truth),
        labels=labels,
        confusion=cm,
        per_label=per_label,
        skipped=skipped,
        checkpoint=Path(),
    )


def evaluate_dir(
    params: Params, test_dir: Path, checkpoint: str = "best", png: Path | None = None
) -> EvalResult:
    model, labels, spec, prefix = load_model(params, checkpoint)
    result = score_dir(model, labels, spec, Path(test_dir))
    result.checkpoint = prefix
    if png is not None:
        result.png = plot_confusion(result.confusion, labels, png, title=f"{Path(test_dir).name}")
    return result


def eval_dir_names(dirs: list[Path]) -> list[str]:
    """A short unique name per folder (its own name; a number added where two share one)."""
    names: list[str] = []
    for d in dirs:
        name, n = d.name or "eval", 2
        while name in names:
            name, n = f"{d.name}_{n}", n + 1
        names.append(name)
    return names


def check_eval_dirs(params: Params) -> list[Path]:
    """`train.eval_dirs` as folders, or a one-line ConfigError before any work starts."""
    dirs = [params.resolve(d) for d in params.train.eval_dir_list]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(
                f"train.eval_dirs: {d} is not a folder; give labelled folders "
                "(<label>/*.wav) separated by commas, or '' for none"
            )
    # The synthetic set's held-out voice family (kws_core.data.prepare.make_heldout) is scored
    # too: a stand-in for speakers never heard, with no real data needed.
    s = params.data.synthetic
    heldout = params.layout.heldout_dir
    if (
        params.data.data_url.strip() == "synthetic"
        and s.heldout_dialect_list
        and heldout.is_dir()
        and heldout not in dirs
    ):
        dirs.append(heldout)
    return dirs


def score_eval_dirs(
    model,
    labels: list[str],
    spec: FeatureSpec,
    dirs: list[Path],
    reports_dir: Path,
    write_to: Callable[[Path], Path] = lambda final: final,
) -> dict[str, dict]:
    """Score every `train.eval_dirs` folder: {name: {accuracy, n, per_class, confusion_png}}.
    Pictures are drawn at `write_to(final path)` (a commit's temp path) and named by `final`."""
    out: dict[str, dict] = {}
    for name, d in zip(eval_dir_names(dirs), dirs, strict=True):
        r = score_dir(model, labels, spec, d)
        png = reports_dir / f"eval_{name}_confusion.png"
        plot_confusion(r.confusion, labels, write_to(png), title=f"{name}")
        out[name] = {
            "accuracy": r.accuracy,
            "n": r.n,
            "per_class": r.per_label,
            "skipped": len(r.skipped),
            "path": str(d),
            "confusion_png": str(png),
        }
    return out
