"""Dagster resources: the one typed params object, loaded from params.yaml."""

import os
from pathlib import Path

import dagster as dg

from kws_core.config import Params, load_params

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_params_path() -> str:
    """`KWS_PARAMS` if set (a tiny config for a demo or a test), else the repo's params.yaml."""
    return os.environ.get("KWS_PARAMS", str(REPO_ROOT / "params.yaml"))


class KwsParams(dg.ConfigurableResource):
    """params.yaml plus run-config overrides (`{"wanted_words": "yes,no"}`), validated once.

    `dvc_commit`: after each asset, record its outputs in `dvc.lock` (`dvc commit`) when the
    params file sits in a DVC project, so Dagster and `dvc repro` share one truth.
    """

    params_path: str = ""  # "" = default_params_path(), resolved when the run starts
    overrides: dict[str, str] = {}
    progress: bool = False
    dvc_commit: bool = True

    def path(self) -> Path:
        return Path(self.params_path or default_params_path())

    def load(self) -> Params:
        return load_params(self.path(), [f"--{k}={v}" for k, v in self.overrides.items()])

    def commit(self, stage: str):
        """Record the stage's outputs in dvc.lock (see pipelines.dvc_link)."""
        from pipelines.dvc_link import DvcRecord, commit_stage

        if not self.dvc_commit:
            return DvcRecord(stage, None, {}, "dvc_commit is off")
        return commit_stage(self.path(), stage, overridden=bool(self.overrides))
