"""`kws` command line: one verb per pipeline step, tutorial flag names as overrides.

kws synth-dataset [--speakers=20]      generate the synthetic Speech Commands set
kws dataset                            prepare data_dir from data_url (any source)
kws manifest                           build the partition manifest (Parquet)
kws validate                           run the Great Expectations suite on it
kws features                           compute or reuse the augmented feature cache
kws train / evaluate / freeze          train, score and export a model
kws label-wav / wav-to-spectrogram     use an export on WAV files, draw what the model sees
kws generate-streaming-test-wav        a long test stream with its ground truth
kws test-streaming-accuracy            score an export on a stream (tutorial numbers, FA/h)
kws stream-eval                        both streams, DET curve, report (JSON, markdown, PNG)
kws run-all                            all of the above, with a summary
kws demo [--graph M] [--port 8000]     a local web page: hear an export live (mic or WAV)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from kws_core.config import LEAF_KEYS, Params, load_params
from kws_core.infra.errors import KwsError, os_error_line


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors as every kws error: one line (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    common.add_argument(
        "--profile", help="YAML merged over params.yaml, e.g. profiles/tutorial.yaml"
    )
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser = _OneLineParser(
        prog="kws",
        description="Keyword spotting pipeline. Any params.yaml key can be overridden with "
        "--key=value using the tutorial's flag names, e.g. --wanted_words=yes,no.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    epilog = "Overrides: " + ", ".join(f"--{k}" for k in LEAF_KEYS if "." not in k)
    verbs = {
        "synth-dataset": "generate the synthetic Speech Commands data set (espeak-ng speakers)",
        "dataset": "prepare data_dir from data_url (synthetic, URL of a .tar.gz, or '' = as is)",
        "manifest": "scan the clips and write the partition manifest, rejected table and summary",
        "validate": "run the Great Expectations suite on the manifest (exit 1 if it fails)",
        "features": "compute or reuse the augmented feature cache (features.cache_dir) training "
        "reads",
        "train": "train model_architecture on the manifest (tutorial log lines, checkpoints, "
        "TensorBoard, MLflow run)",
        "evaluate": "score a checkpoint on a folder in the official test-set layout",
        "wav-to-spectrogram": "draw a WAV's spectrogram and the features the model sees (PNG)",
        "label-wav": "print the top labels of WAV files (or folders) with an exported model",
        "freeze": "export a checkpoint (start_checkpoint, default best) to SavedModel, TFLite "
        "float and int8 with the front end inside, or features_outside (output_file)",
        "generate-streaming-test-wav": "write a long test stream (words every ~word_gap_ms "
        "from the test partition over background noise) and its ground truth",
        "test-streaming-accuracy": "run an export over a stream every clip_stride_ms, feed "
        "RecognizeCommands and score it against the ground truth",
        "stream-eval": "keyword + negative streams, accuracy, false accepts per hour, DET curve "
        "and the streaming report (stream_dir)",
        "run-all": "dataset, manifest, validation, training, export and streaming evaluation "
        "end to end, then a summary",
        "demo": "a local web page (127.0.0.1) that runs an export live on the microphone or a "
        "dropped WAV: label tiles, scores, spectrogram, detections, decoder settings",
    }
    for name, help_ in verbs.items():
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog, parents=[common])
        if name == "synth-dataset":
            p.add_argument("--output_dir", help="write here instead of data_dir")
        if name == "evaluate":
            p.add_argument("--test_dir", required=True, help="one sub-folder per label")
            p.add_argument(
                "--checkpoint", default="best", help="best (default), latest or a ckpt prefix"
            )
        if name == "wav-to-spectrogram":
            p.add_argument("--input_wav", required=True, help="WAV file (any rate/channels)")
            p.add_argument("--output_png", required=True, help="PNG to write")
        if name == "label-wav":
            p.add_argument("--graph", required=True, help="saved_model folder or .tflite file")
            p.add_argument("--labels", required=True, help="labels.txt written by kws freeze")
            p.add_argument("--wav", required=True, nargs="+", help="WAV files or folders")
            p.add_argument("--how_many_labels", type=_positive_int, default=3)
        if name == "generate-streaming-test-wav":
            p.add_argument("--output_wav", help="default stream_dir/streaming_test.wav")
            p.add_argument("--output_labels", help="default: beside the WAV, _labels.txt")
            p.add_argument(
                "--negative",
                action="store_true",
                help="background and unknown words only (negative_duration_s), for FA/h",
            )
        if name == "test-streaming-accuracy":
            p.add_argument("--graph", required=True, help="saved_model folder or .tflite file")
            p.add_argument("--labels", help="labels.txt of the export (checked against it)")
            p.add_argument("--wav", required=True, help="the stream WAV")
            p.add_argument("--ground_truth", required=True, help="`label, time_ms` lines")
        if name == "stream-eval":
            p.add_argument("--graph", help="default: the saved_model of export.output_file")
        if name == "demo":
            p.add_argument(
                "--graph",
                help="default: export.output_file's model_streaming.tflite (kws freeze "
                "--streaming, the default), else its saved_model; or any clip model of an export",
            )
            p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
            p.add_argument("--port", type=int, default=8000, help="default 8000; 0 = any free")
            p.add_argument(
                "--max_clients", type=_positive_int, default=8, help="live streams at once"
            )
        if name in ("train", "freeze", "run-all", "stream-eval"):
            p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return parser


def _load(args: argparse.Namespace, overrides: list[str]) -> Params:
    bad = [o for o in overrides if not o.startswith("--")]
    if bad:
        raise KwsError(f"unexpected argument {bad[0]!r}; overrides look like --key=value")
    return load_params(args.params, overrides, profile=args.profile)


def cmd_synth_dataset(params: Params, args: argparse.Namespace) -> int:
    from kws_core.data.prepare import make_synthetic

    out = Path(args.output_dir) if args.output_dir else params.layout.data_dir
    t0 = time.perf_counter()
    raw = make_synthetic(params, out, progress=not args.no_progress, lock=True)
    verb = "reused" if raw.reused else "generated"
    print(f"{verb} {raw.n_files} clips in {raw.data_dir} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_dataset(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import dataset_step

    raw = dataset_step(params, progress=not args.no_progress)
    verb = "reused" if raw.reused else "prepared"
    print(f"{verb} {raw.source} data set: {raw.n_files} clips in {raw.data_dir}")
    return 0


def cmd_manifest(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import format_counts, format_rejected, format_sources, manifest_step

    out = manifest_step(params, progress=not args.no_progress)
    print(format_counts(out.result.manifest))
    print("\n".join(format_rejected(out.result.rejected)))
    print("\n".join(format_sources(out.result)))
    if out.result.used_lists:
        print(
            f"shipped partition lists used; {len(out.result.disagreements)} disagree with which_set"
        )
    print(f"manifest: {out.paths['manifest']}")
    return 0


def cmd_validate(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import validate_step

    report = validate_step(params)
    print("\n".join(report.summary_lines()))
    print(f"validation result: {report.result_path}\ndata docs: {report.docs_path / 'index.html'}")
    return 0 if report.success else 1


def cmd_features(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import features_step

    _print_cache(features_step(params, progress=not args.no_progress))
    return 0


def _print_cache(cache) -> None:
    verb = "reused" if cache.reused else f"built in {cache.meta['seconds']:.1f} s"
    clips = ", ".join(f"{p} {n}" for p, n in cache.clips().items())
    print(f"feature cache {cache.path} ({verb})")
    print(f"size          {cache.size_bytes / 1e6:.1f} MB ({cache.meta['dtype']})")
    print(f"clips         {clips} (training x {cache.meta['copies']} augmented copies)")


def _print_train(result) -> None:
    print(
        f"model: {result.arch} ({result.params_count:,} weights, {result.flops / 1e6:.1f} MFLOPs)"
    )
    print(
        f"steps {result.start_step}->{result.final_step} in {result.seconds:.0f} s "
        f"({result.steps_per_second:.1f} steps/s)"
    )
    print(
        f"best validation accuracy {100 * result.best_val_accuracy:.1f}% at step {result.best_step}"
    )
    print(f"test accuracy {100 * result.test_accuracy:.1f}%")
    print(f"checkpoints   {result.train_dir} (best: {result.best_checkpoint.name})")
    print(f"confusion     {result.reports_dir / 'confusion_matrix.png'}")
    print(f"tensorboard   tensorboard --logdir {result.summaries_dir}")
    if result.run_id:
        from kws_core.training.tracking import runs_url

        print(f"mlflow run    {result.run_id} (kws freeze registers its export)")
        url = runs_url("http://127.0.0.1:5000", result.experiment_id)
        print(f"compare runs  make mlflow-ui, then {url}")


def _print_comparison(comparison) -> None:
    for result in comparison.results.values():
        _print_train(result)
    if len(comparison.results) > 1:
        print(f"champion      {comparison.champion} ({comparison.champion_file})")
        for arch, r in comparison.results.items():
            print(
                f"  {arch:<20} validation {100 * r.best_val_accuracy:5.1f}%  "
                f"test {100 * r.test_accuracy:5.1f}%"
            )
        if comparison.parent_run_id:
            print(f"mlflow parent {comparison.parent_run_id} (compare the child runs in the UI)")


def cmd_train(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import train_step

    comparison = train_step(params, progress=not args.no_progress, track=not args.no_mlflow)
    _print_comparison(comparison)
    return 0


def cmd_evaluate(params: Params, args: argparse.Namespace) -> int:
    from kws_core.infra.ownership import claim_folder
    from kws_core.steps import REPORT_SIGNS
    from kws_core.training.evaluate import evaluate_dir

    claim_folder(params.layout.reports_dir, "train.reports_dir", REPORT_SIGNS)
    # its own folder: train_dir is the train stage's output (DVC would call it changed)
    out = params.layout.evaluate_dir / f"{Path(args.test_dir).resolve().name}_confusion_matrix.png"
    result = evaluate_dir(params, Path(args.test_dir), args.checkpoint, png=out)
    print(f"checkpoint {result.checkpoint}")
    print(result.report())
    print(f"confusion matrix: {result.png}")
    return 0


def cmd_wav_to_spectrogram(params: Params, args: argparse.Namespace) -> int:
    from kws_core.features.front_end import FeatureSpec
    from kws_core.features.spectrogram import wav_to_spectrogram

    _print_notes(
        wav_to_spectrogram(args.input_wav, args.output_png, FeatureSpec.from_params(params))
    )
    print(f"wrote {args.output_png}")
    return 0


def cmd_label_wav(params: Params, args: argparse.Namespace) -> int:
    from kws_core.export.label_wav import label_wavs

    results = label_wavs(args.graph, args.labels, args.wav, args.how_many_labels)
    for r in results:
        if len(results) > 1:
            print(f"{r.path}:")
        _print_notes(r.notes)
        print("\n".join(r.lines()))
    return 0


def _print_notes(notes: list[str]) -> None:
    """What reading a WAV did to it (resampled, down-mixed ...), as every WAV-reading verb says."""
    for note in notes:
        print(f"note: {note}")


def cmd_freeze(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import freeze_step

    _print_export(
        params, freeze_step(params, progress=not args.no_progress, track=not args.no_mlflow)
    )
    return 0


def _print_export(params: Params, result) -> None:
    kind = "features" if params.export.features_outside else "PCM"
    print(f"checkpoint   {result.checkpoint}")
    print(f"input        {kind} ({result.meta})")
    for name, size in result.sizes.items():
        print(f"{name:<20} {_size(size):>9}  {result.out_dir / name}")
    print(f"labels       {result.labels}")
    for note in result.notes:
        print(f"note         {note}")
    if result.registered is not None:
        print(result.registered.line())


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def cmd_generate_streaming_test_wav(params: Params, args: argparse.Namespace) -> int:
    from kws_core.streaming.report import generate_test_stream

    wav = Path(args.output_wav) if args.output_wav else None
    labels = Path(args.output_labels) if args.output_labels else None
    if wav is not None and labels is None:
        labels = wav.with_name(wav.stem + "_labels.txt")
    files = generate_test_stream(params, negative=args.negative, wav=wav, truth=labels)
    verb = "reused" if files.reused else "wrote"
    print(f"{verb} {files.wav}")
    print(f"ground truth {files.truth}")
    return 0


def cmd_test_streaming_accuracy(params: Params, args: argparse.Namespace) -> int:
    from kws_core.export.loader import ExportedModel
    from kws_core.streaming.report import stream_accuracy

    model = ExportedModel.load(args.graph, args.labels)
    result = stream_accuracy(
        model, Path(args.wav), Path(args.ground_truth), params, progress=not args.no_progress
    )
    _print_notes(result.notes)
    if args.verbose:
        for event in result.stats.events:
            print(event.line())
    print(result.stats.summary())
    sc = result.scores
    print(
        f"{len(sc.times_ms)} windows every {params.stream.clip_stride_ms} ms in "
        f"{sc.seconds:.1f} s: real-time factor {sc.real_time_factor:.4f} ({sc.engine} engine)"
    )
    return 0


def cmd_stream_eval(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import stream_eval_step

    report = stream_eval_step(
        params, graph=args.graph, progress=not args.no_progress, track=not args.no_mlflow
    )
    _print_stream_report(report)
    return 0


def _print_stream_report(report) -> None:
    print("\n".join(report.summary_lines()))
    for key, path in report.files.items():
        print(f"{key:<12} {path}")


def cmd_run_all(params: Params, args: argparse.Namespace) -> int:
    from kws_core.steps import format_counts, format_rejected, manifest_step, validate_step
    from kws_core.training.tracking import tracking_enabled

    t0 = time.perf_counter()
    progress = not args.no_progress
    # the MLflow store is checked before the data work, not after it (once: a store found
    # broken with train.mlflow_required false is said once and left alone)
    track = not args.no_mlflow and tracking_enabled(params)
    out = manifest_step(params, progress=progress)
    report = validate_step(params, out.result.manifest)
    res = out.result
    print("\n== kws run-all summary ==")
    print(f"data set: {params.layout.data_dir} (data_url: {params.data.data_url!r})")
    print("clips per label and partition:")
    print(format_counts(res.manifest))
    print("\n".join(format_rejected(res.rejected)))
    print("\n".join(report.summary_lines()))
    print("outputs:")
    for key in ("manifest", "rejected_csv", "summary"):
        print(f"  {key:<13} {out.paths[key]}")
    print(f"  {'validation':<13} {report.result_path}")
    print(f"  {'data docs':<13} {report.docs_path / 'index.html'}")
    if not report.success:
        print("training skipped: fix the data-quality failures first")
        return 1
    from kws_core.steps import features_step, train_step

    print("\n== features ==")  # as the Dagster run and `dvc repro` do
    _print_cache(features_step(params, progress=progress))
    print("\n== training ==")
    comparison = train_step(params, progress=progress, track=track)
    print("\n== kws run-all results ==")
    print(f"data quality: PASSED; manifest {out.paths['manifest']}")
    _print_comparison(comparison)
    from kws_core.steps import freeze_step

    print("\n== export ==")
    exported = freeze_step(params, progress=progress, track=track)
    _print_export(params, exported)
    word = params.data.wanted_word_list[0]
    first = sorted(params.layout.data_dir.glob(f"{word}/*.wav"))[:1]
    example = first[0] if first else "FILE.wav"
    print(
        f"try it: kws label-wav --graph {exported.tflite_int8 or exported.tflite_float} "
        f"--labels {exported.labels} --wav {example}"
    )
    from kws_core.steps import stream_eval_step

    print("\n== streaming evaluation ==")
    _print_stream_report(stream_eval_step(params, progress=progress, track=track))
    print(f"mlflow store  {params.train.mlflow_tracking_uri} (mlflow ui --backend-store-uri ...)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_demo(params: Params, args: argparse.Namespace) -> int:
    from kws_core.demo.models import default_graph, load_demo_model, model_info
    from kws_core.demo.server import DemoServer

    graph = (
        Path(args.graph)
        if args.graph
        else default_graph(params.layout.export_dir, params.stream.clip_stride_ms)
    )
    model = load_demo_model(graph)  # a bad path is one line, before anything listens
    server = DemoServer(model, params.stream, args.host, args.port, args.max_clients)
    info = model_info(model)
    print(
        f"model        {graph} ({info['architecture']}, {len(model.labels)} labels; "
        f"{info['runs_as'].split(' (')[0]})"
    )
    print(f"kws demo on  {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown: the usual stop
        pass
    print("kws demo stopped")
    return 0


COMMANDS = {
    "synth-dataset": cmd_synth_dataset,
    "dataset": cmd_dataset,
    "manifest": cmd_manifest,
    "validate": cmd_validate,
    "features": cmd_features,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "wav-to-spectrogram": cmd_wav_to_spectrogram,
    "freeze": cmd_freeze,
    "label-wav": cmd_label_wav,
    "generate-streaming-test-wav": cmd_generate_streaming_test_wav,
    "test-streaming-accuracy": cmd_test_streaming_accuracy,
    "stream-eval": cmd_stream_eval,
    "run-all": cmd_run_all,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args, overrides = _parser().parse_known_args(argv)
    if not args.verbose:  # MLflow's "Creating initial MLflow database tables..." and the like
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # TFLite converter deprecation chatter, not the user's concern
        logging.getLogger("absl").setLevel(logging.ERROR)
    from kws_core.infra.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    try:
        params = _load(args, overrides)
        return COMMANDS[args.command](params, args)
    except KwsError as e:
        print(f"kws {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the machine failing a writer: one line; anything else is a bug
        line = os_error_line(e)
        if line is None:
            raise
        print(f"kws {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kws {args.command}: interrupted; outputs are left as they were", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
