"""The partition manifest: one row per clip (plus the tutorial's silence and unknown rows)."""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from kws_core.config import (
    BACKGROUND_NOISE_DIR,
    MANIFEST_FILE,
    SILENCE_LABEL,
    UNKNOWN_LABEL,
    DataConfig,
    Params,
    SourceSpec,
)
from kws_core.data.partition import PARTITIONS, read_partition_lists, speaker_of, which_set
from kws_core.infra.commit import atomic_outputs
from kws_core.infra.errors import DataError
from kws_core.infra.locks import await_commit
from kws_core.infra.wav import WavError, WavInfo, inspect_wav

RANDOM_SEED = 59185  # the tutorial's seed for picking unknown words
MANIFEST_COLUMNS = {
    "path": "object",
    "word": "object",
    "label": "object",
    "speaker": "object",
    "partition": "object",
    "source": "object",
    "sample_rate": "int64",
    "channels": "int64",
    "bits": "int64",
    "num_samples": "int64",
    "duration_ms": "float64",
    "peak": "float64",
    "rms": "float64",
    "sha1": "object",
    "origin": "object",  # "data_dir" or the extra source's name (data.sources)
    "weight": "float64",  # how much the row counts in training batches (its source's weight)
}
# What the later stages read; the descriptive rest (rms, sha1, ...) is checked by `kws validate`.
READ_COLUMNS = ["path", "word", "label", "speaker", "partition", "source"]
MAIN_ORIGIN = "data_dir"
REJECTED_COLUMNS = ["path", "word", "reason"]


@dataclass
class ManifestResult:
    manifest: pd.DataFrame
    rejected: pd.DataFrame
    background: pd.DataFrame  # usable _background_noise_ files
    disagreements: pd.DataFrame  # shipped lists vs which_set
    used_lists: bool
    # per-voice quality gate counts of a synthetic data_dir (its quality.csv), else empty
    synth_quality: pd.DataFrame | None = None


def _row(rel: str, word: str, info: WavInfo) -> dict:
    return {
        "path": rel,
        "word": word,
        "speaker": speaker_of(rel),
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "bits": info.bits,
        "num_samples": info.num_samples,
        "duration_ms": info.duration_ms,
        "peak": info.peak,
        "rms": info.rms,
        "sha1": info.sha1,
    }


def _wavs_in(folder: Path) -> list[Path]:
    """The folder's .wav files; an unreadable folder is an error (glob would just say none)."""
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise DataError(
            f"{folder} cannot be read ({e.strerror}); fix its permissions (chmod -R u+rX) or "
            "move it out of data_dir"
        ) from None
    return sorted(folder / n for n in names if n.endswith(".wav"))


def scan_clips(
    data_dir: Path,
    sample_rate: int,
    progress: bool = True,
    clip_duration_ms: float | None = None,
    duration_tolerance_ms: float = 0.0,
) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """Inspect every `<word>/*.wav` and `_background_noise_/*.wav` under data_dir.

    Returns (clip rows, background rows, rejected rows, word folders found). Never raises for a
    bad file: it becomes a rejected row with the reason. With `clip_duration_ms`, a word clip
    longer than it plus `duration_tolerance_ms` is rejected too (background files may be long).
    """
    if not data_dir.is_dir():
        raise DataError(
            f"data_dir {data_dir} does not exist; set data_url (e.g. synthetic) or point data_dir "
            "at a folder with one sub-folder per word"
        )
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, w) for w in folders for f in _wavs_in(w)]
    clips: list[dict] = []
    background: list[dict] = []
    rejected: list[dict] = []
    longest = None if clip_duration_ms is None else clip_duration_ms + duration_tolerance_ms
    for path, folder in tqdm(files, desc="inspect clips", unit="file", disable=not progress):
        word = folder.name.lower()
        rel = path.relative_to(data_dir).as_posix()
        try:
            info = inspect_wav(path, sample_rate)
        except WavError as e:
            rejected.append({"path": rel, "word": word, "reason": str(e)})
            continue
        if word == BACKGROUND_NOISE_DIR:
            background.append(_row(rel, word, info))
            continue
        if longest is not None and info.duration_ms > longest:
            # A long recording in a word folder is not one utterance of the word: training
            # would keep its first clip_duration_ms and label that as the word.
            reason = (
                f"{info.duration_ms:.6g} ms long, expected a {clip_duration_ms:g} ms clip "
                f"(at most {longest:g} ms)"
            )
            rejected.append({"path": rel, "word": word, "reason": reason})
            continue
        clips.append(_row(rel, word, info))
    words = sorted({f.name.lower() for f in folders} - {BACKGROUND_NOISE_DIR})
    return clips, background, rejected, words


