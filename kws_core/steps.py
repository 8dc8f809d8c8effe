"""The pipeline's steps as plain functions: the CLI, `dvc repro` and Dagster all call these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kws_core.config import Params
from kws_core.data.manifest import (
    ManifestResult,
    build_manifest,
    label_counts,
    load_manifest,
    manifest_path,
)
from kws_core.data.manifest import write_manifest as _write_manifest
from kws_core.data.prepare import RawDataset, prepare_dataset
from kws_core.data.validate import ValidationReport, validate_manifest
from kws_core.infra.locks import output_lock
from kws_core.infra.ownership import claim_folder

# What each output folder held before kws marked its folders (accepted as kws's own).
MANIFEST_SIGNS = ("manifest.parquet", "manifest_summary.json", "validation.json")
TRAIN_SIGNS = ("checkpoint_state.json", "*.ckpt-*.index")
REPORT_SIGNS = ("metrics.json", "summary.json", "confusion_matrix.*", "evaluate")
STREAM_SIGNS = ("report.json", "*_labels.txt")


def claim_training_folders(params: Params) -> None:
    """train_dir, summaries_dir and reports_dir are kws's own (kws_core.infra.ownership)."""
    lay = params.layout
    claim_folder(lay.train_dir, "train.train_dir", TRAIN_SIGNS)
    claim_folder(lay.summaries_dir, "train.summaries_dir", ("train", "validation"))
    claim_folder(lay.reports_dir, "train.reports_dir", REPORT_SIGNS)


@dataclass
class ManifestOutputs:
    result: ManifestResult
    paths: dict[str, Path]


def dataset_step(params: Params, progress: bool = True) -> RawDataset:
    with output_lock(params.layout.data_dir, "dataset"):
        return prepare_dataset(params, progress=progress)


def manifest_step(params: Params, progress: bool = True) -> ManifestOutputs:
    claim_folder(params.layout.manifest_dir, "data.manifest_dir", MANIFEST_SIGNS)
    raw = dataset_step(params, progress=progress)
    with output_lock(params.layout.manifest_dir, "manifest"):
        sources = [(params.resolve(s.path), s) for s in params.data.source_list]
        result = build_manifest(params.data, raw.data_dir, progress=progress, sources=sources)
        paths = _write_manifest(result, params.layout.manifest_dir)
    return ManifestOutputs(result, paths)


def ensure_manifest(params: Params, verb: str, progress: bool = True) -> pd.DataFrame:
    """The manifest, made first (data set and manifest, in one line) when it is missing: a
    verb that reads it prepares its data itself, as the tutorial's train.py does."""
    path = manifest_path(params)
    if not path.exists():
        print(
            f"kws {verb}: no manifest at {path}; preparing the data first "
            "(kws dataset, kws manifest)",
            flush=True,
        )
        return manifest_step(params, progress=progress).result.manifest
    return load_manifest(path)


def validate_step(params: Params, manifest: pd.DataFrame | None = None) -> ValidationReport:
    if manifest is None:
        manifest = load_manifest(manifest_path(params))
    out = claim_folder(params.layout.manifest_dir, "data.manifest_dir", MANIFEST_SIGNS)
    with output_lock(out, "validate"):  # its reports live beside the manifest
        return validate_manifest(manifest, params.data, out_dir=out)


def format_counts(manifest: pd.DataFrame) -> str:
    return label_counts(manifest).to_string()


def format_sources(result: ManifestResult) -> list[str]:
    """Clips per origin when data.sources adds folders, and the synthetic quality gate."""
    from kws_core.data.manifest import origin_counts

    lines = []
    origins = origin_counts(result.manifest)
    if len(origins) > 1:
        lines += ["clips per source (partition counts, weight):", origins.to_string()]
    q = result.synth_quality
    if q is not None and not q.empty:
        bad = q[q["kept"] < q["generated"]]
        lines.append(
            f"synthetic quality gate: {int(q['kept'].sum())} of {int(q['generated'].sum())} "
            f"clips kept; {len(bad)} of {len(q)} voices lost some (quality.csv in data_dir)"
        )
        if not bad.empty:
            lines.append(bad.head(10).to_string(index=False))
    return lines


