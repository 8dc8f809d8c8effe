"""The machine failing a writer (a full disk under the SavedModel, TensorBoard or MLflow writer,
a read-only output folder, a permission error) is one line naming the path, and nothing is
left half-written. Real full and read-only file systems are small tmpfs mounts (root only:
skipped elsewhere).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from kws_core.infra.errors import os_error_line
from tests.conftest import build_tiny_dataset
from tests.reliability.test_disk_full import fill, small_disk
from tests.reliability.test_kill import project

pytestmark = pytest.mark.timeout(300)


def kws(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "kws_core.cli", argv[0], "--params", str(root / "params.yaml")]
    return subprocess.run(
        [*cmd, "--no-progress", *argv[1:]], cwd=root, env=env, capture_output=True, text=True
    )


def one_line(out: subprocess.CompletedProcess, verb: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"kws {verb}: error: "), lines[-5:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = project(tmp_path_factory.mktemp("oserr") / "p")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 20)
    assert kws(root, "train", "--no-mlflow").returncode == 0
    return root


@pytest.fixture
def full_disk(tmp_path):
    with small_disk(tmp_path, "4m") as disk:
        yield disk


def test_freeze_onto_a_full_disk(trained, full_disk):
    fill(full_disk, 20_000)
    line = one_line(kws(trained, "freeze", f"--output_file={full_disk / 'export'}"), "freeze")
    assert f"no space left on the device writing {full_disk / 'export'}" in line
    assert "free some space" in line
    assert not [p for p in full_disk.iterdir() if p.name not in ("filler", ".export.lock")]


def test_tensorboard_onto_a_full_disk(trained, full_disk):
    logs = full_disk / "logs"
    logs.mkdir()
    (logs / ".kws-output").write_text("{}")  # a folder kws made earlier
    fill(full_disk, 0)
    own = ("--train_dir=results/t2", "--reports_dir=results/r2")  # keep the trained model
    line = one_line(kws(trained, "train", "--no-mlflow", *own, f"--summaries_dir={logs}"), "train")
    assert f"no space left on the device writing {logs}" in line


def test_mlflow_store_on_a_full_disk(trained, full_disk):
    fill(full_disk, 0)
    uri = f"--mlflow_tracking_uri=sqlite:///{full_disk / 'mlflow.db'}"
    own = ("--train_dir=results/t3", "--reports_dir=results/r3")  # keep the trained model
    line = one_line(kws(trained, "train", uri, *own), "train")
    assert "no space left on the device" in line and "mlflow" in line.lower()


@pytest.fixture
def read_only(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)])
    if out.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize(
    "verb, flag",
    [
        ("manifest", "--manifest_dir"),
        ("train", "--train_dir"),
        ("train", "--summaries_dir"),
        ("train", "--reports_dir"),
        ("freeze", "--output_file"),
        ("stream-eval", "--stream_dir"),
    ],
)
def test_a_read_only_output_folder(trained, read_only, verb, flag):
    target = read_only / "out"
    no_mlflow = ["--no-mlflow"] if verb in ("train", "freeze", "stream-eval") else []
    line = one_line(kws(trained, verb, *no_mlflow, f"{flag}={target}"), verb)
    assert f"cannot write {target}" in line and "read-only" in line


# ----------------------------------------------------------- the translation on its own
def test_os_error_line_reads_oserror_tensorflow_and_sqlite_wording():
    e = OSError(errno.ENOSPC, "No space left on device", "/d/out.json")
    assert os_error_line(e).startswith("no space left on the device writing /d/out.json;")
    e = PermissionError(errno.EACCES, "Permission denied", "/d/x")
    assert os_error_line(e).startswith("cannot write /d/x: permission denied")
    tf_e = tf.errors.ResourceExhaustedError(
        None,
        None,
        "{{function_node __wrapped__SaveV2_device_/job:localhost/replica:0}} "
        "/m/.export.3a38ajsy.tmp/saved_model/variables/part-0; No space left on device",
    )
    assert "writing /m/export/saved_model/variables/part-0;" in os_error_line(tf_e)
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full") from inner
    except RuntimeError as wrapped:
        assert "the MLflow store" in os_error_line(wrapped)
    assert os_error_line(KeyError("bug")) is None
    assert os_error_line(OSError(errno.ENOENT, "No such file")) is None
