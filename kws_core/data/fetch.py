"""Get the Speech Commands data set: the tutorial's maybe_download_and_extract, made safe.

A data folder made by `fetch_dataset` holds `.kws_source.json` (url, archive sha256, file count,
time). The marker is written inside the temp folder before the final rename, so it exists only
for complete sets; a later call with the same URL reuses the folder without touching the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kws_core.data.download import download_file, local_source, normalize_sha256, sha256_file
from kws_core.data.extract import safe_extract_tar
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import DataError

log = logging.getLogger(__name__)

MARKER_NAME = ".kws_source.json"


def read_marker(data_dir: Path) -> dict[str, Any] | None:
    """The completeness marker of `data_dir`, or None if absent or unreadable."""
    path = Path(data_dir) / MARKER_NAME
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def fetch_dataset(
    data_url: str,
    data_dir: Path,
    *,
    sha256: str | None = None,
    download_dir: Path | None = None,
    progress: bool = True,
    max_bytes: int | None = None,
) -> Path:
    """Make `data_dir` hold the extracted archive from `data_url` and return `data_dir`.

    Reuses a complete earlier extraction of the same URL (and sha256, if given). Refuses to
    replace a non-empty folder that was not made from `data_url`. An empty `data_url` means
    "use data_dir as it is". The archive is kept in `download_dir` (default
    `data_dir.parent / ".downloads"`) so an interrupted extraction does not download again;
    a local archive (file:// or a path) is read in place, not copied. An archive that unpacks
    to more than `max_bytes` is refused before anything is extracted.
    """
    data_dir = Path(data_dir)
    expected = normalize_sha256(sha256)

    if not data_url:
        if _non_empty_dir(data_dir):
            log.info("data_url is empty: using %s as it is", data_dir)
            return data_dir
        raise DataError(
            f"data_url is empty and {data_dir} does not exist or is empty: "
            "set data_url to the data set archive, or put the data set there"
        )

    marker = read_marker(data_dir)
    if marker is not None and marker.get("url") == data_url:
        if expected is None or marker.get("sha256") == expected:
            log.info("reusing complete data set at %s (from %s)", data_dir, data_url)
            return data_dir
        log.info(
            "%s was made from an archive with sha256 %s, expected %s: fetching again",
            data_dir,
            marker.get("sha256"),
            expected,
        )
    elif _non_empty_dir(data_dir) or (data_dir.exists() and not data_dir.is_dir()):
        made_from = f" (it was made from {marker.get('url')!r})" if marker is not None else ""
        raise DataError(
            f"{data_dir} already exists and was not made from {data_url}{made_from}: "
            'delete or move it to download the data set, or set data_url to "" '
            "to use the folder as it is"
        )

    source = local_source(data_url)
    if source is not None:
        archive = _check_local_archive(data_url, source, expected)
    else:
        if download_dir is None:
            download_dir = data_dir.parent / ".downloads"
        archive = download_file(
            data_url,
            Path(download_dir) / archive_file_name(data_url),
            sha256=expected,
            progress=progress,
        )
    archive_sha = expected if expected is not None else sha256_file(archive)

    def write_marker(tmp_dir: Path) -> None:
        files = sum(1 for p in tmp_dir.rglob("*") if p.is_file() and not p.is_symlink())
        record = {
            "url": data_url,
            "sha256": archive_sha,
            "files": files,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(tmp_dir / MARKER_NAME, json.dumps(record, indent=2) + "\n")

    safe_extract_tar(
        archive, data_dir, progress=progress, before_commit=write_marker, max_bytes=max_bytes
    )
    log.info("data set ready at %s", data_dir)
    return data_dir


def archive_file_name(data_url: str) -> str:
    """File name for the downloaded archive: URL basename prefixed by a short hash of the URL.

    The hash keeps two URLs that end in the same file name from sharing (and reusing) one file.
    """
    basename = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(data_url).path))
    basename = "".join(c if c.isalnum() or c in "._-" else "_" for c in basename).lstrip(".")
    tag = hashlib.sha256(data_url.encode("utf-8")).hexdigest()[:10]
    return f"{tag}-{basename or 'dataset.tar.gz'}"


def _check_local_archive(data_url: str, source: Path, expected: str | None) -> Path:
    if not source.is_file():
        raise DataError(f"cannot read {data_url}: {source} does not exist or is not a file")
    if expected is not None:
        actual = sha256_file(source)
        if actual != expected:
            raise DataError(
                f"sha256 mismatch for {data_url}: expected {expected}, got {actual} "
                "(check the file and the sha256 setting)"
            )
    return source


def _non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())
