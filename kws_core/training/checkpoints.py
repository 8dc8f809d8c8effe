"""Training checkpoints `<arch>.ckpt-<step>`, written atomically, plus the best-by-validation one.

TensorFlow writes a checkpoint as `<prefix>.index` + `<prefix>.data-*`. We write them under a
temp prefix and rename the data files first and the index last: a reader that finds the index
finds the whole checkpoint. `checkpoint_state.json` (also atomic) records latest and best.

A checkpoint that replaces one of the same name (`<arch>.ckpt-best`, or a step saved again after
a resume) is first completed as `<prefix>.next` with a journal `<prefix>.next.json`; only then
is the old one taken down and the new one moved in. A run killed during that swap leaves the
journal, and the next `CheckpointManager` (or `resolve_checkpoint`) finishes the swap and the
state update the journal records: no kill -9 leaves a half-replaced checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tensorflow as tf

from kws_core.infra.atomic import DISK_FULL, atomic_write_text, disk_full
from kws_core.infra.errors import KwsError
from kws_core.infra.faults import crash_point
from kws_core.infra.locks import writer_absent

STATE = "checkpoint_state.json"
NEXT = ".next"  # a complete checkpoint waiting to replace the one of the same name


@dataclass
class CheckpointState:
    latest: str = ""
    latest_step: int = 0
    best: str = ""
    best_step: int = 0
    best_val_accuracy: float = -1.0
    kept: list[str] = field(default_factory=list)


def _files(prefix: Path) -> list[Path]:
    """The checkpoint's own files: `<prefix>.index` and `<prefix>.data-*` (not `.next` ones)."""
    return sorted(
        p
        for p in prefix.parent.glob(prefix.name + ".*")
        if p.name == prefix.name + ".index" or p.name.startswith(prefix.name + ".data-")
    )


def _move(src: Path, dest: Path) -> None:
    """Rename checkpoint `src`'s files onto prefix `dest`: data files first, the index last."""
    files = _files(src)
    for f in [f for f in files if f.suffix != ".index"] + [
        f for f in files if f.suffix == ".index"
    ]:
        os.replace(f, dest.parent / (dest.name + f.name[len(src.name) :]))


def recover(train_dir: Path) -> list[str]:
    """Finish every checkpoint swap a killed run left half done; returns the prefixes fixed."""
    fixed = []
    for journal in sorted(Path(train_dir).glob(f"*{NEXT}.json")):
        staged = journal.with_suffix("")  # <prefix>.next
        final = staged.with_name(staged.name[: -len(NEXT)])
        entry = json.loads(journal.read_text())
        if checkpoint_exists(staged):  # complete new checkpoint: take the old one down first
            Path(str(final) + ".index").unlink(missing_ok=True)
            _move(staged, final)
        elif _files(staged):  # the index already moved: move the data files that are left
            _move(staged, final)
        if entry.get("state"):
            state = CheckpointManager.read_state(train_dir)
            for k, v in entry["state"].items():
                setattr(state, k, v)
            atomic_write_text(Path(train_dir) / STATE, json.dumps(asdict(state), indent=2))
        journal.unlink()
        fixed.append(final.name)
    for tmp in Path(train_dir).glob(".ckpt-*"):  # temp folders of killed writes
        shutil.rmtree(tmp, ignore_errors=True)
    return fixed


def checkpoint_exists(prefix: str | Path) -> bool:
    return Path(str(prefix) + ".index").exists()


