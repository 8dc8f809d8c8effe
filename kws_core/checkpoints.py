"""Training checkpoints `<arch>.ckpt-<step>`, written atomically, plus the best-by-validation one.

TensorFlow writes a checkpoint as `<prefix>.index` + `<prefix>.data-*`. We write them under a
temp prefix and rename the data files first and the index last: a reader that finds the index
finds the whole checkpoint. `checkpoint_state.json` (also atomic) records latest and best.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tensorflow as tf

from kws_core.atomic import atomic_write_text
from kws_core.errors import KwsError

STATE = "checkpoint_state.json"


@dataclass
class CheckpointState:
    latest: str = ""
    latest_step: int = 0
    best: str = ""
    best_step: int = 0
    best_val_accuracy: float = -1.0
    kept: list[str] = field(default_factory=list)


def _files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + ".*"))


def checkpoint_exists(prefix: str | Path) -> bool:
    return Path(str(prefix) + ".index").exists()


class CheckpointManager:
    def __init__(self, train_dir: Path, arch: str, ckpt: tf.train.Checkpoint, keep: int = 5):
        self.dir = Path(train_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.arch = arch
        self.ckpt = ckpt
        self.keep = keep
        self.state = self.read_state(self.dir)

    @staticmethod
    def read_state(train_dir: Path) -> CheckpointState:
        p = Path(train_dir) / STATE
        if not p.exists():
            return CheckpointState()
        try:
            return CheckpointState(**json.loads(p.read_text()))
        except (ValueError, TypeError):
            return CheckpointState()

    def reset(self) -> None:
        self.state = CheckpointState()
        self._write_state()

    def _write_state(self) -> None:
        atomic_write_text(self.dir / STATE, json.dumps(asdict(self.state), indent=2))

    def _write(self, final: Path) -> Path:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=self.dir))
        try:
            self.ckpt.write(str(tmp_dir / "ckpt"))
            written = _files(tmp_dir / "ckpt")
            index = [f for f in written if f.suffix == ".index"]
            for f in [f for f in written if f.suffix != ".index"] + index:
                os.replace(f, self.dir / (final.name + f.name[len("ckpt") :]))
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return final

    def save(self, step: int) -> Path:
        prefix = self._write(self.dir / f"{self.arch}.ckpt-{step}")
        self.state.latest, self.state.latest_step = prefix.name, step
        kept = [k for k in self.state.kept if k != prefix.name] + [prefix.name]
        for old in kept[: -self.keep] if self.keep > 0 else []:
            if old != self.state.best:
                for f in _files(self.dir / old):
                    f.unlink(missing_ok=True)
        self.state.kept = kept[-self.keep :] if self.keep > 0 else kept
        self._write_state()
        return prefix

    def save_best(self, step: int, val_accuracy: float) -> Path | None:
        if val_accuracy <= self.state.best_val_accuracy:
            return None
        prefix = self._write(self.dir / f"{self.arch}.ckpt-best")
        self.state.best, self.state.best_step = prefix.name, step
        self.state.best_val_accuracy = val_accuracy
        self._write_state()
        return prefix


def resolve_checkpoint(value: str, train_dir: Path) -> Path:
    """`latest`, `best`, or a checkpoint prefix (with or without `.index`)."""
    if value in ("latest", "best"):
        state = CheckpointManager.read_state(train_dir)
        name = state.latest if value == "latest" else state.best
        if not name:
            raise KwsError(f"start_checkpoint={value}: no checkpoint recorded in {train_dir}")
        prefix = Path(train_dir) / name
    else:
        prefix = Path(value.removesuffix(".index"))
    if not checkpoint_exists(prefix):
        near = sorted(p.name.removesuffix(".index") for p in prefix.parent.glob("*.index"))
        hint = f"; available: {', '.join(near[-5:])}" if near else ""
        raise KwsError(f"start_checkpoint {prefix}: no such checkpoint{hint}")
    return prefix


def restore(ckpt: tf.train.Checkpoint, prefix: Path) -> None:
    try:
        ckpt.read(str(prefix)).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise KwsError(
            f"start_checkpoint {prefix} does not fit this model (was it trained with another "
            f"model_architecture or wanted_words?): {first}"
        ) from None
