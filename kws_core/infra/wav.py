"""WAV inspection that never crashes: a small RIFF parser that says exactly what is wrong."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# A recorder that cannot seek back to patch the header (writing to a pipe, or killed) leaves
# this, or 0, as the RIFF and data sizes: the samples then run to the end of the file.
UNKNOWN_SIZE = 0xFFFFFFFF
# How much of a file is read to find the data chunk's header (chunks before it are small).
HEAD_BYTES = 1 << 20


class WavError(Exception):
    """A file that is not a usable WAV; the message is the reason shown in the rejected table."""


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    bits: int
    encoding: str  # "pcm" or "float"
    num_samples: int
    peak: float
    rms: float
    sha1: str  # SHA-1 of the sample data (ignores header metadata)

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.num_samples / self.sample_rate if self.sample_rate else 0.0


def _unknown_length(size: int, riff_size: int, available: int) -> bool:
    """Whether a data chunk's size is a recorder's placeholder (samples to the end of file)."""
    return size == UNKNOWN_SIZE or (size == 0 and riff_size in (0, UNKNOWN_SIZE) and available > 0)


def _parse(data: bytes) -> tuple[tuple[int, int, int, int, int], bytes]:
    """Return ((format, channels, rate, block_align, bits), sample bytes) or raise WavError."""
    fmt, start, size = _locate(data, len(data))
    return fmt, data[start : start + size]


def _locate(data: bytes, total: int) -> tuple[tuple[int, int, int, int, int], int, int]:
    """((format, channels, rate, block_align, bits), data offset, data bytes) or WavError.

    `data` is the first bytes of a `total`-byte file. An unknown-length data chunk (see
    UNKNOWN_SIZE) is the rest of the file, cut to whole sample frames.
    """
    if len(data) == 0:
        raise WavError("empty file (0 bytes)")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    riff_size = struct.unpack("<I", data[4:8])[0]
    pos = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise WavError("corrupt WAV: fmt chunk too short")
            tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                tag = struct.unpack("<H", data[body + 24 : body + 26])[0]
            fmt = (tag, ch, rate, align, bits)
        elif cid == b"data":
            if fmt is None:
                raise WavError("corrupt WAV: data chunk before fmt chunk")
            available = total - body
            if _unknown_length(size, riff_size, available):
                align = fmt[3]
                return fmt, body, available - available % align if align else available
            if size > available:
                raise WavError(
                    f"truncated WAV: header says {size} data bytes, file has {available}"
                )
            return fmt, body, size
        pos = body + size + (size & 1)
    if fmt is None:
        raise WavError("corrupt WAV: no fmt chunk")
    raise WavError("corrupt WAV: no data chunk")


def _check_format(
    fmt: tuple[int, int, int, int, int], pcm: bytes, expect_rate: int, expect_bits: int
) -> None:
    """Raise WavError unless the header is mono `expect_bits`-bit PCM at `expect_rate` Hz."""
    tag, channels, rate, align, bits = fmt
    if tag == WAVE_FORMAT_IEEE_FLOAT:
        raise WavError(f"{bits}-bit float samples, expected {expect_bits}-bit PCM")
    if tag != WAVE_FORMAT_PCM:
        raise WavError(f"unsupported encoding (format tag {tag:#06x}), expected PCM")
    if bits != expect_bits:
        raise WavError(f"{bits}-bit PCM, expected {expect_bits}-bit")
    if channels != 1:
        raise WavError(f"{channels} channels, expected mono")
    if rate != expect_rate:
        raise WavError(f"sample rate {rate} Hz, expected {expect_rate}")
    if align != channels * bits // 8:
        raise WavError(f"corrupt WAV: block align {align} does not match {bits}-bit mono")


def _read(path: str | Path) -> bytes:
    p = Path(path)
    # A fifo or a device (say a symlink to /dev/zero) named *.wav would block or never end.
    if p.exists() and not p.is_file():
        raise WavError("not a regular file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise WavError(f"unreadable ({e.strerror})") from None


def with_known_length(path: str | Path) -> bytes | None:
    """The file's bytes with true RIFF and data sizes when its header says "unknown length"
    (see UNKNOWN_SIZE), else None (read the file as it is).

    For readers other than this module's (libsndfile reads 0xFFFFFFFF but finds no samples
    behind a 0), so every reader takes such a file the same way.
    """
    p = Path(path)
    try:
        if not p.is_file():
            return None
        with p.open("rb") as f:
            head = f.read(HEAD_BYTES)
            total = p.stat().st_size
            _, start, size = _locate(head, total)
            declared = struct.unpack("<I", head[start - 4 : start])[0]
            riff_size = struct.unpack("<I", head[4:8])[0]
            if not _unknown_length(declared, riff_size, total - start):
                return None
            f.seek(0)
            data = bytearray(f.read(start + size))
    except (OSError, WavError):
        return None  # the caller's reader says what is wrong
    data[4:8] = struct.pack("<I", len(data) - 8)
    data[start - 4 : start] = struct.pack("<I", size)
    return bytes(data)


def inspect_wav(path: str | Path, expect_rate: int, expect_bits: int = 16) -> WavInfo:
    """Read and check one clip: mono, `expect_bits`-bit PCM, `expect_rate` Hz, non-empty.

    Raises WavError with a plain reason for anything else.
    """
    fmt, pcm = _parse(_read(path))
    _check_format(fmt, pcm, expect_rate, expect_bits)
    if len(pcm) < 2:
        raise WavError("empty WAV (0 samples)")
    if len(pcm) % 2:
        raise WavError("truncated WAV: odd number of data bytes for 16-bit samples")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return WavInfo(
        sample_rate=fmt[2],
        channels=fmt[1],
        bits=fmt[4],
        encoding="pcm",
        num_samples=int(samples.size),
        peak=float(np.max(np.abs(samples))),
        rms=float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))),
        sha1=hashlib.sha1(pcm).hexdigest(),
    )


def read_wav(path: str | Path, expect_rate: int) -> np.ndarray:
    """Load a 16-bit mono PCM clip as float32 in [-1, 1); WavError for anything else.

    The format is checked here too: read as 16-bit PCM, a float or stereo file would be noise.
    """
    fmt, pcm = _parse(_read(path))
    _check_format(fmt, pcm, expect_rate, 16)
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples in [-1, 1] as 16-bit mono PCM, atomically.

    Raises ValueError for NaN/inf samples (they have no PCM value) or an impossible rate.
    """
    from kws_core.infra.atomic import atomic_write_bytes

    x = np.asarray(samples, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{path}: {bad} of {x.size} samples are NaN or infinite; nothing written")
    if not 0 < sample_rate < 2**31:
        raise ValueError(f"{path}: sample rate {sample_rate} Hz is not a valid WAV rate")
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767)
    pcm_bytes = pcm.astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm_bytes)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(pcm_bytes))
    atomic_write_bytes(path, header + pcm_bytes)