class CheckpointManager:
    def __init__(self, train_dir: Path, arch: str, ckpt: tf.train.Checkpoint, keep: int = 5):
        self.dir = Path(train_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.arch = arch
        self.ckpt = ckpt
        self.keep = keep
        recover(self.dir)
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

    def _write(self, final: Path, state: dict | None = None) -> Path:
        """Write the checkpoint as `final`; `state` fields are set once it is in place."""
        tmp_dir = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=self.dir))
        try:
            try:
                self.ckpt.write(str(tmp_dir / "ckpt"))
            except (tf.errors.OpError, OSError) as e:
                if "No space left" in str(e) or getattr(e, "errno", None) in DISK_FULL:
                    raise disk_full(final, "checkpoint") from None
                raise
            if not checkpoint_exists(final):
                data = [f for f in _files(tmp_dir / "ckpt") if f.suffix != ".index"]
                for f in data:
                    os.replace(f, self.dir / (final.name + f.name[len("ckpt") :]))
                crash_point("checkpoint.mid_write")
                _move(tmp_dir / "ckpt", final)
            else:
                staged = final.with_name(final.name + NEXT)
                _move(tmp_dir / "ckpt", staged)
                journal = staged.with_name(staged.name + ".json")
                atomic_write_text(journal, json.dumps({"state": state or {}}))
                Path(str(final) + ".index").unlink()
                crash_point("checkpoint.mid_write")
                _move(staged, final)
                journal.unlink()
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
        best = {"best": f"{self.arch}.ckpt-best", "best_step": step}
        best["best_val_accuracy"] = val_accuracy
        prefix = self._write(self.dir / best["best"], best)
        self.state.best, self.state.best_step = prefix.name, step
        self.state.best_val_accuracy = val_accuracy
        self._write_state()
        return prefix


def resolve_checkpoint(value: str, train_dir: Path) -> Path:
    """`latest`, `best`, or a checkpoint prefix (with or without `.index`).

    A reader never tidies up under a running trainer: only when no writer holds train_dir's
    lock does it finish a killed run's swap (as the writer would); otherwise it reads the
    complete checkpoint where it is, the staged `.next` one during a swap included.
    """
    if value in ("latest", "best"):
        with writer_absent(train_dir) as alone:
            if alone:
                recover(train_dir)
            state = CheckpointManager.read_state(train_dir)
        name = state.latest if value == "latest" else state.best
        if not name:
            raise KwsError(f"start_checkpoint={value}: no checkpoint recorded in {train_dir}")
        prefix = Path(train_dir) / name
        staged = prefix.with_name(prefix.name + NEXT)
        if not alone and not checkpoint_exists(prefix) and checkpoint_exists(staged):
            prefix = staged  # the trainer is swapping it in right now
    else:
        prefix = Path(value.removesuffix(".index"))
    if not checkpoint_exists(prefix):
        near = sorted(p.name.removesuffix(".index") for p in prefix.parent.glob("*.index"))
        hint = f"; available: {', '.join(near[-5:])}" if near else ""
        raise KwsError(f"start_checkpoint {prefix}: no such checkpoint{hint}")
    return prefix


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def verify_checkpoint(prefix: Path) -> None:
    """Read every tensor of a checkpoint (TensorFlow checks each one's size and CRC32C): a
    truncated or corrupted file is one line here, not an IndexError inside a restore."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (IndexError, ValueError, OSError, tf.errors.OpError) as e:
        raise KwsError(
            f"checkpoint damaged: {prefix} cannot be read ({_first_line(e)}); choose another "
            "(latest, best or a prefix in checkpoint_state.json's kept list) or re-run kws train"
        ) from None


def restore(ckpt: tf.train.Checkpoint, prefix: Path) -> None:
    verify_checkpoint(prefix)
    try:
        ckpt.read(str(prefix)).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise KwsError(
            f"start_checkpoint {prefix} does not fit this model (was it trained with another "
            f"model_architecture or wanted_words?): {_first_line(e)[:200]}"
        ) from None


def restore_checkpoint(ckpt: tf.train.Checkpoint, value: str, train_dir: Path) -> Path:
    """Resolve `value` and restore it into `ckpt`; returns the prefix read. A running trainer
    may replace `best` or drop an old `latest` while we read: resolve again and retry then."""
    for attempt in range(5):
        prefix = resolve_checkpoint(value, train_dir)
        try:
            restore(ckpt, prefix)
            return prefix
        except KwsError:
            with writer_absent(train_dir) as alone:
                if alone or value not in ("latest", "best") or attempt == 4:
                    raise
            time.sleep(0.2)
    raise AssertionError("unreachable")
