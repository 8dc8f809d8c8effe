"""The Dagster layer: definitions, checks, sensor, and full materializations on a real instance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.asset_checks import _grade, manifest_expectations
from pipelines.assets.data import partition_manifest, raw_dataset
from pipelines.definitions import defs
from pipelines.resources import KwsParams
from pipelines.sensors import folder_hash, new_data_sensor
from tests.conftest import REPO, build_tiny_dataset, copy_dvc_project
from tests.test_dvc import STAGES

ASSETS = {
    "raw_dataset",
    "partition_manifest",
    "augmented_features",
    "trained_model",
    "frozen_graph",
    "test_streams",
    "streaming_eval_report",
}
BIN = Path(sys.executable).parent


def test_definitions_load_with_every_asset_check_schedule_and_sensor():
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"manifest_expectations", "model_accuracy", "streaming_thresholds"}
    # A string selection fails with the antlr version dvc pulls in; the pins keep it working.
    job = defs.resolve_job_def("data_job")
    assert {n.name for n in job.nodes} >= {"raw_dataset", "partition_manifest"}
    assert "trained_model" not in {n.name for n in job.nodes}
    schedule = defs.resolve_schedule_def("weekly_retrain")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_sensor_def("new_data_sensor").default_status == (
        dg.DefaultSensorStatus.STOPPED
    )


def test_materialize_data_assets_with_check(tiny_dataset, tmp_path):
    tiny_dataset(speakers=100)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"data_url": "", "data_dir": "data"}}))
    result = dg.materialize(
        [raw_dataset, partition_manifest, manifest_expectations],
        resources={"kws": KwsParams(params_path=str(params), overrides={"wanted_words": "yes,no"})},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    mats = {
        m.asset_key.to_user_string(): m.metadata
        for m in (
            e.event_specific_data.materialization for e in result.get_asset_materialization_events()
        )
    }
    assert mats["raw_dataset"]["source"].value == "local"
    assert mats["partition_manifest"]["dagster/row_count"].value > 200
    assert "yes" in mats["partition_manifest"]["clips_per_label_and_partition"].value
    # Not a DVC project: nothing committed, and the metadata says why.
    assert "not a DVC project" in mats["raw_dataset"]["dvc_note"].value
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    assert (tmp_path / "results/manifest/manifest.parquet").exists()


def test_grade_warn_and_error():
    assert _grade(0.9, 0.85, 0.5, True) == (True, dg.AssetCheckSeverity.WARN)
    assert _grade(0.7, 0.85, 0.5, True) == (False, dg.AssetCheckSeverity.WARN)
    assert _grade(0.4, 0.85, 0.5, True) == (False, dg.AssetCheckSeverity.ERROR)
    assert _grade(0.2, 0.3, 0.6, False)[0] is True
    assert _grade(0.7, 0.3, 0.6, False) == (False, dg.AssetCheckSeverity.ERROR)


def test_sensor_runs_only_when_the_content_changes(tmp_path):
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no"], 3)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"data_url": "", "data_dir": "data"}}))
    kws = KwsParams(params_path=str(params))

    def tick(cursor):
        ctx = dg.build_sensor_context(cursor=cursor, resources={"kws": kws})
        out = new_data_sensor(ctx)
        return out, ctx.cursor

    out, cursor = tick(None)
    assert isinstance(out, dg.SkipReason) and "first look" in out.skip_message
    out, cursor2 = tick(cursor)
    assert isinstance(out, dg.SkipReason) and cursor2 == cursor
    clip = next((data / "yes").glob("*.wav"))
    os.utime(clip, (0, 0))  # a new mtime alone is not new data
    out, _ = tick(cursor)
    assert isinstance(out, dg.SkipReason)
    shutil.copy(clip, data / "yes" / "ffffffff_nohash_9.wav")  # a new clip is
    out, cursor3 = tick(cursor)
    assert isinstance(out, dg.RunRequest) and cursor3 != cursor
    assert folder_hash(data)[1] == folder_hash(data)[1]


TINY = {
    "data": {"data_url": "", "wanted_words": "yes,no,cat"},
    "features": {"cache_copies": 1},
    "train": {
        "how_many_training_steps": "30,10",
        "learning_rate": "0.003,0.001",
        "batch_size": 16,
        "eval_step_interval": 20,
        "save_step_interval": 20,
    },
    "export": {"representative_examples": 10},
    "stream": {"stream_duration_s": 12, "negative_duration_s": 20, "word_gap_ms": 2000},
}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def dvc_project(tmp_path, monkeypatch):
    """A tiny kws project: git + DVC, the repo's dvc.yaml, a tiny params.yaml and data set."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    repo = tmp_path / "project"
    repo.mkdir()
    copy_dvc_project(repo)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    build_tiny_dataset(
        repo / "data/speech_commands", ["yes", "no", "cat", "dog"], 60, learnable=True
    )
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "ci@example.com")
    _git(repo, "config", "user.name", "ci")
    subprocess.run([BIN / "dvc", "init", "-q"], cwd=repo, check=True)
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")  # (dvc init writes its own)
    return repo


