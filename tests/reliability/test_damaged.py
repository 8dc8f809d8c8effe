"""Damaged artefacts are found before use: export.json records every export file's size and
SHA-256 and each reader verifies the files it opens (a truncated .tflite used to crash with a
segmentation fault); checkpoints are read through TensorFlow's own per-tensor size and CRC
checks before a restore (a truncated one used to end in an IndexError traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws_core.cli import main
from kws_core.data.manifest import build_manifest
from kws_core.export.writer import export_model
from kws_core.infra.wav import write_wav
from kws_core.training.loop import train
from tests.conftest import build_tiny_dataset
from tests.test_train import params_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 30)
    p = params_for(root, how_many_training_steps="4,2", output_file=str(root / "export"))
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    result = export_model(p, "best", manifest=manifest)
    write_wav(root / "clip.wav", np.zeros(16000, np.float32), 16000)
    (root / "params.yaml").write_text("{}\n")
    return root, result


@pytest.fixture
def export_copy(trained, tmp_path) -> Path:
    root, result = trained
    return Path(shutil.copytree(result.out_dir, tmp_path / "export"))


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def label_wav(root: Path, graph: Path) -> subprocess.CompletedProcess:
    """In a child process: a crash there (the old segfault) fails the test, not the suite."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "kws_core.cli", "label-wav", "--params", str(root / "params.yaml")]
    cmd += ["--graph", str(graph), "--labels", str(graph.parent / "labels.txt")]
    if graph.name == "saved_model":
        cmd[-1] = str(graph.parent / "labels.txt")
    return subprocess.run(
        [*cmd, "--wav", str(root / "clip.wav")], env=env, capture_output=True, text=True
    )


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-1500:])
    assert len(lines) == 1, lines
    return lines[0]


def test_export_json_records_every_file_and_an_intact_export_loads(trained):
    root, result = trained
    files = json.loads(result.meta.read_text())["files"]
    assert {"model_float.tflite", "model_int8.tflite", "labels.txt"} <= set(files)
    assert any(name.startswith("saved_model/variables/") for name in files)
    assert files["model_float.tflite"]["bytes"] == result.tflite_float.stat().st_size
    assert label_wav(root, result.tflite_float).returncode == 0


@pytest.mark.parametrize("name", ["model_float.tflite", "model_int8.tflite"])
def test_a_truncated_tflite_is_one_line_not_a_segfault(trained, export_copy, name):
    root, _ = trained
    size = (export_copy / name).stat().st_size
    _truncate(export_copy / name, 1024)
    line = one_line(label_wav(root, export_copy / name))
    assert line.startswith("kws label-wav: error: export damaged: ")
    assert f"{name} is 1,024 bytes, expected {size:,}; re-run kws freeze" in line


def test_a_tflite_with_a_changed_byte_fails_its_checksum(trained, export_copy):
    root, _ = trained
    _flip_a_byte(export_copy / "model_float.tflite")
    line = one_line(label_wav(root, export_copy / "model_float.tflite"))
    assert "model_float.tflite does not match its checksum in export.json" in line


def test_a_truncated_savedmodel_variables_file_is_one_line(trained, export_copy):
    root, _ = trained
    var = next((export_copy / "saved_model" / "variables").glob("variables.data-*"))
    _truncate(var, var.stat().st_size // 2)
    line = one_line(label_wav(root, export_copy / "saved_model"))
    assert f"export damaged: saved_model/variables/{var.name} is " in line


def test_a_missing_savedmodel_file_is_one_line(trained, export_copy):
    root, _ = trained
    (export_copy / "saved_model" / "variables" / "variables.index").unlink()
    line = one_line(label_wav(root, export_copy / "saved_model"))
    assert "export damaged: saved_model/variables/variables.index is missing" in line


def test_an_export_from_before_checksums_is_still_checked(trained, export_copy):
    """Older exports carry only the TFLite sizes (`models`); a truncated SavedModel there is
    caught where TensorFlow reads it, still as one line."""
    root, _ = trained
    meta = json.loads((export_copy / "export.json").read_text())
    del meta["files"]
    (export_copy / "export.json").write_text(json.dumps(meta))
    _truncate(export_copy / "model_float.tflite", 2048)
    assert "model_float.tflite is 2,048 bytes" in one_line(
        label_wav(root, export_copy / "model_float.tflite")
    )
    var = next((export_copy / "saved_model" / "variables").glob("variables.data-*"))
    _truncate(var, var.stat().st_size // 2)
    line = one_line(label_wav(root, export_copy / "saved_model"))
    assert "not a usable SavedModel" in line and "re-run kws freeze" in line


def test_stream_scoring_verifies_the_export_too(trained, export_copy, capsys):
    root, _ = trained
    _truncate(export_copy / "model_float.tflite", 1024)
    (root / "truth.txt").write_text("yes, 500\n")
    rc = main(
        ["test-streaming-accuracy", "--params", str(root / "params.yaml"), "--graph",
         str(export_copy / "model_float.tflite"), "--wav", str(root / "clip.wav"),
         "--ground_truth", str(root / "truth.txt")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "export damaged: model_float.tflite" in err[0], err


def _checkpoint_copy(trained, tmp_path: Path) -> Path:
    root, result = trained
    prefix = Path(result.checkpoint)
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, tmp_path / ("ck" + f.name[len(prefix.name) :]))
    return tmp_path / "ck"


def _freeze(trained, tmp_path: Path, checkpoint: Path, capsys) -> str:
    root, result = trained
    params = tmp_path / "params.yaml"
    params.write_text((result.checkpoint.parent / "params.yaml").read_text())
    capsys.readouterr()
    rc = main(
        ["freeze", "--params", str(params), "--no-progress", f"--start_checkpoint={checkpoint}",
         f"--output_file={tmp_path / 'out'}", "--quantize=false"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert not (tmp_path / "out").exists()
    return err[0]


def test_a_truncated_checkpoint_is_one_line(trained, tmp_path, capsys):
    ck = _checkpoint_copy(trained, tmp_path)
    data = next(tmp_path.glob("ck.data-*"))
    _truncate(data, data.stat().st_size // 3)
    line = _freeze(trained, tmp_path, ck, capsys)
    assert f"checkpoint damaged: {ck} cannot be read" in line and "re-run kws train" in line


def test_a_garbage_checkpoint_index_is_one_line(trained, tmp_path, capsys):
    ck = _checkpoint_copy(trained, tmp_path)
    _truncate(tmp_path / "ck.index", 50)
    assert f"checkpoint damaged: {ck} cannot be read" in _freeze(trained, tmp_path, ck, capsys)
