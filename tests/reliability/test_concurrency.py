"""Two runs at once: one waits for the other (or stops with a clear message), nothing is
corrupted, and the shared MLflow store stays readable.

Every stage (CLI, the commands `dvc repro` runs, Dagster assets) goes through the same
`kws_core.steps` functions, which hold a lock on the output they write (kws_core/infra/locks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from kws_core.infra.errors import KwsError
from kws_core.infra.locks import lock_path, output_lock, sweep_dead_writes
from kws_core.training.checkpoints import CheckpointManager
from tests.conftest import build_tiny_dataset
from tests.reliability.test_kill import project

pytestmark = pytest.mark.timeout(300)


def start(root: Path, *argv: str, wait_s: str = "60") -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KWS_LOCK_WAIT_S": wait_s}
    cmd = [sys.executable, "-m", "kws_core.cli", argv[0], "--params", str(root / "params.yaml")]
    return subprocess.Popen(
        [*cmd, "--no-progress", *argv[1:]],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def manifest_project(tmp_path):
    root = project(tmp_path / "p")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40)
    return root


def test_a_busy_output_is_a_one_line_error_when_not_waiting(manifest_project):
    out = manifest_project / "results" / "manifest"
    with output_lock(out, "test"):
        proc = start(manifest_project, "manifest", wait_s="0")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kws manifest: error: manifest: ")
    assert f"pid {os.getpid()}" in lines[0] and "KWS_LOCK_WAIT_S" in lines[0]
    assert not (out / "manifest.parquet").exists()


def test_the_second_writer_waits_then_finds_a_complete_output(manifest_project):
    out = manifest_project / "results" / "manifest"
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with output_lock(out, "test"):
            holding.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    proc = start(manifest_project, "manifest")
    # Release only once the process says it is waiting (however slow its start-up is).
    seen = [proc.stderr.readline() for _ in range(1)]
    while "waiting for" not in seen[-1] and seen[-1] and len(seen) < 50:
        seen.append(proc.stderr.readline())
    assert "manifest: waiting for pid" in seen[-1], seen
    assert proc.poll() is None, "it waits while the lock is held"
    release.set()
    t.join()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(pd.read_parquet(out / "manifest.parquet")) > 0


def test_a_lock_dies_with_its_holder(manifest_project):
    """kill -9 releases the lock (flock): no stale lock blocks the next run."""
    out = manifest_project / "results" / "manifest"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kws_core.infra.locks import output_lock\n"
            "with output_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(KwsError, match="is being written by pid"):
        os.environ["KWS_LOCK_WAIT_S"] = "0"
        try:
            with output_lock(out, "test"):
                pass
        finally:
            del os.environ["KWS_LOCK_WAIT_S"]
    holder.kill()
    holder.wait()
    with output_lock(out, "test"):  # free again at once
        assert lock_path(out).exists()


def test_sweep_puts_back_an_output_a_killed_writer_had_moved_aside(tmp_path):
    target = tmp_path / "model"
    (tmp_path / ".model.abcd1234.old").mkdir()
    (tmp_path / ".model.abcd1234.old" / "export.json").write_text("{}")
    (tmp_path / ".model.efgh5678.tmp").mkdir()
    sweep_dead_writes(target)
    assert (target / "export.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_two_trainings_at_once_share_the_mlflow_store_and_the_train_dir(tmp_path):
    root = project(tmp_path / "p", train={"how_many_training_steps": "30,10"})
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40, learnable=True)
    subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "manifest", "--params", str(root / "params.yaml")],
        cwd=root,
        check=True,
        capture_output=True,
    )
    # Same train_dir: the second waits for the first. Another train_dir: both write the
    # shared SQLite MLflow store at the same time.
    a = start(root, "train")
    b = start(root, "train")
    c = start(root, "train", "--train_dir=results/other", "--reports_dir=results/other_reports")
    for proc in (a, b, c):
        _, err = proc.communicate(timeout=280)
        assert proc.returncode == 0, err[-2000:]
    state = CheckpointManager.read_state(root / "results" / "speech_commands_train")
    assert state.latest_step == 40 and state.best
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'results' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("kws").experiment_id], filter_string=""
    )
    trainings = [r for r in runs if "mlflow.parentRunId" in r.data.tags]  # each under a parent
    assert len(trainings) == 3 and len(runs) == 6
    assert {r.info.status for r in runs} == {"FINISHED"}


DAGSTER_SCRIPT = """
import sys
import dagster as dg
from pipelines.assets.data import partition_manifest, raw_dataset
from pipelines.resources import KwsParams
result = dg.materialize(
    [raw_dataset, partition_manifest],
    resources={"kws": KwsParams(params_path=sys.argv[1])},
    instance=dg.DagsterInstance.ephemeral(),
)
sys.exit(0 if result.success else 1)
"""


def _wait_for_waiting(proc: subprocess.Popen, deadline_s: float = 120) -> list[str]:
    """stderr lines up to the one saying the process waits for a lock."""
    seen: list[str] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if "waiting for pid" in line:
            return seen
    raise AssertionError("never waited for the lock:\n" + "".join(seen[-20:]))


def test_dagster_and_the_dvc_stage_command_wait_for_each_other(manifest_project):
    """A Dagster materialization and `kws manifest` (the command `dvc repro` runs for the
    manifest stage) of the same project, while a third writer holds the manifest: both wait,
    then both finish, and the manifest is whole."""
    out = manifest_project / "results" / "manifest"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KWS_LOCK_WAIT_S": "120"}
    env["PYTHONPATH"] = str(repo)
    with output_lock(out, "test"):
        dagster = subprocess.Popen(
            [sys.executable, "-c", DAGSTER_SCRIPT, str(manifest_project / "params.yaml")],
            cwd=manifest_project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        cli = start(manifest_project, "manifest", wait_s="120")
        _wait_for_waiting(dagster)
        _wait_for_waiting(cli)
        assert dagster.poll() is None and cli.poll() is None
    for proc in (dagster, cli):
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest.label) >= {"yes", "no", "cat"}


def test_a_read_only_place_is_used_without_a_lock(tmp_path, monkeypatch):
    """A data set on a read-only mount, used as it is, must not fail on its lock file."""
    import errno

    real_open = os.open

    def read_only(path, *a, **k):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    with output_lock(tmp_path / "data", "dataset"):
        ran = True
    assert ran and not lock_path(tmp_path / "data").exists()
