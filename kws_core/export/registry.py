"""The export as an MLflow model: logged into its training run, registered, `champion` moved.

`kws freeze` (and the DVC stage and Dagster asset that call the same step) logs the export
folder as a pyfunc model into the MLflow run that trained the checkpoint: the SavedModel, both
TFLite files, `labels.txt` and `export.json` travel as its artifacts, with a signature (float
PCM `[N, samples]` in, one score column per label out) and an input example. The model is
registered under `kws-<architecture>-<words>`; the `champion` alias moves to it only when its
validation accuracy beats the current champion's. Then

    model = mlflow.pyfunc.load_model("models:/kws-embedding_mlp-yes-no-...@champion")
    scores = model.predict(pcm)  # DataFrame: one row per clip, one column per label
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import kws_core
from kws_core.config import Params
from kws_core.export.loader import ExportedModel
from kws_core.infra.errors import DataError
from kws_core.training.tracking import check_tracking_store, registered_model_name

CHAMPION = "champion"
MODEL_NAME = "model"  # the logged model's name inside the run


class KwsPyfuncModel(mlflow.pyfunc.PythonModel):
    """A kws export as a pyfunc: float PCM clips [N, samples] in, scores per label out."""

    def load_context(self, context) -> None:
        self.model = ExportedModel.load(Path(context.artifacts["export"]) / "saved_model")

    # np.ndarray: a hint MLflow accepts without inferring a schema from it (the logged
    # signature says float32 [-1, samples]).
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        pcm = np.asarray(
            model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input,
            np.float32,
        )
        return pd.DataFrame(self.model.scores(pcm), columns=self.model.labels)


@dataclass(frozen=True)
class RegisteredExport:
    name: str
    version: str
    champion: bool
    model_uri: str  # models:/<name>/<version>

    def line(self) -> str:
        alias = f" (@{CHAMPION})" if self.champion else " (the champion stays)"
        return f"mlflow model  {self.model_uri}{alias}"


def log_export(
    params: Params, export_dir: Path, run_id: str, val_accuracy: float | None, step: int = 0
) -> RegisteredExport:
    """Log `export_dir` into run `run_id` as a pyfunc model and register it.

    `val_accuracy` None registers the version without moving `champion`. The run's metrics at
    `step` (the best checkpoint's) are linked to the logged model.
    """
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    uri = check_tracking_store(params)
    client = MlflowClient(uri)
    exported = ExportedModel.load(export_dir / "saved_model")
    example = np.zeros((1, exported.spec.desired_samples), np.float32)
    scores = pd.DataFrame(exported.scores(example), columns=exported.labels)
    signature = infer_signature(example, scores)
    run = client.get_run(run_id)
    name = registered_model_name(exported.meta["architecture"], params.data.wanted_word_list)
    with _quiet_mlflow(uri):
        # Logging into a finished run re-opens it; its status and end time are put back.
        try:
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_NAME,
                    python_model=KwsPyfuncModel(),
                    artifacts={"export": str(export_dir)},
                    signature=signature,
                    input_example=example,
                    step=step,
                    # given, so MLflow does not load the model in a subprocess to infer them
                    pip_requirements=_requirements(),
                    # the loader and front end travel with the model: it loads without kws
                    code_paths=[str(Path(kws_core.__file__).parent)],
                )
            version = mlflow.register_model(info.model_uri, name, tags=_tags(val_accuracy))
        finally:
            client.set_terminated(run_id, run.info.status, run.info.end_time)
    promoted = val_accuracy is not None and val_accuracy > _champion_accuracy(client, name)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    return RegisteredExport(
        name, str(version.version), promoted, f"models:/{name}/{version.version}"
    )


def register_export(params: Params, export_dir: Path, checkpoint: Path) -> RegisteredExport | None:
    """Log and register an export of `params`' best checkpoint into the run that trained it;
    None when that run was not tracked or the export is of another checkpoint."""
    from kws_core.training.checkpoints import CheckpointManager
    from kws_core.training.report import read_metrics

    train_dir = params.layout.train_dir
    try:
        metrics = read_metrics(params)
    except DataError:  # a checkpoint trained elsewhere: nothing says which run it is
        return None
    run_id = metrics.get("run_id", "")
    state = CheckpointManager.read_state(train_dir)
    if (
        not run_id
        or not state.best
        or Path(checkpoint) != train_dir / state.best
        or metrics.get("best_step") != state.best_step  # metrics of another training
    ):
        return None
    return log_export(
        params,
        export_dir,
        run_id,
        float(metrics["best_val_accuracy"]),
        step=int(metrics.get("best_step", 0)),
    )


@contextlib.contextmanager
def _quiet_mlflow(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at `uri`, without its info lines and progress bars (the
    caller prints one line); both put back afterwards."""
    previous = mlflow.get_tracking_uri()
    logger = logging.getLogger("mlflow")
    level = logger.level
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    mlflow.set_tracking_uri(uri)
    logger.setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        logger.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "numpy", "pandas", "pydantic", "pyyaml", "tensorflow-cpu", "tensorflow"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return pins


def _tags(val_accuracy: float | None) -> dict[str, str]:
    return {"val_accuracy": f"{val_accuracy:.6f}"} if val_accuracy is not None else {}


def _champion_accuracy(client, name: str) -> float:
    from mlflow.exceptions import MlflowException

    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return -1.0
    return float(champ.tags.get("val_accuracy", "-1"))
