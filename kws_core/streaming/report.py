"""The streaming evaluation: test streams, the tutorial's accuracy, FA/h, a DET curve, a report.

`streaming_eval` is what `kws stream-eval`, the DVC `stream_eval` stage and the Dagster
`streaming_eval_report` asset call. It

1. generates (or reuses) two streams from the test partition: a keyword stream of
   `stream_duration_s` (a word every ~`word_gap_ms`, `stream_unknown_fraction` unknown words,
   background noise) and a negative-only stream of `negative_duration_s` (noise and unknown
   words only);
2. runs the exported model over both every `clip_stride_ms` (with the `stream.engine` that
   `resolve_engine` picks, named in the report) and feeds RecognizeCommands;
3. scores the keyword stream like the tutorial (matched / correct / wrong / false-positive %)
   plus the false-reject rate, and the negative stream for false accepts per hour;
4. sweeps the detection threshold (FRR on the keyword stream against FA/h on the negative one),
   picks the lowest threshold meeting `target_fa_per_hour`, and writes `report.json`,
   `report.md`, `det_curve.png` and `det_curve.csv` into `stream_dir`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kws_core.config import Params
from kws_core.export.loader import ExportedModel
from kws_core.infra.atomic import atomic_write_text, read_json_object
from kws_core.infra.commit import atomic_outputs
from kws_core.infra.errors import ConfigError, DataError
from kws_core.streaming.generate import (
    folder_manifest,
    generate_stream,
    noise_files,
    write_stream,
)
from kws_core.streaming.recognize import (
    Detection,
    check_decoder_settings,
    recognize_settings,
    recognize_stream,
)
from kws_core.streaming.run import StreamScores, score_stream
from kws_core.streaming.score import (
    StreamingStats,
    Truth,
    read_ground_truth,
    score_detections,
    sweep_thresholds,
    threshold_for_target,
)

THRESHOLDS = np.round(np.arange(0.02, 1.0, 0.02), 2)
STREAMS = {False: "streaming_test", True: "streaming_negative"}
# The key that makes a `<stream>.json` ours: every stamp this module writes has it.
STAMP_KEY = "seed"


@dataclass
class StreamFiles:
    wav: Path
    truth: Path
    reused: bool = False


def _generation_settings(params: Params, manifest: pd.DataFrame, negative: bool) -> dict:
    s = params.stream
    rows = manifest[manifest["partition"] == "testing"]
    return {
        "negative": negative,
        "duration_s": s.negative_duration_s if negative else s.stream_duration_s,
        "word_gap_ms": s.word_gap_ms,
        "unknown_fraction": 1.0 if negative else s.stream_unknown_fraction,
        "background_volume": params.augment.background_volume,
        "seed": s.stream_seed + (1 if negative else 0),
        "wanted_words": params.data.wanted_word_list,
        "sample_rate": params.data.sample_rate,
        # The test clips' content: a new data set (or words_dir) gives new streams.
        "test_clips": hashlib.sha1("".join(sorted(rows["sha1"].astype(str))).encode()).hexdigest(),
        "words_dir": str(params.resolve(s.words_dir)) if s.words_dir else "",
        "noise": _background_files(params),
    }


def _word_source(params: Params) -> tuple[pd.DataFrame, Path]:
    """(manifest rows, folder their paths are relative to): stream.words_dir or the data set."""
    if params.stream.words_dir:
        folder = params.resolve(params.stream.words_dir)
        return folder_manifest(folder, params.data.wanted_word_list), folder
    from kws_core.data.manifest import load_manifest, manifest_path

    return load_manifest(manifest_path(params)), params.layout.data_dir


def generate_test_stream(
    params: Params,
    negative: bool = False,
    wav: Path | None = None,
    truth: Path | None = None,
) -> StreamFiles:
    """Write a test stream and its ground truth (reused when the same settings made it)."""
    manifest, words_root = _word_source(params)
    out_dir = params.layout.stream_dir
    name = STREAMS[negative]
    wav = wav or out_dir / f"{name}.wav"
    truth = truth or out_dir / f"{name}_labels.txt"
    settings = _generation_settings(params, manifest, negative)
    stamp = wav.with_suffix(".json")
    _check_stream_outputs(wav, truth, stamp, words_root, settings["noise"])
    if wav.exists() and truth.exists() and _read_stamp(stamp) == settings:
        return StreamFiles(wav, truth, reused=True)
    background = settings["noise"]
    samples, rows = generate_stream(
        manifest,
        words_root,
        background,
        params.data.wanted_word_list,
        duration_s=settings["duration_s"],
        word_gap_ms=settings["word_gap_ms"],
        unknown_fraction=settings["unknown_fraction"],
        background_volume=settings["background_volume"] if background else 0.0,
        sample_rate=settings["sample_rate"],
        seed=settings["seed"],
        keywords=not negative,
    )
    # An unfinished stamp while writing: a kill leaves files that are still ours (the stamp
    # says so) but not reused (their settings are not in it).
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps({STAMP_KEY: None, "writing": True}))
    write_stream(wav, truth, samples, rows, settings["sample_rate"])
    atomic_write_text(stamp, json.dumps(settings, indent=2))
    return StreamFiles(wav, truth)


def _read_stamp(stamp: Path) -> dict | None:
    """The settings a stream was written with, None when `stamp` is missing or not ours."""
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and STAMP_KEY in data else None


def _check_stream_outputs(
    wav: Path, truth: Path, stamp: Path, words_root: Path, noise: list[str]
) -> None:
    """Refuse in one line to write over a file this command did not write, or into its inputs."""
    wav, truth, stamp = (p.resolve() for p in (wav, truth, stamp))
    if len({wav, truth, stamp}) < 3:
        raise ConfigError(
            f"stream outputs collide: {wav.name}, {truth.name} and {stamp.name} must be three "
            "files; give --output_labels a different name"
        )
    root = words_root.resolve()
    inputs = {(root / n).resolve() if not Path(n).is_absolute() else Path(n) for n in noise}
    for out in (wav, truth, stamp):
        if out in inputs or out.is_relative_to(root):
            raise ConfigError(
                f"{out} is inside the stream's input ({root}); write the stream elsewhere "
                "(--output_wav, or stream.stream_dir)"
            )
        if out.is_dir():
            raise ConfigError(f"{out} is a folder; give --output_wav/--output_labels a file name")
    ours = _read_stamp(stamp) is not None
    for out in (wav, truth, stamp):
        if out.exists() and not ours:
            raise ConfigError(
                f"{out} exists and was not written by generate-streaming-test-wav (no "
                f"{stamp.name} of ours beside it); move it away or choose another --output_wav"
            )


def _background_files(params: Params) -> list[str]:
    """Noise files: every .wav of stream.noise_dir, else the manifest's background.csv."""
    if params.stream.noise_dir:
        return noise_files(params.resolve(params.stream.noise_dir))
    listing = params.layout.background_listing
    if not listing.exists():
        return []
    # Relative to data_dir (generate_stream resolves them), as background.csv lists them.
    return list(pd.read_csv(listing)["path"].astype(str))


