"""MLflow tracking for training runs: params, metrics, pictures, checkpoints, a champion alias."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from kws_core.config import Params, params_to_dict

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
log = logging.getLogger(__name__)


def resolve_tracking_uri(params: Params) -> str:
    """Make a relative SQLite path relative to the params file's folder (absolute: 4 slashes)."""
    uri = params.train.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = params.resolve(uri[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dataset_hash(manifest: pd.DataFrame) -> str:
    """Content hash of the labelled clips: same clips, labels and partitions, same hash."""
    cols = manifest[["path", "label", "partition", "sha1"]].sort_values(["path", "label"])
    text = cols.to_csv(index=False)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def registered_model_name(arch: str, words: list[str]) -> str:
    slug = "-".join(words)
    if len(slug) > 48 or not re.fullmatch(r"[A-Za-z0-9_\-]+", slug):
        slug = f"{len(words)}words-" + hashlib.sha1(",".join(words).encode()).hexdigest()[:8]
    return f"kws-{arch}-{slug}"


@contextlib.contextmanager
def _store_setup_lock(uri: str) -> Iterator[None]:
    """An exclusive flock beside a SQLite store (other stores serialise themselves)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RunTracker:
    """One MLflow run per training run. Metrics are buffered and sent in batches."""

    def __init__(self, params: Params, tags: dict[str, str]) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.uri = resolve_tracking_uri(params)
        mlflow.set_tracking_uri(self.uri)
        name = params.train.mlflow_experiment
        # The first access creates (migrates) the SQLite schema, then the experiment: two
        # trainings starting at once on a new store would race on both.
        with _store_setup_lock(self.uri):
            self.client = MlflowClient(self.uri)
            self.client.search_experiments(max_results=1)  # the tracking store, initialised
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                artifacts = params.resolve("results/mlartifacts").resolve()
                artifacts.mkdir(parents=True, exist_ok=True)
                exp_id = self.client.create_experiment(name, artifact_location=artifacts.as_uri())
            else:
                exp_id = exp.experiment_id
        self.run = self.client.create_run(exp_id, tags=tags, run_name=tags.get("run_name"))
        self.run_id = self.run.info.run_id
        self._buffer: list[Any] = []
        flat = {k: str(v)[:500] for k, v in flatten(params_to_dict(params)).items()}
        items = list(flat.items())
        from mlflow.entities import Param

        for i in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + 90]])

    @property
    def url(self) -> str:
        return f"{self.uri} run {self.run_id}"

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        if len(self._buffer) >= 500:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:900], self._buffer[900:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.flush()
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

    def register(self, name: str, val_accuracy: float) -> tuple[str, bool]:
        """Add the run's checkpoint as a model version; move `champion` only if it is better."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        source = f"{self.run.info.artifact_uri}/checkpoint"
        version = self.client.create_model_version(
            name, source, run_id=self.run_id, tags={"val_accuracy": f"{val_accuracy:.6f}"}
        )
        try:
            champ = self.client.get_model_version_by_alias(name, "champion")
            best = float(champ.tags.get("val_accuracy", "-1"))
        except MlflowException:
            best = -1.0
        promoted = val_accuracy > best
        if promoted:
            self.client.set_registered_model_alias(name, "champion", version.version)
        return version.version, promoted


def log_to_run(
    params: Params,
    run_id: str,
    metrics: dict[str, float],
    files: list[Path],
    artifact_path: str,
) -> None:
    """Add metrics and files to an existing run (e.g. the streaming report of a training run)."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_tracking_uri(params))
    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)
