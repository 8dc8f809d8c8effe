"""Disk full while writing: a one-line error, the previous outputs intact, no temp files left.

Real full disks where the machine allows it (a small tmpfs; needs root, skipped otherwise), and
a write hook raising ENOSPC everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from kws_core.data.manifest import build_manifest, load_manifest, write_manifest
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import KwsError
from kws_core.training.checkpoints import CheckpointManager, restore
from tests.conftest import build_tiny_dataset
from tests.test_train import params_for

pytestmark = pytest.mark.timeout(180)


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str):
    """A tmpfs of `size` mounted in tmp_path (skips the test where mounting is not allowed)."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()[:80]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` up to `leave` free bytes."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


def no_temps(folder: Path) -> list[str]:
    return [
        p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".ckpt-")
    ]


def test_checkpoint_on_a_full_disk_is_one_error_and_the_last_checkpoint_survives(tmp_path):
    with small_disk(tmp_path, "6m") as disk:
        v = tf.Variable(np.arange(250_000, dtype=np.float32))  # a 1 MB checkpoint
        manager = CheckpointManager(disk / "train", "arch", tf.train.Checkpoint(v=v))
        manager.save(1)
        fill(disk, leave=200_000)
        v.assign(v + 1)
        with pytest.raises(KwsError, match="no space left on the device writing .*ckpt-2"):
            manager.save(2)
        state = CheckpointManager.read_state(disk / "train")
        assert state.latest == "arch.ckpt-1" and state.latest_step == 1
        assert no_temps(disk / "train") == []
        w = tf.Variable(np.zeros(250_000, np.float32))
        restore(tf.train.Checkpoint(v=w), disk / "train" / state.latest)
        np.testing.assert_array_equal(w.numpy(), np.arange(250_000, dtype=np.float32))


def test_feature_cache_on_a_full_disk_fails_cleanly_instead_of_crashing(tmp_path):
    """The cache is a memory map: without the up-front reservation a full disk is SIGBUS."""
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no", "cat"], 40)
    with small_disk(tmp_path, "1m") as disk:
        p = params_for(tmp_path, wanted_words="yes,no,cat", cache_dir=str(disk / "features"))
        manifest = build_manifest(p.data, data, progress=False).manifest
        from kws_core.features.cache import build_feature_cache

        with pytest.raises(KwsError, match="no space left on the device writing"):
            build_feature_cache(p, manifest, data, progress=False)
        assert [x for x in (disk / "features").rglob("*") if x.is_file()] == []


def test_atomic_writes_keep_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(KwsError, match="report.json.*untouched"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_manifest_written_onto_a_full_disk_keeps_the_previous_manifest(tmp_path, monkeypatch):
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no", "cat"], 40)
    p = params_for(tmp_path, wanted_words="yes,no,cat")
    out = tmp_path / "manifest"
    write_manifest(build_manifest(p.data, data, progress=False), out)
    before = load_manifest(out / "manifest.parquet")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    p2 = params_for(tmp_path, wanted_words="yes,no,cat", validation_percentage=30)
    with pytest.raises(KwsError, match="no space left"):
        write_manifest(build_manifest(p2.data, data, progress=False), out)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(load_manifest(out / "manifest.parquet"), before)
    assert no_temps(out) == []
