"""The raw data set in the Speech Commands layout, from one of three sources.

- `data_url: synthetic`: generated offline with espeak-ng speakers (the default);
- `data_url: <http(s)/file URL of a .tar.gz>`: downloaded and safely extracted;
- `data_url: ""`: `data_dir` used as it is (custom words such as `bark/`, `miaow/`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kws_core.config import DEFAULT_NOISE_TYPES, Params
from kws_core.data.fetch import MARKER_NAME, fetch_dataset, read_marker
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import DataError
from kws_core.infra.locks import output_lock

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
HELDOUT = "heldout"


@dataclass
class RawDataset:
    data_dir: Path
    source: str  # "synthetic", "url" or "local"
    reused: bool
    n_files: int


def _synthetic_recipe(params: Params) -> dict:
    s = params.data.synthetic
    return {
        "source": SYNTHETIC,
        "speakers": s.speakers,
        "utterances_per_speaker": s.utterances_per_speaker,
        "words": s.word_list,
        "seed": s.synthetic_seed,
        "noise_duration_s": s.noise_duration_s,
        "sample_rate": params.data.sample_rate,
        "clip_duration_ms": params.data.clip_duration_ms,
        "piper_speakers": s.piper_speakers,
        "heldout_dialects": s.heldout_dialect_list,
        # only when they change anything, so data sets made before them are still reused
        **(
            {"piper_voice_change": s.piper_voice_change}
            if s.piper_voice_change and s.piper_speakers
            else {}
        ),
        **({"noise_types": s.noise_type_list} if s.noise_types != DEFAULT_NOISE_TYPES else {}),
    }


def training_dialects(params: Params) -> list[str] | None:
    """The espeak dialects the training set speaks (None: all): all but the held-out ones."""
    held = params.data.synthetic.heldout_dialect_list
    if not held:
        return None
    from kws_core.data.synth.espeak import list_english_dialects

    rest = [d for d in list_english_dialects() if d not in held]
    if not rest:
        raise DataError(
            "data.synthetic.heldout_dialects holds out every espeak-ng dialect; "
            "keep at least one for training"
        )
    return rest


def heldout_words(params: Params) -> list[str]:
    """The held-out family says every wanted word and 5 of the other words."""
    wanted = [w for w in params.data.wanted_word_list if w in params.data.synthetic.word_list]
    others = [w for w in params.data.synthetic.word_list if w not in wanted]
    return wanted + others[:: max(len(others) // 5, 1)][:5]


def make_heldout(params: Params, progress: bool = True) -> Path | None:
    """Generate (or reuse) the held-out voice family's labelled folder; None when disabled."""
    from kws_core.data.synth import generate_synthetic_dataset

    s = params.data.synthetic
    if not s.heldout_dialect_list:
        return None
    out = params.layout.heldout_dir
    data_dir = params.layout.data_dir
    if out == data_dir or out.is_relative_to(data_dir) or data_dir.is_relative_to(out):
        raise DataError(
            f"data.synthetic.heldout_dir {out} overlaps data_dir {data_dir}: held-out voices "
            "must stay out of the training set; point heldout_dir beside data_dir, not inside"
        )
    recipe = {
        "source": HELDOUT,
        "dialects": s.heldout_dialect_list,
        "speakers": s.heldout_speakers,
        "words": heldout_words(params),
        "seed": s.synthetic_seed,
        "sample_rate": params.data.sample_rate,
        "clip_duration_ms": params.data.clip_duration_ms,
    }
    if _reusable(out, recipe, "data.synthetic.heldout_dir", "point heldout_dir elsewhere"):
        return out
    generate_synthetic_dataset(
        out,
        words=recipe["words"],
        speakers=s.heldout_speakers,
        sample_rate=params.data.sample_rate,
        clip_duration_ms=params.data.clip_duration_ms,
        # Another seed: other speakers than the training set's, even for a shared dialect.
        seed=s.synthetic_seed + 7919,
        noise_duration_s=1.0,
        workers=s.synthetic_workers,
        progress=progress,
        dialects=s.heldout_dialect_list,
    )
    _write_marker(out, recipe)
    return out