@dataclass
class StreamResult:
    stats: StreamingStats
    detections: list[Detection]
    scores: StreamScores
    truth: Truth = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what reading the WAV did (resampled ...)


def stream_accuracy(
    model: ExportedModel,
    wav: Path,
    truth_path: Path,
    params: Params,
    threshold: float | None = None,
    progress: bool = False,
) -> StreamResult:
    """The tutorial's test_streaming_accuracy on one stream with the configured settings.

    Settings that can never detect a word, and ground truth the model cannot match (labels it
    lacks, times past the stream's end), are one-line errors before the model runs.
    """
    from kws_core.features.spectrogram import load_any_wav

    s = params.stream
    check_decoder_settings(s, model.spec.clip_duration_ms)
    audio = load_any_wav(Path(wav), model.spec.sample_rate)
    stream_ms = 1000 * len(audio.samples) / audio.sample_rate
    truth = read_ground_truth(truth_path, model.labels, stream_ms, wav)
    scored = score_stream(
        model, audio.samples, s.clip_stride_ms, progress=progress, engine=s.engine
    )
    settings = recognize_settings(s)
    if threshold is not None:
        settings["detection_threshold"] = threshold
    found = recognize_stream(scored.scores, scored.times_ms, model.labels, **settings)
    stats = score_detections(found, truth, scored.audio_seconds, s.time_tolerance_ms)
    return StreamResult(stats, found, scored, truth, audio.notes)