def assign_partitions(
    clips: list[dict], data_dir: Path, validation_percentage: float, testing_percentage: float
) -> tuple[list[dict], pd.DataFrame, bool]:
    """Set each row's partition: the shipped lists where present, which_set otherwise."""
    lists = read_partition_lists(data_dir)
    disagreements = []
    for row in clips:
        hashed = which_set(row["path"], validation_percentage, testing_percentage)
        listed = lists.get(row["path"]) if lists is not None else None
        if lists is not None:
            # Files missing from both lists are training in v0.02, unless which_set says a
            # held-out speaker: keep that so newly added files never leak a speaker.
            listed = listed or ("training" if hashed == "training" else None)
        row["partition"] = listed or hashed
        if listed is not None and listed != hashed:
            disagreements.append({"path": row["path"], "listed": listed, "which_set": hashed})
    return clips, pd.DataFrame(disagreements, columns=["path", "listed", "which_set"]), bool(lists)


def add_silence_and_unknown(
    clips: list[dict],
    wanted_words: list[str],
    background: list[dict],
    silence_percentage: float,
    unknown_percentage: float,
    sample_rate: int,
    clip_duration_ms: int,
) -> list[dict]:
    """Label rows as the tutorial does: wanted words keep their word, a seeded sample of the
    other words becomes `_unknown_`, and `_silence_` rows are added per partition."""
    rng = random.Random(RANDOM_SEED)
    wanted = set(wanted_words)
    by_set: dict[str, list[dict]] = {p: [] for p in PARTITIONS}
    unknown: dict[str, list[dict]] = {p: [] for p in PARTITIONS}
    for row in sorted(clips, key=lambda r: r["path"]):
        (by_set if row["word"] in wanted else unknown)[row["partition"]].append(row)
    rows: list[dict] = []
    noise_paths = [b["path"] for b in background]
    for partition in ("validation", "testing", "training"):  # the tutorial's order
        words = by_set[partition]
        for row in words:
            rows.append({**row, "label": row["word"], "source": "clip"})
        silence_size = math.ceil(len(words) * silence_percentage / 100)
        for i in range(silence_size):
            # Silence is cut from background noise later; the row names the file to cut from.
            rows.append(
                {
                    "path": noise_paths[i % len(noise_paths)] if noise_paths else "",
                    "word": SILENCE_LABEL,
                    "label": SILENCE_LABEL,
                    "speaker": "",
                    "partition": partition,
                    "source": "silence",
                    "sample_rate": sample_rate,
                    "channels": 1,
                    "bits": 16,
                    "num_samples": sample_rate * clip_duration_ms // 1000,
                    "duration_ms": float(clip_duration_ms),
                    "peak": 0.0,
                    "rms": 0.0,
                    "sha1": "",
                    "origin": MAIN_ORIGIN,
                    "weight": 1.0,
                }
            )
        pool = unknown[partition]
        rng.shuffle(pool)
        unknown_size = math.ceil(len(words) * unknown_percentage / 100)
        for row in pool[:unknown_size]:
            rows.append({**row, "label": UNKNOWN_LABEL, "source": "clip"})
    return rows


def source_names(dirs: list[Path]) -> list[str]:
    """A unique short name per extra source folder (its folder name, then _2, _3, ...)."""
    names: list[str] = []
    for d in dirs:
        name, n = d.name or "source", 2
        while name in names or name == MAIN_ORIGIN:
            name, n = f"{d.name}_{n}", n + 1
        names.append(name)
    return names


