"""Download one file over http(s) or from a local path, resumably and verifiably.

`download_file` streams into `<dest>.part`, resumes an interrupted transfer with an HTTP Range
request, retries transient failures (connection errors, timeouts, truncated bodies, 5xx) with
exponential backoff, checks an optional SHA-256 and only then renames the part file onto `dest`.
A file at `dest` therefore always is a complete download.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from kws_core.infra.errors import ConfigError, DataError
from kws_core.infra.faults import crash_point

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 16
_USER_AGENT = "kws/0.1 (+speech-commands keyword spotting)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class _Retryable(Exception):
    """A transient failure: the attempt may be repeated (resuming from the part file)."""


class _RestartFromScratch(Exception):
    """The part file cannot be resumed: delete it and download again from byte 0."""


def part_path(dest: Path) -> Path:
    """The in-progress file that `download_file` writes before renaming onto `dest`."""
    return dest.with_name(dest.name + ".part")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalize_sha256(sha256: str | None) -> str | None:
    """Lower-case and validate a SHA-256 hex digest (None/empty means: no check)."""
    if sha256 is None or not sha256.strip():
        return None
    value = sha256.strip().lower()
    if not _SHA256_RE.match(value):
        raise ConfigError(f"sha256 {sha256!r} is not a SHA-256 digest: expected 64 hex digits")
    return value


def local_source(url: str) -> Path | None:
    """The local file a `file://` URL or a plain path points to; None for a network URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DataError(f"cannot read {url}: file:// URLs must name a local file")
        return Path(urllib.request.url2pathname(parsed.path))
    # No scheme (or a one-letter Windows drive) is a plain local path.
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return Path(url).expanduser()
    return None


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch `url` into `dest` and return `dest`.

    `url` may be http://, https://, file:// or a plain local path. `retries` is the number of
    extra attempts after the first one; the wait before retry n is `backoff_s * 2**(n-1)`.
    A 4xx answer fails at once. If `dest` already exists and `sha256` is None or matches,
    nothing is downloaded.
    """
    if not url:
        raise DataError("cannot download: the URL is empty")
    dest = Path(dest)
    expected = normalize_sha256(sha256)
    if dest.is_file():
        if expected is None:
            log.info("using existing download %s", dest)
            return dest
        actual = sha256_file(dest)
        if actual == expected:
            log.info("using existing download %s (sha256 ok)", dest)
            return dest
        log.warning(
            "existing %s has sha256 %s, expected %s: downloading it again", dest, actual, expected
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    source = local_source(url)
    if source is not None:
        _copy_local(url, source, part, progress=progress)
    else:
        scheme = urllib.parse.urlparse(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise DataError(
                f"cannot download {url}: unsupported URL scheme {scheme!r} "
                "(use http://, https://, file:// or a local path)"
            )
        _http_download_with_retries(
            url,
            part,
            retries=retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            progress=progress,
            label=dest.name,
        )

    if expected is not None:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise DataError(
                f"sha256 mismatch for {url}: expected {expected}, got {actual} "
                "(the download was deleted; check the URL and the sha256 setting)"
            )
    os.replace(part, dest)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _copy_local(url: str, source: Path, part: Path, *, progress: bool) -> None:
    if not source.is_file():
        raise DataError(f"cannot read {url}: {source} does not exist or is not a file")
    total = source.stat().st_size
    with (
        open(source, "rb") as src,
        open(part, "wb") as out,
        _progress_bar(total, 0, part.name[: -len(".part")], progress) as bar,
    ):
        for block in iter(lambda: src.read(CHUNK_SIZE), b""):
            out.write(block)
            bar.update(len(block))


def _progress_bar(total: int | None, initial: int, label: str, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not enabled,
        leave=False,
    )


def _http_download_with_retries(
    url: str,
    part: Path,
    *,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    progress: bool,
    label: str,
) -> None:
    attempts = max(0, retries) + 1
    restarts = 0
    attempt = 1
    while True:
        try:
            _http_attempt(url, part, timeout_s=timeout_s, progress=progress, label=label)
            return
        except _RestartFromScratch as exc:
            # Not a network failure: the server told us the part file is unusable. Start over
            # once without spending a retry; a second time counts as a failed attempt.
            log.warning("cannot resume %s (%s): downloading from the start", url, exc)
            part.unlink(missing_ok=True)
            restarts += 1
            if restarts == 1:
                continue
            failure: Exception = exc
        except _Retryable as exc:
            failure = exc
        if attempt >= attempts:
            raise DataError(
                f"download of {url} failed after {attempts} attempt(s): {failure} "
                "(check the network and the URL; rerun to resume)"
            )
        wait = backoff_s * (2 ** (attempt - 1))
        log.warning(
            "download of %s failed (%s); retry %d/%d in %.1fs", url, failure, attempt, retries, wait
        )
        time.sleep(wait)
        attempt += 1


def _http_attempt(url: str, part: Path, *, timeout_s: float, progress: bool, label: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have > 0:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have > 0:
            _handle_unsatisfiable_range(exc, have)
            return
        if 400 <= exc.code < 500:
            raise DataError(
                f"download of {url} failed: HTTP {exc.code} {exc.reason} "
                "(check the URL; this is not retried)"
            ) from None
        raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise DataError(f"download of {url} failed: {exc.reason}") from None
        raise _Retryable(f"cannot connect: {exc.reason}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None

    with response:
        status = response.status
        length = _int_or_none(response.headers.get("Content-Length"))
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != have:
                raise _RestartFromScratch(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
            if total is None and length is not None:
                total = have + length
        elif status == 200:
            if have > 0:
                log.info("server ignored the Range request for %s: downloading from the start", url)
            have = 0
            mode = "wb"
            total = length
        else:
            raise _Retryable(f"unexpected HTTP status {status}")

        received = have
        try:
            with open(part, mode) as out, _progress_bar(total, have, label, progress) as bar:
                while True:
                    block = response.read(CHUNK_SIZE)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
                    out.flush()
                    crash_point("download.after_chunk")
        except http.client.IncompleteRead as exc:
            raise _Retryable(f"connection closed early ({exc})") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"{type(exc).__name__} while reading: {exc}") from None

    if total is not None and received != total:
        if received > total:
            raise _RestartFromScratch(f"received {received} bytes, more than the {total} announced")
        raise _Retryable(f"connection closed early: received {received} of {total} bytes")


def _handle_unsatisfiable_range(exc: urllib.error.HTTPError, have: int) -> None:
    """416 on a resume: the part file is complete, or it is not this file at all."""
    total = None
    match = _UNSATISFIED_RANGE_RE.match(exc.headers.get("Content-Range", "") if exc.headers else "")
    if match:
        total = int(match.group(1))
    if total == have:
        return  # complete; the sha256 check (if any) runs next
    if total is None:
        # No size to compare with: we cannot tell complete from bad, so fetch it again.
        raise _RestartFromScratch("server refused the resume (HTTP 416) without a size")
    raise _RestartFromScratch(f"part file has {have} bytes but the file has {total}")


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    match = _CONTENT_RANGE_RE.match(value or "")
    if not match:
        raise _RestartFromScratch(f"unusable Content-Range {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