@dataclass
class StreamReport:
    out_dir: Path
    report: dict
    files: dict[str, Path] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        r = self.report
        pos, neg, target = r["keyword_stream"], r["negative_stream"], r["target"]
        lines = [
            f"keyword stream ({pos['duration_s'] / 60:.0f} min, {pos['ground_truth_words']} words,"
            f" threshold {r['settings']['detection_threshold']}): {pos['matched_pct']:.1f}% "
            f"matched, {pos['correct_pct']:.1f}% correct, {pos['wrong_pct']:.1f}% wrong, "
            f"{pos['false_positive_pct']:.1f}% false positive",
            f"false-reject rate {_pct(pos['false_reject_rate'])}; false accepts per hour "
            f"{neg['false_accepts_per_hour']:.2f} on the {neg['duration_s'] / 3600:.2g} h "
            "negative stream",
        ]
        if target["threshold"] is None:
            lines.append(f"target {target['fa_per_hour']} FA/h: {target['reason']}")
        else:
            lines.append(
                f"target {target['fa_per_hour']} FA/h: threshold {target['threshold']:.2f} "
                f"(false-reject rate there {_pct(target['false_reject_rate'])})"
            )
        lines.append(
            f"real-time factor {r['real_time_factor']:.4f} ({r['model']}, {r['engine']} engine)"
        )
        return lines


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def streaming_eval(
    params: Params,
    graph: Path | None = None,
    progress: bool = True,
    log_mlflow: bool = True,
) -> StreamReport:
    """Generate/reuse the streams, evaluate the export at `graph`, write the report files."""
    from kws_core.infra.plots import plot_det_curve

    s = params.stream
    export_dir = params.layout.export_dir
    graph = Path(graph) if graph else export_dir / "saved_model"
    model = ExportedModel.load(graph)
    check_decoder_settings(s, model.spec.clip_duration_ms)  # before an hour of stream is made
    pos_files = generate_test_stream(params, negative=False)
    neg_files = generate_test_stream(params, negative=True)
    pos = stream_accuracy(model, pos_files.wav, pos_files.truth, params, progress=progress)
    neg = stream_accuracy(model, neg_files.wav, neg_files.truth, params, progress=progress)
    if pos.stats.keyword_words == 0:
        raise DataError(f"{pos_files.truth}: the keyword stream has no keywords; lengthen it")

    settings = recognize_settings(s)
    del settings["detection_threshold"]
    sweep_args = dict(settings, time_tolerance_ms=s.time_tolerance_ms)
    frr = sweep_thresholds(
        pos.scores.scores,
        pos.scores.times_ms,
        model.labels,
        pos.truth,
        pos.scores.audio_seconds,
        THRESHOLDS,
        **sweep_args,
    )
    fa = sweep_thresholds(
        neg.scores.scores,
        neg.scores.times_ms,
        model.labels,
        neg.truth,
        neg.scores.audio_seconds,
        THRESHOLDS,
        **sweep_args,
    )
    curve = pd.DataFrame(
        {
            "threshold": frr["threshold"],
            "false_accepts_per_hour": fa["false_accepts_per_hour"].to_numpy(),
            "false_reject_rate": frr["false_reject_rate"].to_numpy(),
            "correct_pct": frr["correct_pct"].to_numpy(),
            "keyword_stream_false_accepts_per_hour": frr["false_accepts_per_hour"].to_numpy(),
        }
    )
    choice = threshold_for_target(curve, s.target_fa_per_hour)
    at_target = None
    if choice.threshold is not None:
        at_target = float(
            curve.loc[curve["threshold"] == choice.threshold, "false_reject_rate"].iloc[0]
        )

    out = params.layout.stream_dir
    out.mkdir(parents=True, exist_ok=True)
    seconds = pos.scores.seconds + neg.scores.seconds
    audio = pos.scores.audio_seconds + neg.scores.audio_seconds
    report = {
        "model": str(graph),
        "architecture": model.meta.get("architecture"),
        "settings": {
            **recognize_settings(s),
            "clip_stride_ms": s.clip_stride_ms,
            "time_tolerance_ms": s.time_tolerance_ms,
        },
        "keyword_stream": pos.stats.to_dict() | {"wav": str(pos_files.wav)},
        "negative_stream": neg.stats.to_dict() | {"wav": str(neg_files.wav)},
        "target": {
            "fa_per_hour": s.target_fa_per_hour,
            "threshold": choice.threshold,
            "false_reject_rate": at_target,
            "reason": choice.reason,
        },
        "engine": pos.scores.engine,
        "real_time_factor": seconds / audio,
        "processing_s": seconds,
        "audio_s": audio,
    }
    files = {
        "report_json": params.layout.stream_report,
        "report_md": out / "report.md",
        "det_png": out / "det_curve.png",
        "det_csv": out / "det_curve.csv",
    }
    result = StreamReport(out, report, files)
    with atomic_outputs(out, "stream-eval") as staged:  # the report's files replaced as one
        curve.to_csv(staged.path(files["det_csv"]), index=False)
        plot_det_curve(
            curve,
            staged.path(files["det_png"]),
            operating=s.detection_threshold,
            target_fa_per_hour=s.target_fa_per_hour,
            title=f"{report['architecture']}: streaming DET curve",
        )
        staged.path(files["report_md"]).write_text(_markdown(result, curve))
        staged.path(files["report_json"]).write_text(json.dumps(report, indent=2))
        staged.path(params.layout.stream_summary).write_text(
            json.dumps(summarize(report), indent=2)
        )
    if log_mlflow:
        _log_to_training_run(params, result)
    return result


