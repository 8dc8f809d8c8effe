"""`dvc repro` of dvc.yaml in a temp git repo: real DVC, real `kws` commands."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, build_tiny_dataset

BIN = Path(sys.executable).parent


def run(cmd, cwd, env, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def dvc_repo(tmp_path):
    if not (BIN / "dvc").exists():
        pytest.skip("dvc is not installed in this environment")
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data_url="", wanted_words="yes,no")
    params["train"].update(
        how_many_training_steps="2,1", batch_size=4, eval_step_interval=3, save_step_interval=3
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    build_tiny_dataset(repo / params["data"]["data_dir"], ["yes", "no", "cat"], 100)
    run(["git", "init", "-q"], repo, env)
    run(["git", "config", "user.email", "ci@example.com"], repo, env)
    run(["git", "config", "user.name", "ci"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    return repo, env


def test_dvc_repro_runs_every_stage_and_is_then_up_to_date(dvc_repo):
    repo, env = dvc_repo
    out = run(["dvc", "repro"], repo, env).stdout
    for stage in ("dataset", "manifest", "validate", "train"):
        assert f"Running stage '{stage}'" in out
    assert (repo / "results/speech_commands_train/low_latency_conv.ckpt-best.index").exists()
    assert (repo / "results/manifest/manifest.parquet").exists()
    assert (repo / "results/manifest/data_docs/index.html").exists()
    assert (repo / "dvc.lock").exists()
    assert "up to date" in run(["dvc", "status"], repo, env).stdout.lower()
    again = run(["dvc", "repro"], repo, env).stdout
    assert "Running stage" not in again
    metrics = run(["dvc", "metrics", "show"], repo, env).stdout
    assert "quality_metrics.json" in metrics and "passed" in metrics
    assert "test_accuracy" in metrics


def test_dvc_reruns_only_what_a_param_change_touches(dvc_repo):
    repo, env = dvc_repo
    run(["dvc", "repro"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["unknown_percentage"] = 20.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo, env).stdout
    assert "Running stage 'manifest'" in out
    assert "Running stage 'dataset'" not in out
    # the local data set (data_url "") is the user's: repro never deleted it
    assert any((repo / "data/speech_commands/yes").glob("*.wav"))
