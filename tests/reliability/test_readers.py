"""Readers respect writers: reading train_dir (`best`/`latest` for kws freeze, kws evaluate)
never tidies up under a running trainer; only when no writer holds the lock does a reader
finish what a killed writer left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf

from kws_core.infra.locks import output_lock
from kws_core.training.checkpoints import (
    NEXT,
    STATE,
    CheckpointManager,
    resolve_checkpoint,
    restore_checkpoint,
)
from tests.conftest import build_tiny_dataset
from tests.reliability.test_concurrency import start
from tests.reliability.test_kill import project

pytestmark = pytest.mark.timeout(300)


def _train_dir_with_a_checkpoint(train_dir: Path) -> CheckpointManager:
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    manager = CheckpointManager(train_dir, "m", ckpt)
    manager.save(1)
    manager.save_best(1, 0.5)
    return manager


class _Writer:
    """Holds train_dir's write lock from another thread (its own lock file descriptor), as a
    running `kws train` would."""

    def __init__(self, target: Path) -> None:
        self.target, self.held, self.done = target, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with output_lock(self.target, "train"):
            self.held.set()
            self.done.wait(30)

    def __enter__(self) -> _Writer:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(10)


def test_a_reader_leaves_a_running_trainers_temp_checkpoint_alone(tmp_path):
    train_dir = tmp_path / "train"
    _train_dir_with_a_checkpoint(train_dir)
    with _Writer(train_dir):
        in_flight = train_dir / ".ckpt-abc123"  # the trainer's checkpoint being written
        in_flight.mkdir()
        (in_flight / "ckpt.index").write_bytes(b"partial")
        for value in ("latest", "best"):
            assert resolve_checkpoint(value, train_dir).name.startswith("m.ckpt-")
        assert in_flight.is_dir(), "a reader deleted the running trainer's temp checkpoint"
    # The writer is gone: the temp folder is a dead writer's, and the next reader tidies it.
    resolve_checkpoint("latest", train_dir)
    assert not in_flight.exists()


def test_a_reader_reads_the_staged_checkpoint_during_a_swap_and_finishes_a_killed_one(tmp_path):
    train_dir = tmp_path / "train"
    _train_dir_with_a_checkpoint(train_dir)
    best = train_dir / "m.ckpt-best"
    staged = best.with_name(best.name + NEXT)
    # A swap in flight: the new best is complete as `.next`, the old one is taken down.
    for f in train_dir.glob("m.ckpt-best.*"):
        f.rename(train_dir / (staged.name + f.name[len(best.name) :]))
    (train_dir / (staged.name + ".json")).write_text(json.dumps({"state": {"best_step": 7}}))
    with _Writer(train_dir):
        assert resolve_checkpoint("best", train_dir) == staged
        assert (train_dir / (staged.name + ".json")).exists()  # the writer's to finish
        restore_checkpoint(tf.train.Checkpoint(v=tf.Variable([0.0, 0.0])), "best", train_dir)
    # No writer any more: a reader finishes the killed swap as the writer would have.
    assert resolve_checkpoint("best", train_dir) == best
    assert not (train_dir / (staged.name + ".json")).exists()
    assert json.loads((train_dir / STATE).read_text())["best_step"] == 7


def test_freeze_and_evaluate_during_training_do_not_kill_the_trainer(tmp_path):
    """The reported bug: `best`/`latest` readers deleted the trainer's in-flight checkpoint
    temp folder, so the training died with a traceback and lost its resume marker."""
    root = project(
        tmp_path / "p",
        train={
            "how_many_training_steps": "60,20",
            "save_step_interval": 1,
            "eval_step_interval": 40,
        },
    )
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 30)
    subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "manifest", "--params", str(root / "params.yaml")],
        cwd=root,
        check=True,
        capture_output=True,
    )
    train_dir = root / "results" / "speech_commands_train"
    trainer = start(root, "train")
    reads = 0
    while trainer.poll() is None:
        if (train_dir / STATE).exists():
            try:
                resolve_checkpoint("latest", train_dir)
                reads += 1
            except Exception as e:  # noqa: BLE001 - "no checkpoint yet" is fine; crashes are not
                assert "no checkpoint recorded" in str(e) or "no such checkpoint" in str(e), e
        time.sleep(0.002)
    _, err = trainer.communicate()
    assert trainer.returncode == 0, err[-2000:]
    assert reads > 50
    assert CheckpointManager.read_state(train_dir).latest_step == 80
    # kws freeze of `latest` right after: the export reads a complete checkpoint.
    freeze = start(root, "freeze", "--start_checkpoint=latest")
    _, err = freeze.communicate(timeout=200)
    assert freeze.returncode == 0, err[-2000:]
