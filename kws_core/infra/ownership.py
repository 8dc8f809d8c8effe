"""Output folders are kws's own: a stage writes only into a folder it made (marked with
`.kws-output`) or one that already holds that stage's outputs from an earlier kws; anything
else is refused in one line, so pointing `train_dir` or `stream_dir` at a user's folder can
never overwrite or sweep the user's files."""

from __future__ import annotations

import json
from pathlib import Path

from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import ConfigError

MARKER = ".kws-output"


def claim_folder(folder: Path, key: str, signs: tuple[str, ...] = ()) -> Path:
    """Make `folder` (and mark it) or accept it when marked, empty, or holding one of `signs`
    (glob patterns of what an earlier kws wrote there, before markers); else a one-line
    ConfigError."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}: {folder} is a file, not a folder; choose a folder for kws")
    if (folder / MARKER).is_file():
        return folder
    if folder.is_dir():
        try:
            entries = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        except OSError as e:
            raise ConfigError(f"{key}: {folder} cannot be listed ({e.strerror})") from None
        if entries and not any(next(folder.glob(s), None) for s in signs):
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise ConfigError(
                f"{key}: {folder} holds files kws did not write ({shown}); kws writes only "
                "into folders it made, so choose a new folder (or an empty one)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MARKER, json.dumps({"written_by": "kws", "key": key}) + "\n")
    return folder