def format_rejected(rejected: pd.DataFrame, limit: int = 10) -> list[str]:
    if rejected.empty:
        return ["rejected files: none"]
    lines = [f"rejected files: {len(rejected)}"]
    for row in rejected.head(limit).itertuples():
        lines.append(f"  {row.path}: {row.reason}")
    if len(rejected) > limit:
        lines.append(f"  ... and {len(rejected) - limit} more (see rejected.csv)")
    return lines


def _tracking(params: Params, log: Callable[[str], None] | None = None) -> bool:
    """Whether to log to MLflow: its store checked before any work (tracking.tracking_enabled)."""
    from kws_core.training.tracking import tracking_enabled

    return tracking_enabled(params, log or (lambda msg: print(msg, flush=True)))


def train_step(
    params: Params,
    progress: bool = True,
    track: bool = True,
    tags: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
):
    """Train every architecture of train.architectures (default: model_architecture) on the
    manifest written by manifest_step; returns a `kws_core.training.compare.Comparison`.
    `log` gets the progress lines (default: the terminal)."""
    from kws_core.training.compare import train_architectures
    from kws_core.training.models import check_architecture

    for arch in params.train.architecture_list:  # before the manifest is read
        check_architecture(arch)
    track = track and _tracking(params, log)  # ... and so is the MLflow store
    claim_training_folders(params)
    manifest = ensure_manifest(params, "train", progress)
    data_dir = params.layout.data_dir
    with output_lock(params.layout.train_dir, "train"):
        return train_architectures(
            params, manifest, data_dir, progress=progress, track=track, tags=tags, log=log
        )


def freeze_step(params: Params, progress: bool = True, track: bool = True):
    """Export the champion's best checkpoint (or train.start_checkpoint) as `kws freeze`; with
    `track`, log the export into its training run as an MLflow model and register it."""
    from kws_core.export.writer import check_export_target, export_model
    from kws_core.training.compare import champion_params

    check_export_target(params.layout.export_dir, params)  # before any work
    track = track and _tracking(params)
    chosen = champion_params(params)
    manifest = load_manifest(manifest_path(params)) if params.export.quantize else None
    with output_lock(params.layout.export_dir, "freeze"):
        result = export_model(
            chosen, chosen.train.start_checkpoint or "best", manifest=manifest, progress=progress
        )
        if track:
            from kws_core.export.registry import register_export

            result.registered = register_export(chosen, result.out_dir, result.checkpoint)
    return result


def stream_eval_step(params: Params, graph=None, progress: bool = True, track: bool = True):
    """Streaming evaluation of the export (default: its SavedModel), report in stream_dir."""
    from kws_core.streaming.report import streaming_eval

    track = track and _tracking(params)
    claim_folder(params.layout.stream_dir, "stream.stream_dir", STREAM_SIGNS)
    with output_lock(params.layout.stream_dir, "stream-eval"):
        return streaming_eval(params, graph=graph, progress=progress, log_mlflow=track)


def streams_step(params: Params):
    """The keyword and the negative-only test streams (generated or reused), as one step."""
    from kws_core.streaming.report import generate_test_stream

    claim_folder(params.layout.stream_dir, "stream.stream_dir", STREAM_SIGNS)
    with output_lock(params.layout.stream_dir, "streams"):
        return (
            generate_test_stream(params, negative=False),
            generate_test_stream(params, negative=True),
        )


def features_step(params: Params, progress: bool = True):
    """Build or reuse the augmented feature cache (features.cache_dir) that training reads."""
    from kws_core.features.cache import build_feature_cache

    claim_folder(params.layout.cache_dir, "features.cache_dir", ("*/meta.json",))
    manifest = ensure_manifest(params, "features", progress)
    data_dir = params.layout.data_dir
    with output_lock(params.layout.cache_dir, "features"):
        return build_feature_cache(params, manifest, data_dir, progress=progress)
