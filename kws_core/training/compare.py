"""Train several architectures on one data set, group them in MLflow, pick the champion.

`train.architectures: "low_latency_conv,tiny_conv"` trains each in turn; every architecture then
has its own `train_dir/<arch>`, `reports_dir/<arch>` and `summaries_dir/<arch>`, and one MLflow
parent run holds the child runs, so the MLflow UI compares them side by side. The champion (best
validation accuracy) is written to `reports_dir/champion.json`; `kws freeze` exports it. With a
single architecture (the default) the folders are the configured ones, unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kws_core.config import Params
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import KwsError

CHAMPION = "champion.json"


def params_for_architecture(params: Params, arch: str) -> Params:
    """The params one architecture trains (and is exported) with."""
    p = params.model_copy(deep=True)
    p.train.model_architecture = arch
    if len(params.train.architecture_list) > 1:
        t = p.train
        t.train_dir = str(Path(t.train_dir) / arch)
        t.reports_dir = str(Path(t.reports_dir) / arch)
        t.summaries_dir = str(Path(t.summaries_dir) / arch)
    return p


@dataclass
class Comparison:
    results: dict  # arch -> TrainResult
    champion: str
    parent_run_id: str
    champion_file: Path

    @property
    def best(self):
        return self.results[self.champion]


def champion_params(params: Params) -> Params:
    """Params of the model to export: the champion of a comparison, else the configured one."""
    archs = params.train.architecture_list
    if len(archs) == 1:
        return params_for_architecture(params, archs[0])
    path = params.layout.reports_dir / CHAMPION
    try:
        arch = json.loads(path.read_text())["architecture"]
    except (OSError, ValueError, KeyError):
        raise KwsError(
            f"{path}: no champion recorded for train.architectures={params.train.architectures!r}"
            "; train them first (`kws train`)"
        ) from None
    if arch not in archs:
        raise KwsError(f"{path} names {arch!r}, which is not in train.architectures; train again")
    return params_for_architecture(params, arch)


def train_architectures(
    params: Params,
    manifest: pd.DataFrame,
    data_dir: Path,
    progress: bool = True,
    track: bool = True,
    tags: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Comparison:
    """Train every architecture of `train.architectures` (one run each), record the champion;
    `log` gets the training's progress lines (default: the terminal)."""
    from kws_core.training.loop import train

    archs = params.train.architecture_list
    parent = _start_parent(params, archs, tags or {}) if track else None
    results = {}
    status = "FAILED"
    try:
        for arch in archs:
            results[arch] = train(
                params_for_architecture(params, arch),
                manifest,
                data_dir,
                progress=progress,
                log=log,
                track=track,
                parent_run_id=parent[1] if parent else "",
            )
        status = "FINISHED"
    finally:
        if parent:
            client, run_id = parent
            for arch, r in results.items():
                client.log_metric(run_id, f"{arch}_best_validation_accuracy", r.best_val_accuracy)
                client.log_metric(run_id, f"{arch}_test_accuracy", r.test_accuracy)
            client.set_terminated(run_id, status=status)
    champion = max(results, key=lambda a: results[a].best_val_accuracy)
    best = results[champion]
    path = params.layout.reports_dir / CHAMPION
    record = {
        "architecture": champion,
        "validation_accuracy": best.best_val_accuracy,
        "test_accuracy": best.test_accuracy,
        "train_dir": str(best.train_dir),
        "run_id": best.run_id,
        "compared": {
            a: {"validation_accuracy": r.best_val_accuracy, "test_accuracy": r.test_accuracy}
            for a, r in results.items()
        },
    }
    atomic_write_text(path, json.dumps(record, indent=2))
    return Comparison(results, champion, parent[1] if parent else "", path)


def _start_parent(params: Params, archs: list[str], tags: dict[str, str]):
    """An MLflow parent run grouping the architectures trained in one go."""
    from kws_core.training.tracking import RunTracker

    name = f"compare-{'+'.join(archs)}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracker = RunTracker(params, tags={"run_name": name, "kind": "comparison", **tags})
    return tracker.client, tracker.run_id
