"""End to end through the `kws` command line on small data sets."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kws_core.cli import main
from tests.conftest import with_fast_model


def write_params(tmp_path: Path, **data) -> Path:
    body = {
        "data": {"data_url": "", "data_dir": "data", "wanted_words": "yes,no"} | data,
        # run-all trains too: keep it to a few steps
        "train": {"how_many_training_steps": "3,1", "batch_size": 8, "eval_step_interval": 2},
        # ... and evaluates on streams: keep them short
        "stream": {"stream_duration_s": 20, "negative_duration_s": 30},
    }
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(with_fast_model(body)))
    return f


def test_help_lists_verbs_and_overrides():
    out = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for verb in (
        "synth-dataset",
        "dataset",
        "manifest",
        "validate",
        "train",
        "evaluate",
        "run-all",
    ):
        assert verb in out
    out = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "manifest", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--wanted_words" in out and "--validation_percentage" in out


def test_run_all_on_a_local_data_dir(tiny_dataset, tmp_path, capsys):
    tiny_dataset(speakers=120)
    params = write_params(tmp_path)
    assert main(["run-all", "--params", str(params), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "clips per label and partition" in out and "data quality: PASSED" in out
    assert "rejected files: none" in out
    assert "Final test accuracy = " in out and "steps 0->4" in out
    assert (tmp_path / "results/speech_commands_train/low_latency_conv.ckpt-best.index").exists()
    assert (tmp_path / "results/mlflow.db").exists()
    m = pd.read_parquet(tmp_path / "results/manifest/manifest.parquet")
    assert set(m.label) == {"yes", "no", "_unknown_", "_silence_"}
    summary = json.loads((tmp_path / "results/manifest/manifest_summary.json").read_text())
    assert summary["counts"]["total"]["total"] == len(m)
    assert (tmp_path / "results/manifest/data_docs/index.html").exists()
    assert json.loads((tmp_path / "results/manifest/quality_metrics.json").read_text())["passed"]
    # ... and exports, then shows how to label a clip with the int8 model it wrote.
    export = tmp_path / "results/frozen/model"
    assert (export / "model_int8.tflite").exists() and (export / "saved_model").is_dir()
    hint = next(line for line in out.splitlines() if line.startswith("try it: kws label-wav"))
    assert main(hint.removeprefix("try it: kws ").split()) == 0
    assert "(score = " in capsys.readouterr().out
    report = json.loads((tmp_path / "results/streaming/report.json").read_text())
    assert report["negative_stream"]["duration_s"] == 30
    assert "false-reject rate" in out and (tmp_path / "results/streaming/det_curve.png").exists()


def test_overrides_reach_the_steps(tiny_dataset, tmp_path):
    tiny_dataset(speakers=40)
    params = write_params(tmp_path)
    argv = ["manifest", "--params", str(params), "--no-progress", "--wanted_words=yes"]
    assert main([*argv, "--silence_percentage=0"]) == 0
    m = pd.read_parquet(tmp_path / "results/manifest/manifest.parquet")
    assert set(m.label) == {"yes", "_unknown_"}


def test_failed_validation_exits_1_with_plain_words(tiny_dataset, tmp_path, capsys):
    tiny_dataset(speakers=3)  # too few speakers: some partition lacks a word
    params = write_params(tmp_path)
    assert main(["run-all", "--params", str(params), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "data quality: FAILED" in out and "labels missing from a partition" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["manifest", "--batch_size=abc"], "train.batch_size"),
        (["manifest", "--wanted_word=yes"], "did you mean --wanted_words"),
        (["manifest", "--wanted_words=yes,left"], "wanted word 'left' has no clips"),
        (["validate"], "run `kws manifest` first"),
        (["manifest", "stray"], "unexpected argument 'stray'"),
        (["train", "--model_architecture=foo"], "model_architecture 'foo' is unknown"),
        (["evaluate", "--test_dir=nope"], "no checkpoint recorded"),
        (["train", "--profile=missing.yaml"], "missing.yaml: profile not found"),
        # an export replaces its folder whole: never one that holds the data (or is `.`)
        (["freeze", "--output_file=data"], "is data.data_dir"),
        (["freeze", "--output_file=."], "holds data.data_dir"),
    ],
)
def test_errors_are_one_line_without_traceback(tiny_dataset, tmp_path, argv, needle):
    tiny_dataset(speakers=5)
    _refused_in_one_line(argv, write_params(tmp_path), tmp_path, needle)


def _refused_in_one_line(argv: list[str], params: Path, cwd: Path, needle: str) -> None:
    """`kws <argv>` exits 2 with one stderr line holding `needle`, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", *argv, "--params", str(params), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# Every output flag of every command, pointed at a user's file or folder or at the command's own
# input: one line, exit 2, and the user's bytes untouched. (generate-streaming-test-wav needs a
# manifest: tests/test_stream_report.py; params outputs like train_dir hold only files named by
# the command, which it never deletes otherwise.)
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["synth-dataset", "--output_dir=precious", "--speakers=1"], "was not generated by kws"),
        (["synth-dataset", "--output_dir=data", "--speakers=1"], "was not generated by kws"),
        (["freeze", "--output_file=precious"], "is not a kws export"),
        (["freeze", "--output_file=precious/thesis.txt"], "is a file"),
        (["freeze", "--output_file=data"], "is data.data_dir"),
        (["wav-to-spectrogram", "--input_wav=CLIP", "--output_png=CLIP"], "is the input WAV"),
        (
            ["wav-to-spectrogram", "--input_wav=CLIP", "--output_png=precious/thesis.txt"],
            "not a PNG",
        ),
    ],
)
def test_every_output_flag_refuses_what_the_command_did_not_write(
    tiny_dataset, tmp_path, argv, needle
):
    data = tiny_dataset(speakers=5)
    params = write_params(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    clip = next(data.rglob("*.wav"))
    before = {f: f.read_bytes() for f in [*data.rglob("*"), *precious.rglob("*")] if f.is_file()}
    _refused_in_one_line([a.replace("CLIP", str(clip)) for a in argv], params, tmp_path, needle)
    after = {f: f.read_bytes() for f in [*data.rglob("*"), *precious.rglob("*")] if f.is_file()}
    assert after == before


def test_train_prepares_its_missing_data_itself_and_says_so_in_one_line(tiny_dataset, tmp_path):
    tiny_dataset(speakers=5)
    params = write_params(tmp_path)
    argv = ["train", "--params", str(params), "--no-progress", "--no-mlflow"]
    proc = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", *argv], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stdout.splitlines() if "preparing the data first" in line]
    assert len(said) == 1 and said[0].startswith("kws train: no manifest at"), proc.stdout
    assert (tmp_path / "results/manifest/manifest.parquet").exists()
    assert "test accuracy" in proc.stdout
    # the second time the manifest is there: nothing to prepare
    again = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", *argv], capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0 and "preparing the data first" not in again.stdout


def test_bad_files_are_listed_in_the_summary(tiny_dataset, tmp_path, capsys):
    root = tiny_dataset(speakers=120)
    (root / "yes" / "deadbeef_nohash_0.wav").write_text("not audio")
    params = write_params(tmp_path)
    assert main(["run-all", "--params", str(params), "--no-progress", "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "rejected files: 1" in out and "yes/deadbeef_nohash_0.wav: not a WAV file" in out
