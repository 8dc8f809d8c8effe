"""kill -9 in the middle of every stage, then run again: it completes, reuses what was complete,
never reads a half-written file, and training resumes to the same final step.

The kill comes from inside (`KWS_CRASH_AT=<point>[:n]`, kws_core/infra/faults.py: SIGKILL at a named
point, no clean-up runs), so each case hits the moment it names every time; one case also kills
training from outside at an arbitrary moment.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml

from kws_core.training.checkpoints import CheckpointManager
from tests.conftest import build_tiny_dataset, with_fast_model

pytestmark = pytest.mark.timeout(300)


def kws(root: Path, *argv: str, crash: str = "", check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KWS_LOCK_WAIT_S": "60"}
    env.pop("KWS_CRASH_AT", None)
    if crash:
        env["KWS_CRASH_AT"] = crash
    cmd = [sys.executable, "-m", "kws_core.cli", argv[0], "--params", str(root / "params.yaml")]
    out = subprocess.run(
        [*cmd, "--no-progress", *argv[1:]], cwd=root, env=env, capture_output=True, text=True
    )
    if crash:
        assert out.returncode == -signal.SIGKILL, (out.returncode, out.stderr[-2000:])
    elif check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def project(root: Path, **sections) -> Path:
    body = {
        "data": {"data_url": "", "data_dir": "data", "wanted_words": "yes,no,cat"},
        "train": {
            "how_many_training_steps": "8,4",
            "learning_rate": "0.003,0.001",
            "batch_size": 16,
            "eval_step_interval": 4,
            "save_step_interval": 2,
        },
        "export": {"representative_examples": 20},
    }
    for section, values in sections.items():
        body.setdefault(section, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(with_fast_model(body)))
    return root


def tree_digest(folder: Path) -> dict[str, str]:
    """Every output file's hash (a dead writer's hidden temp files are not outputs)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".tmp")
    }


def leftovers(parent: Path) -> list[str]:
    """A killed writer's temp files and folders in `parent` and one level down."""
    found = [p for p in parent.iterdir() if p.name.endswith((".tmp", ".old"))]
    found += [p for d in parent.iterdir() if d.is_dir() for p in d.glob(".*.tmp")]
    return sorted(str(p.relative_to(parent)) for p in found)


# -- dataset generation -------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_synthesis_killed_midway_leaves_no_data_set_then_completes_identically(tmp_path, workers):
    synth = {"speakers": 3, "synthetic_words": "yes no cat", "noise_duration_s": 2}
    synth |= {"synthetic_workers": workers, "piper_speakers": 0, "heldout_dialects": ""}
    root = project(tmp_path / "p", data={"data_url": "synthetic", "synthetic": synth})
    kws(root, "dataset", crash="synth.after_speaker:2")
    data = root / "data"
    assert not data.exists(), "a half-generated data set must not be visible"
    assert leftovers(root), "the killed writer's temp folder is what it leaves"
    kws(root, "dataset")
    assert leftovers(root) == [], "the rerun sweeps the dead writer's temp folder"
    clean = project(tmp_path / "clean", data={"data_url": "synthetic", "synthetic": synth})
    kws(clean, "dataset")
    want, got = tree_digest(clean / "data"), tree_digest(data)
    # .kws_source.json records where and when the data set was made: the clips must match.
    assert {k: v for k, v in got.items() if k != ".kws_source.json"} == {
        k: v for k, v in want.items() if k != ".kws_source.json"
    }


def test_synth_dataset_verb_sweeps_a_killed_runs_temp_folder(tmp_path):
    """`kws synth-dataset` (no dataset stage lock around it) used to leave it forever."""
    synth = {"speakers": 2, "synthetic_words": "yes no cat", "noise_duration_s": 1}
    synth |= {"synthetic_workers": 1, "piper_speakers": 0, "heldout_dialects": ""}
    root = project(tmp_path / "p", data={"data_url": "synthetic", "synthetic": synth})
    kws(root, "synth-dataset", "--output_dir=out", crash="synth.after_speaker:1")
    assert leftovers(root) and not (root / "out").exists()
    kws(root, "synth-dataset", "--output_dir=out")
    assert leftovers(root) == [] and (root / "out" / "yes").is_dir()


