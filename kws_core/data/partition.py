"""TensorFlow's `which_set`, bit for bit, plus the shipped validation/testing lists of v0.02."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, as in the tutorial's input_data.py
PARTITIONS = ("training", "validation", "testing")

_NOHASH = re.compile(r"_nohash_.*$")


def speaker_of(filename: str) -> str:
    """The part of the basename before `_nohash_` (the whole basename if there is none)."""
    return _NOHASH.sub("", os.path.basename(filename))


def which_set(filename: str, validation_percentage: float, testing_percentage: float) -> str:
    """Partition of a file, stable as files are added: depends on its name only.

    Everything from `_nohash_` on is dropped so all clips of one speaker land together; the
    SHA-1 of the rest, modulo 2^27, is scaled to 0..100 and compared with the percentages.
    """
    hash_name = speaker_of(filename)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage_hash = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (
        100.0 / MAX_NUM_WAVS_PER_CLASS
    )
    if percentage_hash < validation_percentage:
        return "validation"
    if percentage_hash < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def read_partition_lists(data_dir: Path) -> dict[str, str] | None:
    """`word/file.wav` -> partition from validation_list.txt / testing_list.txt, if shipped."""
    lists = {
        "validation": data_dir / "validation_list.txt",
        "testing": data_dir / "testing_list.txt",
    }
    if not any(p.exists() for p in lists.values()):
        return None
    table: dict[str, str] = {}
    for partition, path in lists.items():
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                rel = line.strip().replace("\\", "/")
                if rel:
                    table[rel] = partition
    return table
