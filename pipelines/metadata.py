"""Metadata people want to see in the Dagster UI: pictures, links, tables."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import pandas as pd

from pipelines.dvc_link import DvcRecord

MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


def image(path: Path, title: str) -> dg.MetadataValue:
    """A PNG shown inline in the asset's metadata (markdown data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def number(value: float, digits: int = 4) -> dg.MetadataValue:
    """A float rounded for people (the UI prints every digit it is given)."""
    return dg.MetadataValue.float(round(float(value), digits))


def table(frame: pd.DataFrame, index: bool = True) -> dg.MetadataValue:
    """A DataFrame as markdown with labels literal: `_silence_` would render as italic."""
    frame = frame.copy()
    if index:
        frame.index = [f"`{v}`" for v in frame.index]
    return dg.MetadataValue.md(frame.to_markdown(index=index))


def mlflow_run(experiment_id: str, run_id: str) -> dg.MetadataValue:
    return dg.MetadataValue.url(f"{MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}")


def dvc_metadata(record: DvcRecord) -> dict:
    meta: dict = {"dvc_stage": record.stage}
    if record.data_version:
        meta["dvc_data_version"] = record.data_version
        meta["dvc_outs"] = dg.MetadataValue.json(record.outs)
    if record.note:
        meta["dvc_note"] = record.note
    return meta


def result(metadata: dict, record: DvcRecord) -> dg.MaterializeResult:
    """A materialization whose data version is the DVC content hash (when there is one)."""
    version = dg.DataVersion(record.data_version) if record.data_version else None
    return dg.MaterializeResult(metadata={**metadata, **dvc_metadata(record)}, data_version=version)
