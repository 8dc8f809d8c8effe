"""`dvc repro` of dvc.yaml in a temp git repo: real DVC, real `kws` commands."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, build_tiny_dataset, copy_dvc_project

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
    copy_dvc_project(repo)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data_url="", wanted_words="yes,no")
    params["train"].update(
        how_many_training_steps="2,1", batch_size=4, eval_step_interval=3, save_step_interval=3
    )
    params["export"].update(representative_examples=10)
    params["stream"].update(stream_duration_s=12, negative_duration_s=20, word_gap_ms=2000)
    params["features"].update(cache_copies=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # (the repo's default model, the speech embedding, end to end)
    build_tiny_dataset(repo / params["data"]["data_dir"], ["yes", "no", "cat"], 100)
    run(["git", "init", "-q"], repo, env)
    run(["git", "config", "user.email", "ci@example.com"], repo, env)
    run(["git", "config", "user.name", "ci"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")  # (dvc init writes its own)
    return repo, env


STAGES = (
    "dataset",
    "manifest",
    "validate",
    "features",
    "train",
    "freeze",
    "streams",
    "stream_eval",
)


def test_dvc_repro_runs_every_stage_and_is_then_up_to_date(dvc_repo):
    repo, env = dvc_repo
    out = run(["dvc", "repro"], repo, env).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    arch = yaml.safe_load((repo / "params.yaml").read_text())["train"]["model_architecture"]
    assert (repo / f"results/speech_commands_train/{arch}.ckpt-best.index").exists()
    assert (repo / "results/manifest/manifest.parquet").exists()
    assert (repo / "results/manifest/data_docs/index.html").exists()
    assert (repo / "results/frozen/model/model_int8.tflite").exists()
    assert (repo / "results/streaming/det_curve.png").exists()
    assert (repo / "dvc.lock").exists()
    assert "up to date" in run(["dvc", "status"], repo, env).stdout.lower()
    again = run(["dvc", "repro"], repo, env).stdout
    assert "Running stage" not in again
    metrics = run(["dvc", "metrics", "show"], repo, env).stdout
    assert "quality_metrics.json" in metrics and "passed" in metrics
    assert "test_accuracy" in metrics and "correct_pct" in metrics
    # compact: one short row per file, not the wide reports
    assert max(len(line) for line in metrics.splitlines()) < 250, metrics
    plots = run(["dvc", "plots", "show", "--json"], repo, env).stdout
    assert "det_curve.png" in plots and "confusion_matrix.png" in plots
    # a picture plot renders offline (no vega script from a CDN)
    run(["dvc", "plots", "show", "-o", "plots_html"], repo, env)
    page = (repo / "plots_html" / "index.html").read_text()
    assert "<img" in page and "cdn.jsdelivr" not in page and "vega" not in page.lower()


def test_dvc_reruns_only_what_a_param_change_touches(dvc_repo):
    repo, env = dvc_repo
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)

    def change(section, key, value):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params[section][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return run(["dvc", "repro"], repo, env).stdout

    # A RecognizeCommands setting: only the streaming evaluation runs again.
    out = change("stream", "detection_threshold", 0.5)
    assert [s for s in STAGES if f"Running stage '{s}'" in out] == ["stream_eval"]
    assert "stream.detection_threshold" in run(["dvc", "params", "diff"], repo, env).stdout
    # A data param: everything downstream of the manifest, never the data set itself.
    out = change("data", "unknown_percentage", 20.0)
    ran = [s for s in STAGES if f"Running stage '{s}'" in out]
    assert ran == ["manifest", "validate", "features", "train", "freeze", "streams", "stream_eval"]
    # the local data set (data_url "") is the user's: repro never deleted it
    assert any((repo / "data/speech_commands/yes").glob("*.wav"))
    # Code is a dep too: editing the training loop makes `train` (and only it, directly) stale.
    loop = repo / "kws_core/training/loop.py"
    loop.write_text(loop.read_text() + "\n# edited\n")
    status = json.loads(run(["dvc", "status", "--json"], repo, env).stdout)
    assert set(status) == {"train"}, status
    assert "kws_core/training" in json.dumps(status["train"])


def test_dvc_compares_experiments_and_commits_with_history(dvc_repo):
    repo, env = dvc_repo
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)  # dvc.lock too: the history
    # kws evaluate writes into a folder of its own: the train stage stays clean
    run(["kws", "evaluate", "--test_dir=data/speech_commands", "--no-progress"], repo, env)
    assert "up to date" in run(["dvc", "status"], repo, env).stdout.lower()
    for arch in ("single_fc", "tiny_conv"):
        out = run(
            ["dvc", "exp", "run", "-n", f"exp-{arch}", "-S", f"train.model_architecture={arch}"],
            repo,
            env,
        ).stdout
        assert "Running stage 'train'" in out and "Running stage 'dataset'" not in out
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    found = {}
    for commit in rows:
        for exp in [commit, *(e for x in commit.get("experiments") or [] for e in x["revs"])]:
            data = exp.get("data") or {}
            arch = (
                data.get("params", {})
                .get("params.yaml", {})
                .get("data", {})
                .get("train", {})
                .get("model_architecture")
            )
            summary = data.get("metrics", {}).get("results/train_reports/summary.json", {})
            if arch and "test_accuracy" in summary.get("data", {}):
                found[exp.get("name") or exp.get("rev")] = arch
    assert {"exp-single_fc", "exp-tiny_conv"} <= set(found), rows
    assert found["exp-single_fc"] == "single_fc" and found["exp-tiny_conv"] == "tiny_conv"
    # the workspace holds the last experiment: compared with HEAD, every number on both sides
    diff = run(["dvc", "metrics", "diff", "--json"], repo, env)
    assert "failed to load" not in diff.stderr
    changes = json.loads(diff.stdout)["results/train_reports/summary.json"]
    assert all(v["old"] is not None and v["new"] is not None for v in changes.values()), changes
    assert "train.model_architecture" in run(["dvc", "params", "diff"], repo, env).stdout
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], repo, env).stdout)
    matrix = plots["data"]["results/train_reports/confusion_matrix.png"]
    assert {r for entry in matrix for r in entry["revisions"]} == {"HEAD", "workspace"}, matrix
