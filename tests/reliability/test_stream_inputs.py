"""Streaming inputs the scoring cannot use: one-line errors before the model runs, or read right.

Ground truth the model cannot match (labels it lacks, times past the stream's end), decoder
settings that can never fire, recorders' "unknown length" WAV headers, other rates and channel
counts, and TFLite's XNNPACK line on stderr. The model is a tiny made-up graph converted to
TFLite (a few seconds), not a trained one: none of this depends on what it has learned.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws_core.cli import main
from kws_core.config import load_params
from kws_core.features.front_end import FeatureSpec
from kws_core.features.spectrogram import load_any_wav
from kws_core.infra.errors import ConfigError, DataError
from kws_core.infra.tf_import import XNNPACK_BANNER, native_stderr_without
from kws_core.infra.wav import WavError, inspect_wav, read_wav, write_wav
from kws_core.streaming.recognize import check_decoder_settings, smooth_scores
from kws_core.streaming.report import streaming_eval
from kws_core.streaming.score import read_ground_truth

RATE = 16000
LABELS = ["_silence_", "_unknown_", "yes", "no"]
STREAM_S = 10


def _tflite_pcm_model(spec: FeatureSpec) -> bytes:
    """A float TFLite model taking PCM clips, scoring LABELS from the clip's loudness profile."""
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(0).standard_normal((160, len(LABELS)), "f4"))

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, spec.desired_samples], tf.float32)])
        def __call__(self, x):
            frames = tf.reshape(x, [-1, 160, spec.desired_samples // 160])
            return tf.nn.softmax(tf.matmul(tf.reduce_mean(tf.abs(frames), axis=2), weights))

    model = Model()
    fn = model.__call__.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()


@pytest.fixture(scope="module")
def area(tmp_path_factory) -> Path:
    """export/ (model_float.tflite, export.json, labels.txt), a 10 s stream, its ground truth."""
    root = tmp_path_factory.mktemp("stream_inputs")
    spec = FeatureSpec.from_params(load_params(None))
    export = root / "export"
    export.mkdir()
    (export / "model_float.tflite").write_bytes(_tflite_pcm_model(spec))
    meta = {"labels": LABELS, "features": spec.to_dict(), "input": "pcm"}
    (export / "export.json").write_text(json.dumps(meta))
    (export / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rng = np.random.default_rng(1)
    audio = 0.05 * rng.standard_normal(STREAM_S * RATE)
    audio[RATE * 3 : RATE * 4] += 0.5 * np.sin(np.arange(RATE) / 5.0)
    write_wav(root / "stream.wav", audio, RATE)
    (root / "truth.txt").write_text("yes, 3500\n_unknown_, 6000\n_silence_, 8000\nno, 10000\n")
    (root / "params.yaml").write_text("{}\n")
    return root


def _run(capsys, area: Path, wav: Path, truth: Path, *flags: str) -> tuple[int, str, list[str]]:
    """In-process `kws test-streaming-accuracy`: (exit code, stdout, stderr lines)."""
    capsys.readouterr()
    rc = main(
        ["test-streaming-accuracy", "--params", str(area / "params.yaml"), "--no-progress"]
        + ["--graph", str(area / "export" / "model_float.tflite")]
        + ["--labels", str(area / "export" / "labels.txt")]
        + ["--wav", str(wav), "--ground_truth", str(truth), *flags]
    )
    out = capsys.readouterr()
    return rc, out.out, out.err.strip().splitlines()


def _one_line_error(rc: int, out: str, err: list[str], *needles: str) -> str:
    assert rc == 2 and out == "", out
    assert len(err) == 1 and err[0].startswith("kws test-streaming-accuracy: error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture
def no_scoring(monkeypatch):
    """Fail the test if the stream reaches the model: these errors must come before it."""

    def refuse(*_a, **_k):
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr("kws_core.streaming.report.score_stream", refuse)


# ------------------------------------------------------------ 1. labels the model does not have
@pytest.mark.timeout(120)
def test_truth_label_the_model_lacks_is_one_line_error(area, tmp_path, capsys, no_scoring):
    """`up` and `left` are not labels of the model: they could only be false rejects."""
    truth = tmp_path / "other_words.txt"
    truth.write_text("yes, 1000\nup, 3000\n_unknown_, 5000\nleft, 7000\nup, 9000\n")
    rc, out, err = _run(capsys, area, area / "stream.wav", truth)
    _one_line_error(
        rc,
        out,
        err,
        str(truth),
        "'up' (line 2), 'left' (line 4)",
        "(_silence_, _unknown_, yes, no)",
        "`_unknown_`",
    )


@pytest.mark.timeout(120)
def test_unknown_and_silence_in_the_truth_are_model_labels_too(area):
    """The generator writes unknown words as `_unknown_`; `_silence_` is a non-keyword too."""
    rows = read_ground_truth(area / "truth.txt", ["yes", "no"], STREAM_S * 1000)
    assert [label for label, _ in rows] == ["yes", "_unknown_", "_silence_", "no"]


# ------------------------------------------------------------ 2. times past the end
@pytest.mark.timeout(120)
def test_truth_time_past_the_stream_is_one_line_error(area, tmp_path, capsys, no_scoring):
    """12 s in a 10 s stream: a word the stream never had."""
    truth = tmp_path / "longer.txt"
    truth.write_text("yes, 1000\nno, 12000\n")
    rc, out, err = _run(capsys, area, area / "stream.wav", truth)
    _one_line_error(rc, out, err, f"{truth} line 2", "12000 ms", "stream.wav", "10000 ms long")
    # The stream's last millisecond is inside it (the fixture's truth ends at 10000 ms).
    assert read_ground_truth(area / "truth.txt", LABELS, STREAM_S * 1000)[-1] == ("no", 10000)


# ------------------------------------------------------------ 3. decoder settings
NEVER_FIRE = {
    "window-under-minimum-count-strides": (
        ["--average_window_ms=100", "--clip_stride_ms=80", "--minimum_count=3"],
        ["stream.average_window_ms 100", "stream.minimum_count 3", "at least 160"],
    ),
    "window-under-one-stride": (
        ["--average_window_ms=50", "--clip_stride_ms=80", "--minimum_count=1"],
        ["stream.average_window_ms 50", "stream.clip_stride_ms", "at least 80"],
    ),
    "stride-longer-than-the-clip": (
        ["--clip_stride_ms=1200"],
        ["stream.clip_stride_ms 1200", "1000 ms clip", "at most 1000"],
    ),
    "threshold-of-one": (["--detection_threshold=1"], ["stream.detection_threshold 1.0"]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(NEVER_FIRE))
def test_settings_that_can_never_fire_are_config_errors(area, capsys, no_scoring, case):
    flags, needles = NEVER_FIRE[case]
    rc, out, err = _run(capsys, area, area / "stream.wav", area / "truth.txt", *flags)
    _one_line_error(rc, out, err, *needles)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("stride", "count"), [(30, 1), (80, 2), (80, 3), (100, 5)])
def test_the_window_check_is_exactly_when_recognize_can_decide(stride, count):
    """At the check's bound RecognizeCommands decides; one millisecond less, it never does."""
    times = np.arange(0, 20_000, stride)
    scores = np.tile([0.0, 0.0, 1.0, 0.0], (len(times), 1))
    need = max(count - 1, 1) * stride
    for window, ok in ((need, True), (need - 1, False)):
        p = load_params(None, [f"--clip_stride_ms={stride}", f"--minimum_count={count}"])
        p.stream.average_window_ms = window
        decides = smooth_scores(scores, times, LABELS, window, count).valid.any()
        assert decides == ok
        if ok:
            check_decoder_settings(p.stream, 1000)
        else:
            with pytest.raises(ConfigError, match="can never decide"):
                check_decoder_settings(p.stream, 1000)


@pytest.mark.timeout(120)
def test_stream_eval_refuses_before_generating_any_stream(area, tmp_path):
    """`kws stream-eval` (and the DVC stage and Dagster asset, which call it) check first."""
    out = tmp_path / "streaming"
    p = load_params(None, ["--average_window_ms=100", f"--stream_dir={out}"])
    with pytest.raises(ConfigError, match="stream.average_window_ms 100 can never decide"):
        streaming_eval(p, graph=area / "export" / "model_float.tflite", log_mlflow=False)
    assert not out.exists()


# ------------------------------------------------------------ 4. "unknown length" headers
def _with_sizes(wav: bytes, riff: int, data: int, tail: bytes = b"") -> bytes:
    """A 44-byte-header WAV with its RIFF and data sizes replaced (and bytes appended)."""
    assert wav[36:40] == b"data"
    return wav[:4] + struct.pack("<I", riff) + wav[8:40] + struct.pack("<I", data) + wav[44:] + tail


UNKNOWN_LENGTH = {
    "both-0xFFFFFFFF": (0xFFFFFFFF, 0xFFFFFFFF, b""),
    "both-0": (0, 0, b""),
    "data-0xFFFFFFFF": (None, 0xFFFFFFFF, b""),
    "killed-mid-sample": (0xFFFFFFFF, 0xFFFFFFFF, b"\x01"),  # an odd byte: cut, not refused
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(UNKNOWN_LENGTH))
def test_unknown_length_wav_is_read_to_the_end_of_file(area, tmp_path, capsys, case):
    good = (area / "stream.wav").read_bytes()
    riff, data, tail = UNKNOWN_LENGTH[case]
    wav = tmp_path / "recorded.wav"
    wav.write_bytes(_with_sizes(good, len(good) - 8 if riff is None else riff, data, tail))
    samples = read_wav(area / "stream.wav", RATE)
    # both readers: the kws one (stream words and noise, the manifest) and libsndfile's
    assert np.array_equal(read_wav(wav, RATE), samples)
    assert inspect_wav(wav, RATE).num_samples == len(samples)
    assert np.array_equal(load_any_wav(wav, RATE).samples, samples)
    rc, out, err = _run(capsys, area, wav, area / "truth.txt")
    rc_good, out_good, _ = _run(capsys, area, area / "stream.wav", area / "truth.txt")
    assert rc == rc_good == 0 and err == []
    assert out.splitlines()[:3] == out_good.splitlines()[:3]  # the same detections and scores


@pytest.mark.timeout(120)
def test_a_data_chunk_longer_than_the_file_is_still_truncated(area, tmp_path):
    good = (area / "stream.wav").read_bytes()
    wav = tmp_path / "cut.wav"
    wav.write_bytes(good[: len(good) // 2])  # sizes say the whole stream, half is there
    with pytest.raises(WavError, match=f"header says {len(good) - 44} data bytes"):
        read_wav(wav, RATE)


# ------------------------------------------------------------ 5. other rates and channels
@pytest.mark.timeout(120)
def test_streams_at_other_rates_and_channels_get_label_wavs_notes(area, tmp_path, capsys):
    audio, _ = sf.read(area / "stream.wav", dtype="float32")
    x = np.interp(np.arange(STREAM_S * 44100) * RATE / 44100, np.arange(len(audio)), audio)
    wav = tmp_path / "stereo_44k.wav"
    sf.write(wav, np.stack([x, x], axis=1), 44100, subtype="PCM_16")
    rc, out, err = _run(capsys, area, wav, area / "truth.txt")
    assert rc == 0 and err == [], err
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == ["note: down-mixed 2 channels to mono", "note: resampled 44100 Hz to 16000 Hz"]
    capsys.readouterr()
    export = area / "export"
    assert (
        main(
            ["label-wav", "--params", str(area / "params.yaml"), "--wav", str(wav)]
            + [
                "--graph",
                str(export / "model_float.tflite"),
                "--labels",
                str(export / "labels.txt"),
            ]
        )
        == 0
    )
    label_wav = capsys.readouterr().out.splitlines()
    assert label_wav[:2] == notes  # the same words (its third note is its loudest window)
    rc, out, _ = _run(capsys, area, area / "stream.wav", area / "truth.txt")
    assert rc == 0 and "note:" not in out  # nothing to say about a 16 kHz mono stream


# ------------------------------------------------------------ 6. XNNPACK's line on stderr
@pytest.mark.timeout(120)
def test_tflite_cli_error_is_exactly_one_line_on_stderr(area, tmp_path):
    """A real process: TFLite's C++ "Created TensorFlow Lite XNNPACK delegate" line (printed
    when a float model allocates) went straight to fd 2, after the error on an exit."""
    truth = tmp_path / "other_words.txt"
    truth.write_text("up, 1000\n")
    export = area / "export"
    base = [sys.executable, "-m", "kws_core.cli", "test-streaming-accuracy", "--no-progress"]
    base += ["--params", str(area / "params.yaml"), "--wav", str(area / "stream.wav")]
    base += ["--graph", str(export / "model_float.tflite"), "--labels", str(export / "labels.txt")]
    bad = subprocess.run(
        [*base, "--ground_truth", str(truth)], capture_output=True, text=True, timeout=100
    )
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kws test-streaming-accuracy: error: "), lines
    assert str(truth) in lines[0]
    good = subprocess.run(
        [*base, "--ground_truth", str(area / "truth.txt")],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert good.returncode == 0 and "% matched" in good.stdout
    assert good.stderr == "", good.stderr  # the model was invoked: still nothing on stderr


@pytest.mark.timeout(120)
def test_the_stderr_filter_keeps_other_native_output(capfd):
    """Only the banner goes: anything else the runtime writes to fd 2 meanwhile is kept."""
    with native_stderr_without((XNNPACK_BANNER,)):
        os.write(2, f"INFO: {XNNPACK_BANNER} for CPU.\nreal problem\n".encode())
    assert capfd.readouterr().err == "real problem\n"


@pytest.mark.timeout(120)
def test_data_error_is_the_type_for_bad_truth(area, tmp_path):
    """The checks are DataErrors raised by kws_core (DVC, Dagster and the CLI share them)."""
    truth = tmp_path / "t.txt"
    truth.write_text("up, 1000\n")
    with pytest.raises(DataError, match="'up' \\(line 1\\)"):
        read_ground_truth(truth, LABELS, 5000)
    truth.write_text("yes, 6000\n")
    with pytest.raises(DataError, match="line 1: time 6000 ms is past the end"):
        read_ground_truth(truth, LABELS, 5000)
