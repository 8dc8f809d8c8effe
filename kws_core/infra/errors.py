"""User-facing errors: one line that names the file or key and says how to fix it."""

from __future__ import annotations

import errno
import re


class KwsError(Exception):
    """An error the CLI prints as one line (no traceback) and exits with status 2."""


class ConfigError(KwsError):
    """A bad key or value in params.yaml or on the command line."""


class DataError(KwsError):
    """A data set that cannot be used as it is (missing words, bad layout, failed download)."""


_NO_SPACE = ("No space left on device", "database or disk is full", "Disk quota exceeded")
_READ_ONLY = ("Read-only file system", "readonly database")
_DENIED = ("Permission denied",)
# A writer's temp name (`.<name>.<random>[...].tmp`, kws_core.infra.atomic/commit) -> <name>
_TEMP = re.compile(r"/\.([^/]+?)\.[A-Za-z0-9_]{8}(?:[^/]*)?\.tmp(?=/|$)")


def _chain(e: BaseException):
    seen: set[int] = set()
    while e is not None and id(e) not in seen and len(seen) < 12:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def os_error_line(e: BaseException) -> str | None:
    """One line for a failure of the machine under a writer (no space, read-only file system,
    permission denied), found in `e` or what caused it: OSError, TensorFlow's or SQLite's
    wording. None when `e` is something else (a bug: let its traceback show)."""
    for err in _chain(e):
        text = f"{getattr(err, 'strerror', '') or ''} {err}"
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kind = "no space"
        elif isinstance(err, OSError) and err.errno == errno.EROFS:
            kind = "read-only"
        elif isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM):
            kind = "denied"
        elif any(s in text for s in _NO_SPACE):
            kind = "no space"
        elif any(s in text for s in _READ_ONLY):
            kind = "read-only"
        elif any(s in text for s in _DENIED):
            kind = "denied"
        else:
            continue
        path = getattr(err, "filename", None)
        if not path and "sqlite" in text.lower():
            path = "the MLflow store (train.mlflow_tracking_uri)"
        elif not path:  # the longest absolute path in the message (not a URL's or a device's)
            found = re.findall(r"(?<![\w:/])(/[^\s;:'\"\])]+)", str(err))
            path = max(found, key=len) if found else ""
        path = _TEMP.sub(r"/\1", str(path)) if path else "an output"
        if kind == "no space":
            return (
                f"no space left on the device writing {path}; free some space and run again "
                "(outputs are replaced only when complete: the earlier ones are untouched)"
            )
        if kind == "read-only":
            return f"cannot write {path}: the file system is read-only; choose a writable folder"
        return (
            f"cannot write {path}: permission denied; fix its permissions or choose another folder"
        )
    return None
