"""Trained models: every architecture of train.architectures, grouped in MLflow, one champion."""

import json

import dagster as dg
from tqdm import tqdm

from kws_core.steps import train_step
from pipelines.assets.features import augmented_features
from pipelines.metadata import image, mlflow_run, number, result
from pipelines.resources import KwsParams


@dg.asset(
    group_name="model",
    deps=[augmented_features],
    description="Checkpoints of each architecture in train.architectures (default: "
    "model_architecture); the best by validation accuracy is the champion.",
)
def trained_model(context: dg.AssetExecutionContext, kws: KwsParams) -> dg.MaterializeResult:
    params = kws.load()

    def say(line: str) -> None:
        # the run's log in the Dagster UI gets every training line; the terminal too when
        # progress is shown there (make run)
        context.log.info(line)
        if kws.progress:
            tqdm.write(line)

    comparison = train_step(
        params,
        progress=kws.progress,
        track=True,
        tags={"dagster_run_id": context.run.run_id},
        log=say,
    )
    best = comparison.best
    rows = [
        "| architecture | weights | steps/s | validation | test |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for a, r in comparison.results.items():
        name = f"{a} (champion)" if a == comparison.champion else a
        rows.append(
            f"| {name} | {r.params_count:,} | {r.steps_per_second:.1f} | "
            f"{100 * r.best_val_accuracy:.1f}% | {100 * r.test_accuracy:.1f}% |"
        )
    table = "\n".join(rows)
    metadata = {
        "champion": comparison.champion,
        "best_validation_accuracy": number(best.best_val_accuracy),
        "test_accuracy": number(best.test_accuracy),
        "architectures": dg.MetadataValue.md(table),
        "steps_per_second": number(best.steps_per_second),
        "weights": best.params_count,
        "best_checkpoint": dg.MetadataValue.path(str(best.best_checkpoint)),
        "confusion_matrix": image(best.reports_dir / "confusion_matrix.png", "confusion matrix"),
        "champion_file": dg.MetadataValue.path(str(comparison.champion_file)),
    }
    for name, ev in best.eval_dirs.items():  # train.eval_dirs, e.g. real recordings
        metadata[f"eval_{name}_accuracy"] = number(ev["accuracy"])
        metadata[f"eval_{name}_per_class"] = dg.MetadataValue.md(
            "| label | accuracy |\n| --- | ---: |\n"
            + "\n".join(f"| `{k}` | {100 * v:.1f}% |" for k, v in ev["per_class"].items())
        )
    if best.run_id:
        metadata["mlflow_run"] = mlflow_run(_experiment_of(params, best.run_id), best.run_id)
        metadata["mlflow_parent_run"] = comparison.parent_run_id
    context.log.info(json.dumps({a: r.best_val_accuracy for a, r in comparison.results.items()}))
    return result(metadata, kws.commit("train"))


def _experiment_of(params, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    from kws_core.training.tracking import check_tracking_store

    return MlflowClient(check_tracking_store(params)).get_run(run_id).info.experiment_id