# -- download and extraction --------------------------------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        body = self.server.body
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            self.server.ranges.append(start)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def archive_server(tmp_path):
    words = build_tiny_dataset(tmp_path / "src", ["yes", "no", "cat"], 40)
    # Incompressible padding so the download takes many 64 KB chunks.
    (words / "padding.bin").write_bytes(np.random.default_rng(0).bytes(1_500_000))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(words, arcname=".")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.body, server.ranges = buf.getvalue(), []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_port}/speech.tar.gz"
    server.shutdown()


def test_download_killed_midway_resumes_where_it_stopped(archive_server, tmp_path):
    server, url = archive_server
    root = project(tmp_path / "p", data={"data_url": url})
    kws(root, "dataset", crash="download.after_chunk:5")
    assert not (root / "data").exists()
    part = [p for p in root.rglob("*.part")]
    assert len(part) == 1 and part[0].stat().st_size >= 5 * 65536
    kws(root, "dataset")
    assert server.ranges and server.ranges[0] >= 5 * 65536, "the rerun resumed with a Range"
    assert (root / "data" / "yes").is_dir() and not list(root.rglob("*.part"))
    got = hashlib.sha256(next(root.rglob("*speech.tar.gz")).read_bytes()).hexdigest()
    assert got == hashlib.sha256(server.body).hexdigest()


def test_extraction_killed_before_it_is_complete_leaves_no_data_dir(archive_server, tmp_path):
    _, url = archive_server
    root = project(tmp_path / "p", data={"data_url": url})
    # The archive lands complete (first atomic rename), extraction dies before its rename.
    kws(root, "dataset", crash="atomic.before_rename:2")
    assert not (root / "data").exists()
    kws(root, "dataset")
    assert len(list((root / "data" / "yes").glob("*.wav"))) == 40
    assert not leftovers(root)


# -- manifest -----------------------------------------------------------------------------------
def test_manifest_killed_while_writing_keeps_the_previous_one(tmp_path):
    root = project(tmp_path / "p")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40)
    kws(root, "manifest")
    manifest = root / "results" / "manifest" / "manifest.parquet"
    before = tree_digest(manifest.parent)
    share = (pd.read_parquet(manifest).partition == "validation").mean()
    kws(root, "manifest", "--validation_percentage=30", crash="atomic.before_rename")
    assert tree_digest(manifest.parent) == before, "the old manifest is intact and complete"
    assert leftovers(manifest.parent.parent), "the killed write left its temp file"
    kws(root, "manifest", "--validation_percentage=30")
    after = pd.read_parquet(manifest)
    assert (after.partition == "validation").mean() > share + 0.03
    assert not leftovers(manifest.parent.parent)


# -- training -----------------------------------------------------------------------------------
def _final_weights(train_dir: Path) -> dict[str, np.ndarray]:
    state = CheckpointManager.read_state(train_dir)
    reader = tf.train.load_checkpoint(str(train_dir / state.latest))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith("model/")]
    return {n: reader.get_tensor(n) for n in names}


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """An uninterrupted run to compare against (and the data set the cases share)."""
    root = project(tmp_path_factory.mktemp("clean") / "p")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40, learnable=True)
    kws(root, "manifest")
    kws(root, "train", "--no-mlflow")
    return root


