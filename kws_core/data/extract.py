"""Extract a tar archive safely: validate every member first, then extract atomically.

Layer 1 (`check_members`) refuses the whole archive before anything is written if any member is
an absolute path, has a `..` component, is a device/fifo/other special file, or is a symlink or
hardlink whose target resolves outside the extraction root (following the archive's own
symlinks, so `b -> .` plus `a -> b/../x` is caught too), or sits below a symlink in the
archive (writing through a symlink). Layer 2 is tarfile's `filter="data"`.
Extraction happens in a temp dir beside `dest_dir` that replaces it in one rename, so an
interrupted run leaves either nothing (or the previous folder) or the complete new folder.
"""

from __future__ import annotations

import logging
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from kws_core.infra.atomic import atomic_dir
from kws_core.infra.errors import DataError

log = logging.getLogger(__name__)

_MAX_LINK_DEPTH = 40
# Errors a damaged archive can raise while its headers or data are read.
_CORRUPT_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


class _Escapes(Exception):
    """A path resolves outside the extraction root."""


def safe_extract_tar(
    archive: Path,
    dest_dir: Path,
    *,
    progress: bool = True,
    before_commit: Callable[[Path], None] | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Extract `archive` (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) into `dest_dir` and return it.

    The layout is kept exactly as in the archive. An existing `dest_dir` is replaced only once
    the new one is complete. `before_commit(tmp_dir)` runs after extraction, inside the temp dir,
    just before the rename (used to write a completeness marker). An archive whose files add up
    to more than `max_bytes` (data.max_extract_mb) is refused before anything is written.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    if not archive.is_file():
        raise DataError(f"cannot extract {archive}: the file does not exist")
    try:
        tf = tarfile.open(archive, "r:*")
    except _CORRUPT_ERRORS as exc:
        raise DataError(
            f"{archive} is not a readable tar archive ({exc}); delete it and download it again"
        ) from None
    with tf:
        tf.errorlevel = 2
        try:
            members = _read_members(archive, tf, max_bytes)
        except _CORRUPT_ERRORS as exc:
            raise DataError(
                f"{archive} is corrupt ({type(exc).__name__}: {exc}); "
                "delete it and download it again"
            ) from None
        check_members(archive, members)

        with atomic_dir(dest_dir) as tmp:
            bar = tqdm(
                members,
                total=len(members),
                unit="file",
                desc=f"extracting {archive.name}",
                disable=not progress,
                leave=False,
            )
            try:
                tf.extractall(tmp, members=bar, filter="data")
            except tarfile.FilterError as exc:
                raise DataError(
                    f"{archive}: refusing member {exc.tarinfo.name!r}: {exc} (unsafe archive)"
                ) from None
            except _CORRUPT_ERRORS as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise  # a filesystem problem (disk full, permissions), not a bad archive
                raise DataError(
                    f"{archive} could not be extracted ({type(exc).__name__}: {exc}); "
                    "delete it and download it again"
                ) from None
            finally:
                bar.close()
            if before_commit is not None:
                before_commit(tmp)
    log.info("extracted %s (%d members) -> %s", archive, len(members), dest_dir)
    return dest_dir


def _read_members(
    archive: Path, tf: tarfile.TarFile, max_bytes: int | None
) -> list[tarfile.TarInfo]:
    """All member headers; DataError as soon as their sizes add up to more than `max_bytes`.

    Each header declares its size before its data, and extraction writes exactly that many bytes,
    so a decompression bomb is caught here before its data is decompressed, let alone written.
    """
    members: list[tarfile.TarInfo] = []
    sizes: dict[str, int] = {}
    total = 0
    while (member := tf.next()) is not None:
        members.append(member)
        if member.isreg():
            sizes[member.name] = member.size
            total += member.size
        elif member.islnk():  # extracted as a copy where hard links are not possible
            total += sizes.get(member.linkname, 0)
        if max_bytes is not None and total > max_bytes:
            raise DataError(
                f"{archive} unpacks to more than {max_bytes / 1e6:g} MB (data.max_extract_mb; "
                f"{total / 1e6:.1f} MB by member {member.name!r}), a possible decompression "
                "bomb; raise data.max_extract_mb if you trust it; nothing was extracted"
            )
    return members


def check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Raise DataError naming `archive` and the first unsafe member; write nothing."""
    symlinks: dict[str, str] = {}
    for member in members:
        if member.issym():
            parts = _name_parts(archive, member)
            if parts:
                symlinks["/".join(parts)] = member.linkname

    for member in members:
        parts = _name_parts(archive, member)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise _refuse(archive, member, f"special file type ({_type_name(member)})")
        if not parts and not member.isdir():
            raise _refuse(archive, member, "names the extraction root itself")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in symlinks:
                raise _refuse(
                    archive, member, f"path goes through symlink {'/'.join(parts[:depth])!r}"
                )
        if member.issym() or member.islnk():
            if not member.linkname:
                raise _refuse(archive, member, "link with an empty target")
            if member.linkname.startswith("/") or PurePosixPath(member.linkname).is_absolute():
                raise _refuse(archive, member, f"link to absolute path {member.linkname!r}")
        try:
            # Where the member lands (for a symlink: where its target resolves). Since no member
            # may sit below a symlink, every symlink's name is its real location, so resolving
            # through the `symlinks` map mirrors what the file system will do.
            _resolve(parts, symlinks)
            if member.islnk():
                _resolve(PurePosixPath(member.linkname).parts, symlinks)
        except _Escapes as exc:
            what = "link target" if (member.issym() or member.islnk()) else "path"
            target = f" -> {member.linkname!r}" if (member.issym() or member.islnk()) else ""
            raise _refuse(
                archive, member, f"{what}{target} resolves outside the folder ({exc})"
            ) from None


def _name_parts(archive: Path, member: tarfile.TarInfo) -> list[str]:
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise _refuse(archive, member, "absolute path")
    if len(name) > 1 and name[1] == ":":
        raise _refuse(archive, member, "absolute (drive letter) path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, member, "'..' path component")
    return parts


def _resolve(parts: Iterable[str], symlinks: dict[str, str], depth: int = 0) -> list[str]:
    """Resolve a root-relative path through the archive's symlinks; raise _Escapes if it leaves."""
    if depth > _MAX_LINK_DEPTH:
        raise _Escapes("too many levels of symbolic links")
    resolved: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _Escapes("climbs above the root")
            resolved.pop()
            continue
        resolved.append(part)
        key = "/".join(resolved)
        if key in symlinks:
            target = symlinks[key]
            if target.startswith("/"):
                raise _Escapes(f"{key} links to absolute path {target!r}")
            resolved = _resolve(resolved[:-1] + target.split("/"), symlinks, depth + 1)
    return resolved


def _refuse(archive: Path, member: tarfile.TarInfo, reason: str) -> DataError:
    return DataError(
        f"{archive}: refusing unsafe member {member.name!r}: {reason}; nothing was extracted"
    )


def _type_name(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    return f"tar type {member.type!r}"
