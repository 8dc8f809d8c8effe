"""The end of a training run: test and eval-set scores, their files, MLflow, `metrics.json`.

`report_run` writes the run's reports and returns its `TrainResult`; `read_metrics` is the one
reader of the `metrics.json` it writes (the streaming report and the Dagster checks use it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kws_core.config import Params
from kws_core.infra.atomic import read_json_object
from kws_core.infra.commit import atomic_outputs
from kws_core.infra.locks import await_commit, output_lock
from kws_core.infra.plots import confusion_matrix, confusion_table, format_confusion, plot_confusion
from kws_core.training.evaluate import evaluate_features, score_eval_dirs


@dataclass
class TrainResult:
    arch: str
    labels: list[str]
    train_dir: Path
    final_step: int
    start_step: int
    best_step: int
    best_val_accuracy: float
    test_accuracy: float
    seconds: float
    steps_per_second: float
    warm_steps_per_second: float  # after the first step (tracing, pipeline start-up) is done
    params_count: int
    flops: int
    best_checkpoint: Path
    last_checkpoint: Path
    reports_dir: Path
    summaries_dir: Path
    test_confusion: list[list[int]] = field(default_factory=list)
    # train.eval_dirs scores: {folder: {accuracy, n, per_class, ...}} (kws_core.training.evaluate)
    eval_dirs: dict[str, dict] = field(default_factory=dict)
    run_id: str = ""
    experiment_id: str = ""


@dataclass(frozen=True)
class RunFacts:
    """What the loop knows when its last step is done."""

    train_dir: Path
    summaries_dir: Path
    labels_path: Path
    best: str  # checkpoint names in train_dir ('' = none)
    latest: str
    best_step: int
    best_val_accuracy: float
    start_step: int
    final_step: int
    seconds: float
    warm_seconds: float  # from the end of the first step
    params_count: int
    flops: int


def metrics_path(params: Params) -> Path:
    """Where the training run of `params` writes its metrics (`METRICS_FILE` in reports_dir)."""
    return params.layout.metrics


def read_metrics(params: Params) -> dict:
    """The last training run's `metrics.json`, or a one-line DataError saying what to run."""
    await_commit(params.layout.reports_dir, "reading metrics.json")
    return read_json_object(
        metrics_path(params), "train first (`kws train`)", "train again (`kws train`)"
    )


def report_run(
    params: Params,
    model,
    labels: list[str],
    spec,
    testing: tuple[np.ndarray, np.ndarray],
    eval_dirs: list[Path],
    facts: RunFacts,
    tracker,
    say: Callable[[str], None],
) -> TrainResult:
    """Score the (best) model on the test set and `eval_dirs`, write the confusion files and
    `metrics.json`, log them to MLflow (`tracker`, None = untracked), return the result."""
    t = params.train
    test_x, test_y = testing
    pred = evaluate_features(model, test_x)
    cm = confusion_matrix(test_y, pred, len(labels))
    test_acc = float(np.mean(pred == test_y)) if len(test_y) else 0.0
    say(f"Confusion Matrix:\n{format_confusion(cm, labels)}")
    say(f"Final test accuracy = {100 * test_acc:.1f}% (N={len(test_y)})")
    reports = params.layout.reports_dir
    png, table = reports / "confusion_matrix.png", reports / "confusion_matrix.csv"
    # The pictures, tables and metrics of a run replace the last run's as one commit; the
    # reports_dir lock keeps a reader (await_commit) from finishing it under us.
    with output_lock(reports, "train reports"), atomic_outputs(reports, "train") as out:
        title = f"{t.model_architecture} test"
        plot_confusion(cm, labels, out.path(png), title=title)
        confusion_table(cm, labels).to_csv(out.path(table))
        evals = score_eval_dirs(model, labels, spec, eval_dirs, reports, out.path)
        for name, ev in evals.items():
            classes = ", ".join(f"{k} {100 * v:.0f}%" for k, v in ev["per_class"].items())
            say(f"Accuracy on {name} = {100 * ev['accuracy']:.1f}% (N={ev['n']}): {classes}")
        result = _result(facts, t, labels, test_acc, reports, cm, evals)
        if tracker:  # metrics.json names the run its pictures are logged to after the commit
            result.run_id, result.experiment_id = tracker.run_id, tracker.experiment_id
        metrics = {
            k: v
            for k, v in asdict(result).items()
            if isinstance(v, int | float | str) and not isinstance(v, bool)
        }
        if evals:
            metrics["eval"] = evals
        out.path(params.layout.metrics).write_text(json.dumps(metrics, indent=2, default=str))
        out.path(params.layout.metrics_summary).write_text(json.dumps(summarize(result), indent=2))
    if tracker:
        _log_to_mlflow(tracker, result, params, png, table, facts)
    return result


def _result(facts, t, labels, test_acc, reports, cm, evals) -> TrainResult:
    trained = facts.final_step - facts.start_step
    return TrainResult(
        arch=t.model_architecture,
        labels=labels,
        train_dir=facts.train_dir,
        final_step=facts.final_step,
        start_step=facts.start_step,
        best_step=facts.best_step,
        best_val_accuracy=facts.best_val_accuracy,
        test_accuracy=test_acc,
        seconds=facts.seconds,
        steps_per_second=trained / facts.seconds if facts.seconds > 0 else 0.0,
        warm_steps_per_second=(trained - 1) / facts.warm_seconds if trained > 1 else 0.0,
        params_count=facts.params_count,
        flops=facts.flops,
        best_checkpoint=facts.train_dir / facts.best,
        last_checkpoint=facts.train_dir / facts.latest,
        reports_dir=reports,
        summaries_dir=facts.summaries_dir,
        test_confusion=cm.tolist(),
        eval_dirs=evals,
    )


def summarize(result: TrainResult) -> dict[str, float | int]:
    """The run's headline numbers, rounded (`dvc metrics show` prints one short row of them)."""
    out: dict[str, float | int] = {
        "best_validation_accuracy": round(result.best_val_accuracy, 4),
        "test_accuracy": round(result.test_accuracy, 4),
    }
    out |= {f"{name}_accuracy": round(ev["accuracy"], 4) for name, ev in result.eval_dirs.items()}
    out["steps_per_second"] = round(result.steps_per_second, 1)
    return out


def _log_to_mlflow(tracker, result: TrainResult, params: Params, png, table, facts) -> None:
    """The run's final metrics, plots, tables and best checkpoint (`kws freeze` registers the
    exported model). `validation_accuracy` is the per-evaluation curve; the value the checkpoint
    was chosen by is `best_validation_accuracy`, logged at its step."""
    step = facts.final_step
    tracker.log_metrics({"best_validation_accuracy": result.best_val_accuracy}, facts.best_step)
    tracker.log_metrics(
        {"test_accuracy": result.test_accuracy, "steps_per_second": result.steps_per_second}, step
    )
    tracker.log_artifact(png, "plots")
    tracker.log_image(png, "confusion_matrix", step)
    tracker.log_artifact(table, "tables")
    for name, ev in result.eval_dirs.items():
        tracker.log_metrics(
            {f"eval_{name}_accuracy": ev["accuracy"]}
            | {f"eval_{name}_{k}": v for k, v in ev["per_class"].items()},
            step,
        )
        tracker.log_artifact(Path(ev["confusion_png"]), "plots")
    tracker.log_artifact(facts.labels_path)
    for f in sorted(facts.train_dir.glob(f"{facts.best}.*")):
        tracker.log_artifact(f, "checkpoint")
    tracker.log_artifact(facts.labels_path, "checkpoint")
    result.run_id, result.experiment_id = tracker.run_id, tracker.experiment_id
