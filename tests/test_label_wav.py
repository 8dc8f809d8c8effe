"""`kws label-wav` on SavedModel and TFLite exports of a small trained model."""

import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from kws_core.data.manifest import build_manifest
from kws_core.export.label_wav import label_wavs, loudest_window
from kws_core.export.writer import export_model
from kws_core.infra.errors import DataError, KwsError
from kws_core.training.loop import train
from tests.conftest import build_tiny_dataset, tone
from tests.test_train import params_for


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40)
    p = params_for(root, how_many_training_steps="6,2", output_file=str(root / "export"))
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    return export_model(p, "best", manifest=manifest), data


def test_loudest_window_finds_the_burst():
    x = np.zeros(48000, dtype=np.float32)
    x[30000:34000] = 0.5
    win, start = loudest_window(x, 16000, 160)
    assert start <= 30000 and start + 16000 >= 34000 and np.abs(win).max() == 0.5


def test_savedmodel_and_tflite_agree_and_print_tutorial_lines(exported, tmp_path):
    result, data = exported
    clips = sorted((data / "yes").glob("*.wav"))[:3]
    sm = label_wavs(result.saved_model, result.labels, [str(c) for c in clips], 3)
    tfl = label_wavs(result.tflite_float, result.labels, [str(c) for c in clips], 3)
    for a, b in zip(sm, tfl, strict=True):
        assert len(a.lines()) == 3
        assert all(re.fullmatch(r"\S+ \(score = \d\.\d{5}\)", line) for line in a.lines())
        scores = [s for _, s in a.top]
        assert scores == sorted(scores, reverse=True)
        assert a.top[0][0] == b.top[0][0]
        assert abs(a.top[0][1] - b.top[0][1]) < 1e-4


def test_other_rates_stereo_long_clips_and_folders(exported, tmp_path):
    result, _ = exported
    folder = tmp_path / "in"
    folder.mkdir()
    x = tone("long", n=88200, rate=44100)
    sf.write(folder / "long.wav", np.stack([x, x], axis=1), 44100)
    sf.write(folder / "short.wav", tone("short", n=8000), 16000)
    out = label_wavs(result.tflite_float, result.labels, [str(folder)], 2)
    assert [r.path.name for r in out] == ["long.wav", "short.wav"]
    notes = " ".join(out[0].notes)
    assert "resampled 44100 Hz to 16000 Hz" in notes and "down-mixed 2 channels" in notes
    assert "loudest window" in notes
    assert out[1].notes == []


def test_bad_inputs_are_one_line_errors(exported, tmp_path):
    result, _ = exported
    bad = tmp_path / "bad.wav"
    bad.write_text("junk")
    with pytest.raises(DataError, match="bad.wav: not a readable WAV"):
        label_wavs(result.tflite_float, result.labels, [str(bad)])
    with pytest.raises(KwsError, match="no such model"):
        label_wavs(tmp_path / "nope.tflite", result.labels, [str(bad)])
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kws_core.cli",
            "label-wav",
            "--params",
            str(params),
            "--graph",
            str(result.tflite_float),
            "--labels",
            str(result.labels),
            "--wav",
            str(bad),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a readable WAV" in proc.stderr
