"""Several architectures in one go: own folders, one MLflow parent run, champion exported."""

import json

import pytest
from mlflow.tracking import MlflowClient

from kws_core.data.manifest import build_manifest, write_manifest
from kws_core.infra.errors import KwsError
from kws_core.steps import freeze_step
from kws_core.training.compare import champion_params, params_for_architecture, train_architectures
from tests.conftest import build_tiny_dataset
from tests.test_train import params_for


def test_single_architecture_keeps_the_configured_folders(tmp_path):
    p = params_for(tmp_path)
    q = params_for_architecture(p, p.train.model_architecture)
    assert q.train.train_dir == p.train.train_dir and q.train.reports_dir == p.train.reports_dir
    assert champion_params(p).train.model_architecture == p.train.model_architecture


def test_two_architectures_are_grouped_and_the_champion_is_exported(tmp_path):
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no", "cat"], 30, learnable=True)
    p = params_for(
        tmp_path,
        architectures="single_fc,tiny_conv",
        manifest_dir=str(tmp_path / "manifest"),
        output_file=str(tmp_path / "export"),
        representative_examples=10,
        stream_duration_s=12,
        negative_duration_s=20,
        word_gap_ms=2000,
        stream_dir=str(tmp_path / "streaming"),
    )
    with pytest.raises(KwsError, match="no champion recorded"):
        champion_params(p)
    result = build_manifest(p.data, data, progress=False)
    write_manifest(result, tmp_path / "manifest")
    comparison = train_architectures(p, result.manifest, data, progress=False, track=True)
    assert set(comparison.results) == {"single_fc", "tiny_conv"}
    for arch, r in comparison.results.items():
        assert r.train_dir == tmp_path / "train" / arch
        assert (tmp_path / "reports" / arch / "metrics.json").exists()
    record = json.loads(comparison.champion_file.read_text())
    best = max(comparison.results.values(), key=lambda r: r.best_val_accuracy)
    assert record["architecture"] == comparison.champion == best.arch
    client = MlflowClient(p.train.mlflow_tracking_uri)
    parent = client.get_run(comparison.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert "single_fc_best_validation_accuracy" in parent.data.metrics
    for r in comparison.results.values():
        assert client.get_run(r.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    exported = freeze_step(p, progress=False)
    assert json.loads(exported.meta.read_text())["architecture"] == comparison.champion
    # The streaming report goes to the champion's run.
    from kws_core.streaming.report import streaming_eval

    streaming_eval(p, progress=False)
    champion_run = client.get_run(comparison.best.run_id)
    assert "stream_false_accepts_per_hour" in champion_run.data.metrics
