"""Sizes and checksums of an export's files, checked before any model file is opened.

TFLite's interpreter trusts its flatbuffer: a truncated `.tflite` crashes the process with a
segmentation fault, and a truncated SavedModel variables file ends in an `IndexError` deep in
TensorFlow. `kws freeze` records every file's size and SHA-256 in `export.json` (`files`), and
readers verify the files they are about to open, so damage is one line naming the file and the
fix instead.
"""

from __future__ import annotations

from pathlib import Path

from kws_core.data.download import sha256_file
from kws_core.infra.errors import KwsError

META_NAME = "export.json"


def file_digests(folder: Path) -> dict[str, dict]:
    """`{relative path: {"bytes": n, "sha256": hex}}` of every file in an export folder
    (export.json itself excepted: it is what carries them)."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != META_NAME
    }


def _expected(meta: dict) -> dict[str, dict]:
    files = meta.get("files")
    if isinstance(files, dict):
        return files
    # Exports written before `files` recorded only the TFLite models' sizes.
    models = meta.get("models") if isinstance(meta.get("models"), dict) else {}
    return {name: {"bytes": d["bytes"]} for name, d in models.items() if "bytes" in d}


def verify_files(folder: Path, meta: dict, names: list[str]) -> None:
    """One-line KwsError if a file of `names` (paths relative to the export folder, or folder
    prefixes such as `saved_model/`) is missing or differs from what export.json records."""
    folder = Path(folder)
    expected = _expected(meta)
    wanted = {
        rel: want
        for rel, want in expected.items()
        if any(rel == n or rel.startswith(n.rstrip("/") + "/") for n in names)
    }
    for rel, want in sorted(wanted.items()):
        path = folder / rel
        fix = f"re-run kws freeze (export {folder})"
        try:
            size = path.stat().st_size
        except OSError:
            raise KwsError(f"export damaged: {rel} is missing; {fix}") from None
        if size != want.get("bytes", size):
            raise KwsError(
                f"export damaged: {rel} is {size:,} bytes, expected {int(want['bytes']):,}; {fix}"
            )
        if "sha256" in want and sha256_file(path) != want["sha256"]:
            raise KwsError(
                f"export damaged: {rel} does not match its checksum in {META_NAME}; {fix}"
            )
