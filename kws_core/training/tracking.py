"""MLflow tracking for training runs: params, metrics, pictures and checkpoints."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import math
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from kws_core.config import Params, params_to_dict
from kws_core.infra.errors import ConfigError, KwsError

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


KEY = "train.mlflow_tracking_uri"
SUPPORTED = (
    "sqlite:///relative/path.db (from params.yaml's folder), sqlite:////absolute/path.db, "
    "http(s)://host:port of an `mlflow server`, or postgresql|mysql|mssql://user@host:port/db"
)
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
OFF_HINT = "or track nothing: --no-mlflow, or train.mlflow_required: false to go on without it"


class TrackingUnavailable(ConfigError):
    """The MLflow store named by train.mlflow_tracking_uri cannot be used; one line."""

    def __init__(self, uri: str, problem: str, fix: str) -> None:
        self.uri, self.problem = uri, problem
        super().__init__(f"{KEY} {uri!r}: {problem}; {fix}")


def resolve_tracking_uri(params: Params) -> str:
    """Make a relative SQLite path relative to the params file's folder (absolute: 4 slashes)."""
    uri = params.train.mlflow_tracking_uri.strip()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        return f"sqlite:///{params.resolve(path).absolute()}{sep}{query}"
    return uri


def check_tracking_store(params: Params) -> str:
    """The resolved tracking URI once its store answers within train.mlflow_timeout_s, else a
    one-line TrackingUnavailable naming the key, the URI and the fix. Every opening of the store
    (training, comparisons, freeze's registry, stream-eval, `make mlflow-ui`) goes through it."""
    uri = resolve_tracking_uri(params)
    timeout = params.train.mlflow_timeout_s
    scheme = m.group(1).lower() if (m := re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", uri)) else ""
    if scheme == "sqlite":
        _check_sqlite(uri, timeout)
    elif scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme.split("+")[0] in DATABASE_PORTS:
        _check_database_server(uri, scheme.split("+")[0], timeout)
    elif scheme in ("", "file"):
        raise TrackingUnavailable(
            uri,
            "a folder store is in maintenance mode in MLflow 3 (it refuses to open one)",
            f"use {SUPPORTED} (`mlflow migrate-filestore` moves old runs)",
        )
    else:
        raise TrackingUnavailable(uri, f"unknown scheme {scheme + ':'!r}", f"use {SUPPORTED}")
    return uri


def tracking_enabled(params: Params, say: Callable[[str], None] | None = None) -> bool:
    """Whether a command tracks: True once the store checks out. A store that does not stops
    it (TrackingUnavailable), or with train.mlflow_required false, is one line said and False."""
    try:
        check_tracking_store(params)
        return True
    except TrackingUnavailable as e:
        if params.train.mlflow_required:
            raise
        (say or print)(
            f"MLflow tracking off: {KEY} {e.uri!r}: {e.problem} "
            "(train.mlflow_required is false: going on without it)"
        )
        return False


def _check_sqlite(uri: str, timeout: float) -> None:
    """The folder exists (or is made) and is writable; an existing file is a whole SQLite db."""
    rest = uri[len("sqlite:///") :].partition("?")[0] if uri.startswith("sqlite:///") else ""
    if not rest.startswith("/") or rest.startswith("/:memory:"):
        raise TrackingUnavailable(uri, "is not a SQLite file URI", f"use {SUPPORTED}")
    path = Path(rest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrackingUnavailable(
            uri,
            f"cannot make its folder {path.parent} ({e.strerror or e})",
            "point it into a folder you can write",
        ) from None
    # SQLite writes a journal beside the database: the folder itself must be writable
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise TrackingUnavailable(
            uri, f"its folder {path.parent} is not writable", "point it into a folder you can write"
        )
    if not path.exists():
        return  # MLflow creates it
    moved = f"move it away (mv {path} {path}.broken) or point {KEY} elsewhere"
    if path.is_dir() or not os.access(path, os.R_OK | os.W_OK):
        raise TrackingUnavailable(uri, f"{path} is not a readable, writable file", moved)
    problem = _sqlite_problem(path, timeout)
    if problem:
        raise TrackingUnavailable(uri, f"{path} is not a usable SQLite database ({problem})", moved)


def _sqlite_problem(path: Path, timeout: float) -> str:
    """Why `path` is no whole SQLite database ('' when it is one, or empty)."""
    size = path.stat().st_size
    if size == 0:
        return ""  # SQLite's empty database: MLflow creates its tables
    with open(path, "rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "no SQLite header"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    # the header's page count is valid when its change counter matches "version valid for"
    if head[24:28] == head[92:96] and size < page * pages:
        return f"truncated: {size} of {page * pages} bytes"
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        return str(e)
    return ""


def _check_http(uri: str, timeout: float) -> None:
    """One GET of the server's /health within `timeout`, then MLflow's own calls bounded."""
    url = uri.rstrip("/") + "/health"
    fix = f"start `mlflow server` there or fix the URI, {OFF_HINT}"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_tls()) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", e)
        why = getattr(reason, "strerror", None) or str(reason) or type(e).__name__
        raise TrackingUnavailable(
            uri, f"no MLflow server answers GET {url} ({why}; timeout {timeout:g} s)", fix
        ) from None
    if status != 200:
        raise TrackingUnavailable(uri, f"GET {url} answered HTTP {status}, not an MLflow OK", fix)
    # MLflow's defaults (7 retries with backoff, 120 s a request) turn a server that goes away
    # mid-run into minutes of silence; the user's own settings win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(30, math.ceil(6 * timeout))))


def _tls() -> ssl.SSLContext:
    """The TLS trust MLflow's own client uses (its env vars), so the check agrees with it."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # noqa: S323 (the user asked for it)
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))


def _check_database_server(uri: str, engine: str, timeout: float) -> None:
    """A TCP connection to the database server within `timeout` (its login is MLflow's)."""
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname or "localhost", parts.port or DATABASE_PORTS[engine]
    except ValueError as e:
        raise TrackingUnavailable(uri, f"is malformed ({e})", f"use {SUPPORTED}") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise TrackingUnavailable(
            uri,
            f"no {engine} server answers at {host}:{port} ({why}; timeout {timeout:g} s)",
            f"start it or fix the URI, {OFF_HINT}",
        ) from None


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
        self.uri = check_tracking_store(params)
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

    client = MlflowClient(check_tracking_store(params))
    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)


def print_runs_url(params_file: str = "params.yaml", base: str = "http://127.0.0.1:5000") -> None:
    """One line for `make mlflow-ui`: where the kws runs table opens (or that none exist); a
    store that fails its check is one line on stderr and exit status 2."""
    from mlflow.tracking import MlflowClient

    from kws_core.config import load_params

    try:
        params = load_params(params_file)
        uri = check_tracking_store(params)
    except KwsError as e:
        print(f"make mlflow-ui: error: {e}", file=sys.stderr)
        sys.exit(2)
    exp = MlflowClient(uri).get_experiment_by_name(params.train.mlflow_experiment)
    if exp is None:
        print(f"no {params.train.mlflow_experiment!r} runs in {uri} yet: `make run` or `kws train`")
    else:
        print(f"kws training runs: {runs_url(base, exp.experiment_id)}")
