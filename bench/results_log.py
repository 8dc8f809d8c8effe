"""Append one benchmark run to a JSON history file, so runs can be compared over time."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def append_run(path: str | Path, **fields) -> None:
    """Add {when, machine, **fields} to the list in `path` (created if missing)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(
        {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), **fields}
    )
    out.write_text(json.dumps(history, indent=1))