def _reusable(folder: Path, recipe: dict, key: str, fix: str) -> bool:
    """True when `folder` holds what `recipe` makes; DataError when it holds something kws did
    not generate (a generator replaces the folder as a whole, so it must be ours)."""
    marker = read_marker(folder)
    if marker is not None and marker.get("recipe") == recipe:
        log.info("reusing %s at %s", key, folder)
        return True
    ours = (marker or {}).get("source") == recipe["source"]
    if folder.exists() and any(folder.iterdir()) and not ours:
        raise DataError(f"{key} {folder} exists and was not generated by kws; move it away, {fix}")
    return False


def _write_marker(folder: Path, recipe: dict) -> int:
    """Record what `folder` was generated from (its reuse key); returns its clip count."""
    n = _count_wavs(folder)
    body = {
        "source": recipe["source"],
        "recipe": recipe,
        "files": n,
        "time": datetime.now(UTC).isoformat(),
    }
    atomic_write_text(folder / MARKER_NAME, json.dumps(body, indent=2))
    return n


def _count_wavs(data_dir: Path) -> int:
    return sum(1 for _ in data_dir.glob("*/*.wav"))


def make_synthetic(
    params: Params, data_dir: Path, progress: bool = True, lock: bool = False
) -> RawDataset:
    """Generate the synthetic set into data_dir, or reuse it if made with the same recipe.
    `lock`: take data_dir's write lock (and sweep a killed run's temp folder) for the
    generation; the dataset step holds it already."""
    recipe = _synthetic_recipe(params)
    fix = 'point data_dir elsewhere, or set data_url to "" to use it as it is'
    if _reusable(data_dir, recipe, "data_dir", fix):
        return RawDataset(data_dir, SYNTHETIC, True, _count_wavs(data_dir))
    missing = [w for w in params.data.wanted_word_list if w not in recipe["words"]]
    if missing:
        raise DataError(
            f"wanted_words {missing} are not among data.synthetic.synthetic_words; add them there"
        )
    held = output_lock(data_dir, "synth-dataset") if lock else contextlib.nullcontext()
    with held:
        _generate(params, data_dir, recipe, progress)
        count = _write_marker(data_dir, recipe)
    return RawDataset(data_dir, SYNTHETIC, False, count)


def _generate(params: Params, data_dir: Path, recipe: dict, progress: bool) -> None:
    from kws_core.data.synth import generate_synthetic_dataset

    s = params.data.synthetic
    generate_synthetic_dataset(
        data_dir,
        words=recipe["words"],
        speakers=s.speakers,
        utterances_per_speaker=s.utterances_per_speaker,
        sample_rate=params.data.sample_rate,
        clip_duration_ms=params.data.clip_duration_ms,
        seed=s.synthetic_seed,
        noise_duration_s=s.noise_duration_s,
        workers=s.synthetic_workers,
        progress=progress,
        piper_speakers=s.piper_speakers,
        piper_voice_change=s.piper_voice_change,
        dialects=training_dialects(params),
        noise_names=s.noise_type_list,
    )


def prepare_dataset(params: Params, progress: bool = True) -> RawDataset:
    """Make params.data.data_dir hold a complete data set; idempotent."""
    data_dir = params.layout.data_dir
    url = params.data.data_url.strip()
    if url == SYNTHETIC:
        raw = make_synthetic(params, data_dir, progress)
        make_heldout(params, progress)
        return raw
    if url:
        before = read_marker(data_dir)
        fetch_dataset(
            url,
            data_dir,
            sha256=params.data.data_sha256 or None,
            progress=progress,
            max_bytes=int(params.data.max_extract_mb * 1e6),
        )
        reused = before is not None and before.get("url") == url
        return RawDataset(data_dir, "url", reused, _count_wavs(data_dir))
    if not data_dir.is_dir():
        raise DataError(
            f"data_url is empty, so data_dir {data_dir} must be a folder with one sub-folder per "
            "word; it does not exist (set data_url: synthetic to generate one)"
        )
    return RawDataset(data_dir, "local", True, _count_wavs(data_dir))