def test_make_run_path_materializes_everything_and_leaves_dvc_clean(dvc_project, tmp_path):
    from pipelines.dvc_link import dvc_repo
    from pipelines.run import instance_for, run_pipeline, summary

    instance = instance_for(tmp_path / "dagster_home")
    result = run_pipeline(dvc_project / "params.yaml", instance, progress=False)
    assert result.success
    # the real job (re-executable, on the job's page and the timeline), not an ephemeral one
    (record,) = instance.get_run_records()
    assert record.dagster_run.job_name == "kws_pipeline"
    # the step log carries the training's progress lines
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("Validation accuracy" in m for m in messages)
    assert any(m.startswith("Step #") for m in messages)
    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e
        for e in result.get_asset_materialization_events()
    }
    assert set(mats) == ASSETS
    meta = {k: e.event_specific_data.materialization.metadata for k, e in mats.items()}
    assert 0 <= meta["trained_model"]["test_accuracy"].value <= 1
    assert "data:image/png;base64," in meta["trained_model"]["confusion_matrix"].value
    assert "data:image/png;base64," in meta["streaming_eval_report"]["det_curve"].value
    assert meta["frozen_graph"]["model_int8_bytes"].value > 0
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"manifest_expectations", "model_accuracy", "streaming_thresholds"}
    assert checks["manifest_expectations"].passed
    # each check says its verdict in words, first thing (the UI shows the description)
    assert checks["manifest_expectations"].description.startswith("all ")
    assert checks["model_accuracy"].description.startswith("test accuracy ")
    assert "false-reject rate" in checks["streaming_thresholds"].description
    # numbers rounded for people, labels literal in markdown tables
    acc = meta["trained_model"]["test_accuracy"].value
    assert acc == round(acc, 4)
    assert "`_silence_`" in meta["partition_manifest"]["clips_per_label_and_partition"].value
    assert "](det_curve.png)" not in meta["streaming_eval_report"]["report"].value
    # One truth with DVC: every stage committed, `dvc status` clean, nothing left to reproduce,
    # and each asset's data version is the content hash of its stage's outputs in dvc.lock.
    with dvc_repo(dvc_project) as repo:
        assert repo.status() == {}
        assert repo.reproduce() == []
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(STAGES)
    from pipelines.dvc_link import read_lock

    version = instance.get_latest_data_version_record(dg.AssetKey("trained_model"))
    assert version is not None
    assert (
        meta["trained_model"]["dvc_data_version"].value
        == read_lock(dvc_project, "train").data_version
    )
    assert any("trained_model" in line for line in summary(result))


def test_multiprocess_executor_runs_independent_assets_in_parallel(dvc_project, tmp_path):
    # In its own process, as a launched run is (pytest's captured stderr confuses Dagster's
    # console logger across executions in one process).
    home = tmp_path / "dagster_home"
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "--multiprocess", "--no-progress"]
        + ["--params", str(dvc_project / "params.yaml"), "--dagster_home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "streaming_eval_report" in run.stdout
    from pipelines.run import instance_for

    instance = instance_for(home)
    (record,) = instance.get_run_records()
    spans = {}
    for event in instance.all_logs(record.dagster_run.run_id):
        dagster_event = event.dagster_event
        if dagster_event is None or dagster_event.step_key is None:
            continue
        if dagster_event.is_step_start:
            spans.setdefault(dagster_event.step_key, [None, None])[0] = event.timestamp
        if dagster_event.is_step_success:
            spans.setdefault(dagster_event.step_key, [None, None])[1] = event.timestamp
    streams = spans["test_streams"]
    # test_streams only needs the manifest: it runs while the model assets run.
    overlapping = [
        k
        for k in ("augmented_features", "trained_model")
        if spans[k][0] < streams[1] and streams[0] < spans[k][1]
    ]
    assert overlapping, spans
