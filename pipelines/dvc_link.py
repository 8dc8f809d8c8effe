"""The link between Dagster and DVC: assets `dvc commit` the stage they just produced.

Design: every asset calls the same `kws_core.steps` function as the stage's `kws` command, then
records its outputs in `dvc.lock` with `dvc commit --force <stage>`. The repo is then exactly as
`dvc repro` would leave it (`dvc status` clean), and the asset's Dagster data version is the DVC
content hash of the stage's outputs, so any version can be pushed (`dvc push`) and restored
(`dvc checkout`). Nothing is committed when the params file is not in a DVC project, or when run
config overrides params.yaml (the stages' paths and params come from params.yaml itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

LOCK_WAIT_S = 600


@dataclass
class DvcRecord:
    stage: str
    data_version: str | None  # DVC md5s of the stage outputs, hashed together
    outs: dict[str, str]  # path -> md5 from dvc.lock
    note: str = ""


def dvc_root(params_path: Path) -> Path | None:
    root = params_path.resolve().parent
    if (root / "dvc.yaml").exists() and (root / ".dvc").is_dir():
        return root
    return None


def commit_stage(params_path: Path, stage: str, overridden: bool = False) -> DvcRecord:
    """`dvc commit --force <stage>` and the resulting content hash; a no-op outside DVC."""
    root = dvc_root(params_path)
    if root is None:
        return DvcRecord(stage, None, {}, "not a DVC project: nothing committed")
    if overridden:
        return DvcRecord(stage, None, {}, "run config overrides params.yaml: not committed")
    from dvc.lock import LockError

    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            with dvc_repo(root) as repo:
                repo.commit(stage, force=True)
            break
        except LockError:
            # Another asset (multiprocess executor) or a `dvc repro` holds the repo lock: wait.
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    return read_lock(root, stage)


@contextlib.contextmanager
def dvc_repo(root: Path):
    """`dvc.repo.Repo(root)` with DVC's process-wide side effects undone afterwards.

    DVC resolves stage names against the working directory (as its CLI does), and on every Repo
    it re-runs its logger setup: `colorama.init()` wraps sys.stdout/sys.stderr and logging
    handlers bound to the *current* streams pile up on the `dvc` and root loggers. In a
    long-lived process (the Dagster code server, tests) those outlive a redirected stderr and
    later write to a closed file, so streams, colorama's saved originals and handlers are
    restored.
    """
    import colorama.initialise as colorama_state
    from dvc.repo import Repo

    names = ("", "dvc")
    handlers = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    streams = (sys.stdout, sys.stderr)
    colorama_saved = (colorama_state.orig_stdout, colorama_state.orig_stderr)
    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:
            yield repo
    finally:
        sys.stdout, sys.stderr = streams
        colorama_state.orig_stdout, colorama_state.orig_stderr = colorama_saved
        for name, (saved, level) in handlers.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = saved
            logger.setLevel(level)


def read_lock(root: Path, stage: str) -> DvcRecord:
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    entry = lock.get("stages", {}).get(stage, {})
    outs = {o["path"]: o.get("md5", "") for o in entry.get("outs", [])}
    if not outs:
        return DvcRecord(stage, None, {}, f"dvc.lock has no outputs for stage {stage}")
    digest = hashlib.sha256("\n".join(f"{p}:{m}" for p, m in sorted(outs.items())).encode())
    return DvcRecord(stage, digest.hexdigest()[:16], outs)
