"""Label lists: the tutorial's order, `_silence_`, `_unknown_`, then the wanted words."""

from __future__ import annotations

from pathlib import Path

from kws_core.config import BACKGROUND_NOISE_DIR, SILENCE_LABEL, UNKNOWN_LABEL
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import DataError


def prepare_words_list(wanted_words: list[str]) -> list[str]:
    return [SILENCE_LABEL, UNKNOWN_LABEL, *wanted_words]


def write_labels(labels: list[str], path: Path) -> Path:
    atomic_write_text(path, "".join(f"{label}\n" for label in labels))
    return path


def read_labels(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"labels file {p} not found; pass the one written next to the model")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise DataError(
            f"labels file {p} is unreadable ({why}); pass the labels.txt of the export"
        ) from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) < 2:
        raise DataError(f"labels file {p} has {len(labels)} labels; expected one per line")
    return labels


def labelled_clips(folder: Path, labels: list[str]) -> list[tuple[Path, str]]:
    """(wav path, label) of a labelled folder: the official test-set layout (one folder per
    label, `_silence_` and `_unknown_` included) or the tutorial's (one folder per word plus
    `_background_noise_`, which is skipped). A folder whose name is not in `labels` counts as
    `_unknown_` (the tutorial's rule). Sorted, so the order never depends on the file system.
    """
    out = []
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        if sub.name == BACKGROUND_NOISE_DIR:
            continue
        label = sub.name if sub.name in labels else UNKNOWN_LABEL
        out.extend((f, label) for f in sorted(sub.glob("*.wav")))
    return out
