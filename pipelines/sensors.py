"""Start the pipeline when the data folder's content changes (by content hash, not mtime)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

from pipelines.jobs import kws_pipeline
from pipelines.resources import KwsParams


def folder_hash(folder: Path) -> tuple[str, int]:
    """sha256 over every file's relative path and bytes, in sorted order; (hash, file count).

    Content, not mtime: touching a file or copying the tree elsewhere does not trigger a run;
    changing or adding a clip does.
    """
    digest = hashlib.sha256()
    count = 0
    if not folder.is_dir():
        return "missing", 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # temp files of an atomic write in progress, markers
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha1(path.read_bytes()).digest())
        count += 1
    return digest.hexdigest(), count


@dg.sensor(
    job=kws_pipeline,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs kws_pipeline when files under data_dir change (content hash).",
)
def new_data_sensor(context: dg.SensorEvaluationContext, kws: KwsParams):
    params = kws.load()
    data_dir = params.layout.data_dir
    current, count = folder_hash(data_dir)
    previous = context.cursor
    context.update_cursor(current)
    if previous is None:
        return dg.SkipReason(f"first look at {data_dir}: {count} files recorded, no run")
    if previous == current:
        return dg.SkipReason(f"{data_dir} unchanged ({count} files)")
    return dg.RunRequest(run_key=current, tags={"kws/data_hash": current[:16]})
