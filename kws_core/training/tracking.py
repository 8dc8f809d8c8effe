"""MLflow tracking for training runs: params, metrics, pictures and checkpoints."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
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
# The experiment's kind for MLflow UIs that read it (3.17 decides the view by the URL's
# `workflowType` or the sidebar switch instead: see runs_url).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# A saved view of the runs table (an experiment tag the MLflow UI lists under "Views" and opens
# from runs_url): the metrics people compare as columns, best first.
VIEW_KEY = "kws-training"
VIEW_METRICS = ("best_validation_accuracy", "test_accuracy", "steps_per_second", "params")
VIEW_PARAMS = ("train.model_architecture", "features.preprocess", "data.synthetic.speakers")


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
                exp_id = self.client.create_experiment(
                    name, artifact_location=artifacts.as_uri(), tags=EXPERIMENT_TAGS
                )
            else:
                exp_id = exp.experiment_id
                for key, value in EXPERIMENT_TAGS.items():
                    if exp.tags.get(key) != value:
                        self.client.set_experiment_tag(exp_id, key, value)
        self.experiment_id = exp_id
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

    def log_image(self, path: Path, key: str, step: int) -> None:
        """A picture as an MLflow image (not only a file): the runs page's chart view shows the
        images of the runs it compares side by side."""
        from PIL import Image

        self.flush()
        with Image.open(path) as img:
            self.client.log_image(self.run_id, img.convert("RGB"), key=key, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
        if status != "FINISHED":
            return
        metrics = self.client.get_run(self.run_id).data.metrics
        evals = sorted(k for k in metrics if k.startswith("eval_") and k.endswith("_accuracy"))
        set_runs_view(self.client, self.experiment_id, evals)


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the MLflow UI's column ids


def set_runs_view(client, experiment_id: str, extra_metrics: list[str]) -> None:
    """Write (or widen) the experiment's saved runs-table view: VIEW_METRICS, the eval sets'
    accuracies and VIEW_PARAMS as columns, sorted by best_validation_accuracy."""
    import time

    key = f"mlflow.sharedViewState.{VIEW_KEY}"
    metrics = list(dict.fromkeys([*VIEW_METRICS, *extra_metrics]))
    # metrics right after the run name: the attribute columns (source, models, dataset) would
    # push them off a laptop screen
    columns = [_column("metrics", m) for m in metrics]
    columns += [_column("params", p) for p in VIEW_PARAMS]
    tag = client.get_experiment(experiment_id).tags.get(key)
    try:
        if tag and set(columns) <= set(json.loads(json.loads(tag)["state"])["selectedColumns"]):
            return
    except (ValueError, KeyError, TypeError):
        pass  # not ours or damaged: written again
    state = {
        "selectedColumns": columns,
        "orderByKey": _column("metrics", "best_validation_accuracy"),
        "orderByAsc": False,
    }
    now = int(time.time() * 1000)
    view = {"name": "kws: training runs", "createdAt": now, "updatedAt": now}
    client.set_experiment_tag(experiment_id, key, json.dumps(view | {"state": json.dumps(state)}))


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table with the saved view's metric columns, in the model-training
    view (MLflow 3 otherwise opens on GenAI traces)."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"
    )


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


def print_runs_url(params_file: str = "params.yaml", base: str = "http://127.0.0.1:5000") -> None:
    """One line for `make mlflow-ui`: where the kws runs table opens (or that none exist)."""
    from mlflow.tracking import MlflowClient

    from kws_core.config import load_params

    params = load_params(params_file)
    uri = resolve_tracking_uri(params)
    exp = MlflowClient(uri).get_experiment_by_name(params.train.mlflow_experiment)
    if exp is None:
        print(f"no {params.train.mlflow_experiment!r} runs in {uri} yet: `make run` or `kws train`")
    else:
        print(f"kws training runs: {runs_url(base, exp.experiment_id)}")
