"""Dagster resources: the one typed params object, loaded from params.yaml."""

from pathlib import Path

import dagster as dg

from kws_core.config import Params, load_params

REPO_ROOT = Path(__file__).resolve().parents[1]


class KwsParams(dg.ConfigurableResource):
    """params.yaml plus run-config overrides (`{"wanted_words": "yes,no"}`), validated once."""

    params_path: str = str(REPO_ROOT / "params.yaml")
    overrides: dict[str, str] = {}
    progress: bool = False

    def load(self) -> Params:
        return load_params(self.params_path, [f"--{k}={v}" for k, v in self.overrides.items()])
