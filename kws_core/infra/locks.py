"""One writer per output: an exclusive lock beside each stage's output folder.

Every pipeline step (CLI, `dvc repro`, Dagster) takes the lock of the output it writes, so two
runs of the same stage never interleave their writes: the second waits for the first (printing
who holds the lock) and then finds its output complete, or, after `KWS_LOCK_WAIT_S` seconds
(default 1800; 0 = do not wait), stops with a one-line error. Locks are `flock`s on
`.<output name>.lock` files: the kernel releases them when the holder exits, even on kill -9,
so a crashed run never leaves a stale lock.

Holding the lock also means any temp output beside or in the target is a dead writer's: they
are swept, an output a killed writer had moved aside (`atomic_dir`'s `.old`) but not yet
replaced is put back, and a commit of several outputs it had journaled is completed
(kws_core/infra/commit.py). Readers never tidy up: `await_commit` and `writer_absent` let them
wait for, or briefly become, the writer instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kws_core.infra.commit import finish_commits, pending_commit
from kws_core.infra.errors import KwsError

WAIT_ENV = "KWS_LOCK_WAIT_S"
DEFAULT_WAIT_S = 1800.0


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another kws process"


def sweep_dead_writes(target: Path) -> list[Path]:
    """Clean up after writers of `target` that were killed; call only while holding its lock."""
    parent, name = target.parent, target.name
    if target.is_dir():
        finish_commits(target)  # before the sweep: a journaled commit's temp files are outputs
    olds = sorted(parent.glob(f".{name}.????????.old"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        os.replace(olds.pop(), target)  # killed between moving the old output aside and renaming
    stale = [*olds, *parent.glob(f".{name}.????????.tmp"), *parent.glob(f".{name}.????????*.tmp")]
    if target.is_dir():
        stale += target.glob(".*.tmp")
    removed = []
    for p in dict.fromkeys(stale):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def await_commit(target: str | os.PathLike[str], reader: str) -> None:
    """Before reading a folder of several outputs: if a commit is pending there (a writer is
    renaming right now, or was killed while renaming), take the lock; the live writer finishes
    first, or the sweep completes the dead one's commit. Readers never see a mix."""
    if pending_commit(Path(target)):
        with output_lock(target, reader):
            pass


@contextlib.contextmanager
def writer_absent(target: str | os.PathLike[str]) -> Iterator[bool]:
    """For a reader that would tidy up after dead writers: yields True, holding the write lock
    of `target` for the block, when no writer holds it now, else False (a writer is at work:
    read without touching its temp state). Never waits."""
    target = Path(target)
    try:
        fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # nowhere to lock (read-only place): nothing can be writing there
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _wait_s() -> float:
    raw = os.environ.get(WAIT_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        raise KwsError(f"{WAIT_ENV}={raw!r} is not a number of seconds") from None


@contextlib.contextmanager
def output_lock(target: str | os.PathLike[str], stage: str) -> Iterator[None]:
    """Hold the write lock of `target` (a stage's output) for the duration of the block."""
    target = Path(target)
    path = lock_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # A read-only place (a mounted data set used as it is): nothing can be written there,
        # so there is no write to protect.
        yield
        return
    try:
        deadline = time.monotonic() + _wait_s()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise KwsError(
                        f"{stage}: {target} is being written by {holder}; wait for it to finish "
                        f"(or set {WAIT_ENV} to wait longer) and run again"
                    ) from None
                if not told:
                    print(f"{stage}: waiting for {holder} to finish {target}", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        info = f"pid {os.getpid()} ({' '.join(sys.argv)[:200]}, since {time.strftime('%H:%M:%S')})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        sweep_dead_writes(target)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