def check_sources(sources: list[tuple[Path, SourceSpec]]) -> None:
    """A one-line DataError for a missing source folder or a split=lists without the lists."""
    for folder, spec in sources:
        if not folder.is_dir():
            raise DataError(
                f"data.sources: {folder} is not a folder; give labelled folders "
                "(<word>/*.wav) as DIR[:WEIGHT[:SPLIT]], or '' for none"
            )
        if spec.split == "lists" and read_partition_lists(folder) is None:
            raise DataError(
                f"data.sources: {folder} has no validation_list.txt / testing_list.txt for "
                "split 'lists'; add them or use split hash"
            )


def _source_clips(
    cfg: DataConfig, folder: Path, spec: SourceSpec, name: str, progress: bool
) -> tuple[list[dict], list[dict]]:
    """Clip rows of one extra source (absolute paths, split per its spec) and its rejects."""
    clips, _, rejected, _ = scan_clips(
        folder, cfg.sample_rate, progress, cfg.clip_duration_ms, cfg.duration_tolerance_ms
    )
    # `_silence_` folders (the official test-set layout) hold noise, not words: training makes
    # its silence from background noise, so these clips are left out.
    clips = [c for c in clips if c["word"] != SILENCE_LABEL]
    if spec.split in ("hash", "lists"):
        if spec.split == "hash":
            for c in clips:
                c["partition"] = which_set(
                    c["path"], cfg.validation_percentage, cfg.testing_percentage
                )
        else:
            clips, _, _ = assign_partitions(
                clips, folder, cfg.validation_percentage, cfg.testing_percentage
            )
    else:
        for c in clips:
            c["partition"] = spec.split
    for c in clips:
        c["path"] = (folder / c["path"]).as_posix()
        c["origin"], c["weight"] = name, spec.weight
    for r in rejected:
        r["path"] = (folder / r["path"]).as_posix()
    return clips, rejected


def build_manifest(
    cfg: DataConfig,
    data_dir: Path,
    progress: bool = True,
    sources: list[tuple[Path, SourceSpec]] | None = None,
) -> ManifestResult:
    """Scan data_dir (and any extra `sources`) and build the manifest; DataError if a wanted
    word has no usable clip. Extra-source rows have absolute paths, their source's name in
    `origin` and its weight in `weight`."""
    sources = sources or []
    check_sources(sources)
    clips, background, rejected, words = scan_clips(
        data_dir, cfg.sample_rate, progress, cfg.clip_duration_ms, cfg.duration_tolerance_ms
    )
    for c in clips:
        c["origin"], c["weight"] = MAIN_ORIGIN, 1.0
    extra: list[dict] = []
    names = source_names([folder for folder, _ in sources])
    for (folder, spec), name in zip(sources, names, strict=True):
        more, bad = _source_clips(cfg, folder, spec, name, progress)
        if not more:
            raise DataError(
                f"data.sources: {folder} has no usable clips ({len(bad)} rejected); it needs "
                "<word>/*.wav files of clip_duration_ms at sample_rate"
            )
        extra += more
        rejected += bad
    wanted = cfg.wanted_word_list
    usable = {c["word"] for c in clips + extra}
    for word in wanted:
        if word in usable:
            continue
        bad = [r for r in rejected if r["word"] == word]
        if bad:
            raise DataError(
                f"wanted word {word!r}: all {len(bad)} files in {data_dir / word} were rejected "
                f"(first: {bad[0]['path']}: {bad[0]['reason']}); fix the files or drop the word"
            )
        raise DataError(
            f"wanted word {word!r} has no clips in {data_dir} (found: {', '.join(words) or 'none'})"
            "; fix wanted_words or add the folder"
        )
    clips, disagreements, used_lists = assign_partitions(
        clips, data_dir, cfg.validation_percentage, cfg.testing_percentage
    )
    rows = add_silence_and_unknown(
        clips + extra,
        wanted,
        background,
        cfg.silence_percentage,
        cfg.unknown_percentage,
        cfg.sample_rate,
        cfg.clip_duration_ms,
    )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(MANIFEST_COLUMNS)
    manifest = manifest.sort_values(["partition", "label", "path"], kind="stable")
    return ManifestResult(
        manifest=manifest.reset_index(drop=True),
        rejected=pd.DataFrame(rejected, columns=REJECTED_COLUMNS),
        background=pd.DataFrame(background),
        disagreements=disagreements,
        used_lists=used_lists,
        synth_quality=_synth_quality(data_dir),
    )


