"""Weak messages made clear: each names the file or key and the fix, on one line, and a
successful run leaves no stray library chatter on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kws_core.cli import main
from kws_core.data.manifest import MANIFEST_FILE, load_manifest, scan_clips
from kws_core.features.spectrogram import load_any_wav
from kws_core.infra.errors import DataError
from kws_core.infra.wav import write_wav
from tests.conftest import build_tiny_dataset
from tests.reliability.test_kill import project

pytestmark = pytest.mark.timeout(300)


def kws(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_LOGGING_LEVEL",)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    cmd = [sys.executable, "-m", "kws_core.cli", argv[0], "--params", str(root / "params.yaml")]
    return subprocess.run(
        [*cmd, "--no-progress", *argv[1:]], cwd=root, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("value", ["0", "-2", "three"])
def test_how_many_labels_must_be_at_least_one(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(
            ["label-wav", "--graph", "g.tflite", "--labels", "l.txt", "--wav", "a.wav",
             f"--how_many_labels={value}"]
        )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert len(err) == 1 and "--how_many_labels: must be a whole number of at least 1" in err[0]


def test_argument_errors_are_one_line_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["label-wav"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert err == [
        "kws label-wav: error: the following arguments are required: --graph, --labels, --wav "
        "(see kws label-wav --help)"
    ]


def test_an_unreadable_word_folder_is_named_not_called_empty(tmp_path, monkeypatch):
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no"], 3)
    real = os.listdir

    def listdir(path):
        if Path(path).name == "yes":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)  # root reads anything: fake the refusal
    with pytest.raises(DataError, match=r"data/yes cannot be read \(Permission denied\); fix"):
        scan_clips(data, 16000, progress=False)


def test_an_unreadable_wav_is_named_not_a_system_error(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    write_wav(path, np.zeros(16000, np.float32), 16000)
    import kws_core.features.spectrogram as spectrogram

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(spectrogram, "open", refuse, raising=False)
    with pytest.raises(DataError, match=r"a.wav: cannot be read \(Permission denied\)"):
        load_any_wav(path, 16000)


def test_a_manifest_missing_a_column_is_one_line(tmp_path):
    path = tmp_path / MANIFEST_FILE
    pd.DataFrame({"path": ["yes/a.wav"], "word": ["yes"], "label": ["yes"]}).to_parquet(path)
    with pytest.raises(
        DataError, match=r"lacks column\(s\) speaker, partition, source.*kws manifest"
    ):
        load_manifest(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = project(tmp_path_factory.mktemp("msgs") / "p")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 20)
    return root


def test_a_manifest_missing_a_column_stops_training_in_one_line(trained):
    assert kws(trained, "manifest").returncode == 0
    path = trained / "results" / "manifest" / MANIFEST_FILE
    good = path.read_bytes()
    pd.read_parquet(path).drop(columns=["partition"]).to_parquet(path)
    try:
        out = kws(trained, "train", "--no-mlflow")
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, out.stderr[-1500:]
        assert "lacks column(s) partition" in lines[0]
    finally:
        path.write_bytes(good)


def test_successful_runs_leave_stderr_clean(trained):
    """No GX "Created temporary directory" line, no MLflow "Creating initial MLflow database
    tables" lines (a first run makes the store), no TFLite XNNPACK line."""
    assert kws(trained, "manifest").returncode == 0
    validate = kws(trained, "validate")
    assert "great_expectations" not in validate.stderr, validate.stderr
    train = kws(trained, "train")
    assert train.returncode == 0, train.stderr[-2000:]
    assert train.stderr.strip() == "", train.stderr[-2000:]