@pytest.mark.parametrize(
    "crash",
    [
        "train.after_step:5",  # between checkpoint writes (every 2 steps)
        "checkpoint.mid_write:3",  # a new checkpoint's data files written, its index not
    ],
)
def test_training_killed_resumes_from_the_last_good_checkpoint(trained_once, tmp_path, crash):
    root = project(tmp_path / "p")
    os.symlink(trained_once / "data", root / "data")
    kws(root, "manifest")
    killed = kws(root, "train", "--no-mlflow", crash=crash)
    train_dir = root / "results" / "speech_commands_train"
    state = CheckpointManager.read_state(train_dir)
    assert 0 < state.latest_step < 12, killed.stdout[-500:]
    resumed = kws(root, "train", "--no-mlflow")
    assert "Resuming an interrupted run" in resumed.stdout
    final = CheckpointManager.read_state(train_dir)
    assert final.latest_step == 12 and (train_dir / (final.best + ".index")).exists()
    assert not list(train_dir.glob("*.next*")) and not list(train_dir.glob(".ckpt-*"))
    want = _final_weights(trained_once / "results" / "speech_commands_train")
    got = _final_weights(train_dir)
    assert want.keys() == got.keys()
    for name in want:  # the resumed run continues exactly where the killed one was
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # Done: the next run with the same params is a fresh one, not another resume.
    assert not (train_dir / "in_progress.json").exists()


def test_training_killed_from_outside_at_any_moment_resumes(trained_once, tmp_path):
    root = project(tmp_path / "p", train={"how_many_training_steps": "200,40"})
    os.symlink(trained_once / "data", root / "data")
    kws(root, "manifest")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "kws_core.cli", "train", "--params", str(root / "params.yaml")]
    proc = subprocess.Popen(
        [*cmd, "--no-progress", "--no-mlflow"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:  # kill once training is well under way
        if line.startswith("Step #30"):
            break
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    train_dir = root / "results" / "speech_commands_train"
    assert 0 < CheckpointManager.read_state(train_dir).latest_step < 240
    kws(root, "train", "--no-mlflow")
    assert CheckpointManager.read_state(train_dir).latest_step == 240


SWAP_SCRIPT = """
import os, sys
import tensorflow as tf
from kws_core.training.checkpoints import CheckpointManager
v = tf.Variable(1.0)
m = CheckpointManager(sys.argv[1], "arch", tf.train.Checkpoint(v=v))
m.save_best(1, 0.5)
v.assign(2.0)
os.environ["KWS_CRASH_AT"] = "checkpoint.mid_write"  # the replacement of arch.ckpt-best
m.save_best(2, 0.7)
"""


def test_best_checkpoint_replacement_killed_midway_is_finished_on_next_open(tmp_path):
    out = subprocess.run([sys.executable, "-c", SWAP_SCRIPT, str(tmp_path)], capture_output=True)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert not (tmp_path / "arch.ckpt-best.index").exists(), "old index taken down first"
    assert (tmp_path / "arch.ckpt-best.next.json").exists()
    assert CheckpointManager.read_state(tmp_path).best_step == 1  # not yet updated
    v = tf.Variable(0.0)
    manager = CheckpointManager(tmp_path, "arch", tf.train.Checkpoint(v=v))  # recovers
    assert manager.state.best_step == 2 and manager.state.best_val_accuracy == 0.7
    tf.train.Checkpoint(v=v).read(str(tmp_path / "arch.ckpt-best")).assert_consumed()
    assert float(v.numpy()) == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "arch.ckpt-best.data-00000-of-00001",
        "arch.ckpt-best.index",
        "checkpoint_state.json",
    ]


# -- export -------------------------------------------------------------------------------------
def test_export_killed_before_its_rename_keeps_the_previous_export(trained_once, tmp_path):
    root = trained_once
    kws(root, "freeze")
    export = root / "results" / "frozen" / "model"
    before = tree_digest(export)
    kws(root, "freeze", "--quantize=false", crash="atomic.before_rename")
    assert tree_digest(export) == before
    assert leftovers(export.parent)
    kws(root, "freeze", "--quantize=false")
    assert not (export / "model_int8.tflite").exists() and not leftovers(export.parent)
