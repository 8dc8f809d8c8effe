"""Write-then-rename helpers so a crash never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kws_core.infra.errors import KwsError
from kws_core.infra.faults import crash_point

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(target: Path, detail: str = "") -> KwsError:
    """The one-line error for a write that ran out of space (temp output already removed)."""
    return KwsError(
        f"no space left on the device writing {target}{f' ({detail})' if detail else ''}; "
        f"free some space and run again (the previous {target.name}, if any, is untouched)"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: Path, mode: int) -> None:
    # mkstemp/mkdtemp create 0600/0700 entries; give the final output the usual permissions.
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _public(tmp_path, 0o666)
        crash_point("atomic.before_rename")
        os.replace(tmp_path, target)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise disk_full(target) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def read_json_object(path: Path, missing: str, damaged: str) -> dict:
    """A JSON object written with atomic_write_text, or a one-line DataError: `missing` and
    `damaged` say what to run when the file is not there or is not a JSON object."""
    import json

    from kws_core.infra.errors import DataError

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: {missing}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable ({e}); {damaged}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a JSON object; {damaged}")
    return data


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp directory beside `target`; on success it replaces `target` in one rename.

    An existing `target` is moved aside first and removed only after the new one is in place,
    so an interrupted run leaves either the old complete folder or the new complete one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno in DISK_FULL:
                raise disk_full(target) from None
            raise
        _public(tmp, 0o777)
        crash_point("atomic.before_rename")
        old = None
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.rmdir(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