def _synth_quality(data_dir: Path) -> pd.DataFrame | None:
    path = data_dir / "quality.csv"
    try:
        return pd.read_csv(path) if path.is_file() else None
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def label_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Clips per label (rows) and partition (columns), with totals."""
    table = pd.crosstab(
        manifest["label"], manifest["partition"], margins=True, margins_name="total"
    )
    cols = [p for p in PARTITIONS if p in table.columns] + ["total"]
    return table[cols]


def origin_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Clip rows per origin (data_dir and each data.sources folder) and partition, + weight."""
    clips = manifest[manifest["source"] == "clip"]
    table = pd.crosstab(clips["origin"], clips["partition"])
    table = table.reindex(columns=[p for p in PARTITIONS], fill_value=0)
    table["weight"] = clips.groupby("origin")["weight"].first()
    return table


def write_manifest(result: ManifestResult, out_dir: Path) -> dict[str, Path]:
    """Write manifest.parquet, rejected.parquet/.csv, background.csv, disagreements and summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "manifest": out_dir / MANIFEST_FILE,
        "rejected": out_dir / "rejected.parquet",
        "rejected_csv": out_dir / "rejected.csv",
        "background": out_dir / "background.csv",
        "disagreements": out_dir / "partition_disagreements.csv",
        "summary": out_dir / "manifest_summary.json",
    }
    summary = _summary(result)
    with atomic_outputs(out_dir, "manifest") as out:  # all six replaced as one
        result.manifest.to_parquet(out.path(paths["manifest"]), index=False)
        result.rejected.to_parquet(out.path(paths["rejected"]), index=False)
        result.rejected.to_csv(out.path(paths["rejected_csv"]), index=False)
        result.background.to_csv(out.path(paths["background"]), index=False)
        result.disagreements.to_csv(out.path(paths["disagreements"]), index=False)
        out.path(paths["summary"]).write_text(json.dumps(summary, indent=2, default=int))
    return paths


def _summary(result: ManifestResult) -> dict:
    counts = label_counts(result.manifest)
    summary = {
        "clips": int((result.manifest["source"] == "clip").sum()),
        "rows": len(result.manifest),
        "rejected": len(result.rejected),
        "rejected_by_reason": result.rejected["reason"]
        .str.replace(r"\d+", "N", regex=True)
        .value_counts()
        .to_dict(),
        "background_files": len(result.background),
        "used_shipped_lists": result.used_lists,
        "list_disagreements": len(result.disagreements),
        "counts": {label: row.to_dict() for label, row in counts.iterrows()},
        "origins": origin_counts(result.manifest).to_dict(orient="index"),
    }
    if result.synth_quality is not None:
        # keyed by voice (not a list) so `dvc metrics show/diff` can read every number
        q = result.synth_quality
        summary["synthetic_quality"] = {
            f"{row['family']}:{row['voice']}": {k: row[k] for k in q.columns[2:]}
            for row in q.to_dict(orient="records")
        }
    return summary


def load_manifest(path: Path) -> pd.DataFrame:
    await_commit(path.parent, "reading the manifest")
    if not path.exists():
        raise DataError(f"manifest {path} not found; run `kws manifest` first")
    try:
        manifest = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(
            f"manifest {path} is unreadable ({e}); rebuild it with `kws manifest`"
        ) from None
    missing = [c for c in READ_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataError(
            f"manifest {path} lacks column(s) {', '.join(missing)} (edited, or not written by "
            "kws); rebuild it with `kws manifest`"
        )
    # Manifests from before data.sources: every row came from data_dir, weight 1.
    if "origin" not in manifest.columns:
        manifest["origin"] = MAIN_ORIGIN
    if "weight" not in manifest.columns:
        manifest["weight"] = 1.0
    return manifest


def manifest_path(params: Params) -> Path:
    """Where `kws manifest` writes the manifest of these params."""
    return params.layout.manifest
