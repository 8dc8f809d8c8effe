"""Several outputs of one stage replaced as a unit.

`atomic_outputs(folder, stage)` hands out temp paths for the stage's outputs. When the block
succeeds it writes a journal (`.commit-<stage>.json` in `folder`, itself atomic) listing every
temp -> final rename, then renames, then deletes the journal. A kill before the journal leaves
only temp files (swept by the next writer); a kill after it leaves a journal that the next
writer holding the lock, or the next reader (`finish_commits` under the lock), completes:
either all outputs are the old ones or all are the new ones, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kws_core.infra.atomic import DISK_FULL, _public, atomic_write_text, disk_full
from kws_core.infra.faults import crash_point

JOURNAL_GLOB = ".commit-*.json"


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.commit-old.tmp")


def _replace(tmp: Path, final: Path) -> None:
    """Move `tmp` onto `final` (a folder replaces a folder: the old one is moved aside first)."""
    if tmp.exists():
        if final.is_dir() and not final.is_symlink():
            aside = _aside(final)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
    shutil.rmtree(_aside(final), ignore_errors=True)


def finish_commits(folder: Path) -> list[Path]:
    """Complete every commit a killed writer journaled in `folder`; call holding its lock."""
    done = []
    for journal in sorted(Path(folder).glob(JOURNAL_GLOB)):
        try:
            renames = json.loads(journal.read_text())["renames"]
        except (OSError, ValueError, KeyError):
            renames = []  # an unreadable journal was never complete (it is written atomically)
        for tmp, final in renames:
            _replace(Path(tmp), Path(final))
        journal.unlink(missing_ok=True)
        done.append(journal)
    return done


def pending_commit(folder: Path) -> bool:
    return any(Path(folder).glob(JOURNAL_GLOB))


class Outputs:
    """Temp paths for the outputs of one commit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.renames: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike[str], folder: bool = False) -> Path:
        """Where to write `final` (a file, or a folder if `folder`) until the commit. The temp
        name keeps `final`'s suffix before `.tmp` (matplotlib picks the format by suffix)."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = f".{final.name}.", f"{final.suffix}.tmp"
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
            os.close(fd)
            tmp = Path(name)
        self.renames.append((tmp, final))
        return tmp

    def _discard(self) -> None:
        for tmp, _ in self.renames:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def _commit(self, stage: str) -> None:
        for tmp, _ in self.renames:  # mkstemp/mkdtemp made them private
            _public(tmp, 0o777 if tmp.is_dir() else 0o666)
        journal = self.folder / f".commit-{stage}.json"
        body = {"renames": [[str(t), str(f)] for t, f in self.renames]}
        atomic_write_text(journal, json.dumps(body))
        crash_point("commit.journaled")
        for tmp, final in self.renames:
            _replace(tmp, final)
            crash_point("commit.renamed")
        journal.unlink()


@contextlib.contextmanager
def atomic_outputs(folder: str | os.PathLike[str], stage: str) -> Iterator[Outputs]:
    """Yield an `Outputs`; on success all its files replace their targets as one commit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(folder)
    try:
        try:
            yield outputs
        except OSError as e:
            if e.errno in DISK_FULL:
                raise disk_full(folder) from None
            raise
        crash_point("commit.written")
        outputs._commit(stage)
    finally:
        # Before the journal: temp files are dropped. After it: renames are done (or the
        # journal is left for the next writer to finish), so nothing is left to drop.
        if not (folder / f".commit-{stage}.json").exists():
            outputs._discard()