def summarize(report: dict) -> dict[str, float]:
    """The report's headline numbers, rounded, for `dvc metrics show` (report.json has the rest)."""
    pos, neg, target = report["keyword_stream"], report["negative_stream"], report["target"]
    values = {
        "correct_pct": (pos["correct_pct"], 2),
        "false_reject_rate": (pos["false_reject_rate"], 4),
        "false_accepts_per_hour": (neg["false_accepts_per_hour"], 2),
        "real_time_factor": (report["real_time_factor"], 4),
        "threshold_at_target_fa": (target["threshold"], 2),
    }
    # no keywords, or no threshold meets the target: the number is left out, not NaN or null
    return {
        k: round(float(v), digits)
        for k, (v, digits) in values.items()
        if v is not None and math.isfinite(v)
    }


def _markdown(result: StreamReport, curve: pd.DataFrame) -> str:
    r = result.report
    pos, neg = r["keyword_stream"], r["negative_stream"]
    lines = [
        f"# Streaming evaluation: {r['architecture']}",
        "",
        f"Model `{r['model']}`; settings: "
        + ", ".join(f"{k} {v}" for k, v in r["settings"].items()),
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| keyword stream | {pos['duration_s'] / 60:.1f} min, {pos['ground_truth_words']} words"
        f" ({pos['keyword_words']} keywords) |",
        f"| matched / correct / wrong / false positive | {pos['matched_pct']:.1f}% / "
        f"{pos['correct_pct']:.1f}% / {pos['wrong_pct']:.1f}% / {pos['false_positive_pct']:.1f}% |",
        f"| false-reject rate | {_pct(pos['false_reject_rate'])} |",
        f"| false accepts per hour (negative stream, {neg['duration_s'] / 3600:.2g} h) | "
        f"{neg['false_accepts_per_hour']:.2f} |",
        f"| threshold for {r['target']['fa_per_hour']} FA/h | "
        + (
            f"{r['target']['threshold']:.2f} (FRR {_pct(r['target']['false_reject_rate'])})"
            if r["target"]["threshold"] is not None
            else r["target"]["reason"]
        )
        + " |",
        f"| real-time factor | {r['real_time_factor']:.4f} ({r['engine']} engine) |",
        "",
        "![DET curve](det_curve.png)",
        "",
        "| threshold | FA/h | FRR |",
        "| --- | --- | --- |",
    ]
    for row in curve.iloc[::4].itertuples():
        lines.append(
            f"| {row.threshold:.2f} | {row.false_accepts_per_hour:.2f} | "
            f"{100 * row.false_reject_rate:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def read_stream_report(params: Params) -> dict:
    """The last `kws stream-eval`'s report.json, or a one-line DataError saying what to run."""
    return read_json_object(
        params.layout.stream_report,
        "run `kws stream-eval` first",
        "run `kws stream-eval` again",
    )


def _log_to_training_run(params: Params, result: StreamReport) -> None:
    """Attach the report to the MLflow run that trained the model (from its metrics.json)."""
    from kws_core.infra.errors import KwsError
    from kws_core.training.compare import champion_params
    from kws_core.training.report import read_metrics

    try:
        chosen = champion_params(params)  # with train.architectures: the exported champion
        run_id = str(read_metrics(chosen).get("run_id", ""))
    except KwsError:
        return
    if not run_id:
        return
    from kws_core.training.tracking import log_to_run

    r = result.report
    metrics = {
        "stream_correct_pct": r["keyword_stream"]["correct_pct"],
        "stream_false_accepts_per_hour": r["negative_stream"]["false_accepts_per_hour"],
        "stream_real_time_factor": r["real_time_factor"],
    }
    if r["keyword_stream"]["false_reject_rate"] is not None:
        metrics["stream_false_reject_rate"] = r["keyword_stream"]["false_reject_rate"]
    if r["target"]["threshold"] is not None:
        metrics["stream_threshold_at_target"] = r["target"]["threshold"]
    log_to_run(params, run_id, metrics, list(result.files.values()), "streaming")
