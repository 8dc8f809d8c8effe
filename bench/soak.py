"""Soak: the streaming recognizer over hours of audio generated block by block, in bounded memory.

    .venv/bin/python bench/soak.py --hours 2 --out bench/results/soak.json

The stream never exists whole: each `--block_s` block is generated, scored by
`kws_core.streaming.run.BlockScorer` (the same scores as `score_stream` on the whole stream,
keeping only the tail the next windows need) and the results go one at a time through
`RecognizeCommands` with the params.yaml `stream:` settings. Blocks are what
`kws_core.streaming.generate.generate_stream` makes for the test stream (words of the testing
partition every ~3 s over the background noise files, 30% `_unknown_`), a new seed per block,
so detections can be scored against the ground truth; without a manifest, noise with tone
bursts. The model is `--graph` (default: the `make run` export); if it is missing, the default
architecture's untrained weights are exported to a temporary folder (speed and memory only).

Prints one summary line: hours of audio, processing seconds (scoring + recognizer, without
generation), real-time factor, detections, peak RSS (`ru_maxrss`, TensorFlow included) and the
RSS after the first block, half way and at the end (level = bounded). Appends the run to `--out`
with the RSS at every tenth of the stream.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from results_log import append_run

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)
from kws_core.export.writer import export_untrained

Block = tuple[np.ndarray, list[tuple[str, int]]]  # samples, ground truth (label, stream ms)


def _rss_mb() -> float | None:
    """Current resident set size (Linux /proc; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize() / 2**20


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def word_blocks(params, labels: list[str], n_blocks: int, block_s: float, seed: int):
    """Test-stream blocks (words over background noise) and their ground truth, or None
    when there is no manifest to take words from."""
    import pandas as pd

    from kws_core.data.manifest import load_manifest
    from kws_core.infra.errors import DataError
    from kws_core.steps import manifest_path
    from kws_core.streaming.generate import generate_stream

    try:
        manifest = load_manifest(manifest_path(params))
    except DataError:
        return None
    listing = params.resolve(params.data.manifest_dir) / "background.csv"
    background = list(pd.read_csv(listing)["path"].astype(str)) if listing.exists() else []
    s = params.stream

    def blocks() -> Iterator[Block]:
        for k in range(n_blocks):
            samples, truth = generate_stream(
                manifest,
                params.resolve(params.data.data_dir),
                background,
                labels,
                duration_s=block_s,
                word_gap_ms=s.word_gap_ms,
                unknown_fraction=s.stream_unknown_fraction,
                background_volume=params.augment.background_volume if background else 0.0,
                sample_rate=params.data.sample_rate,
                seed=seed + k,
            )
            offset = round(k * block_s * 1000)
            yield samples, [(label, t + offset) for label, t in truth]

    return blocks()


def tone_blocks(n_blocks: int, block_s: float, rate: int, seed: int) -> Iterator[Block]:
    """Noise with a 0.5 s tone burst every 3 s (no words, no ground truth)."""
    rng = np.random.default_rng(seed)
    n = round(block_s * rate)
    burst = np.arange(rate // 2) / rate
    for _ in range(n_blocks):
        x = 0.05 * rng.standard_normal(n)
        for start in range(rate, n - rate // 2, 3 * rate):
            x[start : start + rate // 2] += 0.3 * np.sin(2 * np.pi * rng.uniform(200, 1500) * burst)
        yield x.astype(np.float32), []


def soak(model, params, blocks: Iterator[Block]) -> dict:
    """Score and recognise block by block; only detections and ground truth are kept."""
    from kws_core.config import SILENCE_LABEL
    from kws_core.streaming.recognize import Detection, RecognizeCommands, recognize_settings
    from kws_core.streaming.run import BlockScorer

    scorer = BlockScorer(model, params.stream.clip_stride_ms)
    rc = RecognizeCommands(model.labels, **recognize_settings(params.stream))
    detections: list[Detection] = []
    truth: list[tuple[str, int]] = []
    windows, recognize_s, rss = 0, 0.0, []
    t_wall = time.perf_counter()
    for item in itertools.chain(blocks, [None]):  # one block at a time, then the end
        if item is None:
            scores, times = scorer.finish()
        else:
            samples, rows = item
            truth += rows
            scores, times = scorer.push(samples)
        t0 = time.perf_counter()
        for row, t in zip(scores, times.tolist(), strict=True):
            r = rc.process_latest_result(row, t)
            if r.is_new_command and r.found_command != SILENCE_LABEL:
                detections.append(Detection(t, r.found_command, r.score))
        recognize_s += time.perf_counter() - t0
        windows += len(times)
        rss.append(_rss_mb())
    return {
        "audio_s": scorer.audio_seconds,
        "windows": windows,
        "score_s": scorer.seconds,
        "recognize_s": recognize_s,
        "wall_s": time.perf_counter() - t_wall,
        "detections": detections,
        "truth": truth,
        "rss_mb": rss,  # after each block, the end last
        "features_path": scorer.from_features,
    }


def main() -> None:
    from kws_core.config import load_params
    from kws_core.export.loader import ExportedModel
    from kws_core.streaming.score import score_detections

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graph", default="results/frozen/model/saved_model")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--block_s", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--stream", choices=["words", "tones"], default="words")
    ap.add_argument("--out", default="bench/results/soak.json")
    args = ap.parse_args()
    params = load_params(args.params if Path(args.params).exists() else None)
    n_blocks = max(round(args.hours * 3600 / args.block_s), 1)

    with tempfile.TemporaryDirectory() as tmp:
        graph, trained = Path(args.graph), True
        if not graph.exists():
            print(f"{graph} not found (run `make run`): using an untrained model instead")
            graph, trained = export_untrained(Path(tmp)), False
        model = ExportedModel.load(graph)
        rss_model_mb = _rss_mb()
        blocks = None
        if args.stream == "words":
            blocks = word_blocks(params, model.labels, n_blocks, args.block_s, args.seed)
            if blocks is None:
                print("no manifest (run `make run`): noise and tone bursts instead of words")
        kind = "words" if blocks is not None else "tones"
        if blocks is None:
            blocks = tone_blocks(n_blocks, args.block_s, model.spec.sample_rate, args.seed)
        run = soak(model, params, blocks)

    hours = run["audio_s"] / 3600
    processing = run["score_s"] + run["recognize_s"]
    rtf = processing / run["audio_s"]
    peak = _peak_rss_mb()
    rss = run["rss_mb"]
    half = rss[len(rss) // 2]
    stats = None
    if run["truth"]:
        stats = score_detections(
            run["detections"], run["truth"], run["audio_s"], params.stream.time_tolerance_ms
        )
    accuracy = ""
    if stats is not None:
        accuracy = (
            f" ({stats.correct} correct of {stats.keyword_words} keywords, "
            f"{stats.false_accepts_per_hour:.1f} false accepts/h)"
        )
    print(
        f"soak: {hours:.2f} h of audio ({kind}, {'trained' if trained else 'untrained'} model) "
        f"in {processing:.1f} s processing (score {run['score_s']:.1f} s, recognize "
        f"{run['recognize_s']:.1f} s; {run['wall_s']:.1f} s wall with generation), "
        f"RTF {rtf:.4f}, {len(run['detections'])} detections{accuracy}, peak RSS "
        f"{peak:.0f} MB (RSS {_mb(rss_model_mb)} MB with the model loaded, "
        f"{_mb(rss[0])} MB after the first block, {_mb(half)} MB half way, "
        f"{_mb(rss[-1])} MB at the end)",
        flush=True,
    )
    append_run(
        args.out,
        graph=str(args.graph) if trained else "untrained",
        stream=kind,
        hours=round(hours, 4),
        block_s=args.block_s,
        clip_stride_ms=params.stream.clip_stride_ms,
        features_path=run["features_path"],
        windows=run["windows"],
        processing_s=round(processing, 2),
        score_s=round(run["score_s"], 2),
        recognize_s=round(run["recognize_s"], 2),
        wall_s=round(run["wall_s"], 2),
        real_time_factor=round(rtf, 5),
        detections=len(run["detections"]),
        stats=stats.to_dict() if stats is not None else None,
        peak_rss_mb=round(peak, 1),
        rss_model_loaded_mb=_mb(rss_model_mb),
        rss_first_block_mb=_mb(rss[0]),
        rss_half_way_mb=_mb(half),
        rss_end_mb=_mb(rss[-1]),
        # every tenth of the stream, to see whether RSS levels off
        rss_tenths_mb=[_mb(rss[round(i * (len(rss) - 1) / 10)]) for i in range(11)],
    )


if __name__ == "__main__":
    main()
