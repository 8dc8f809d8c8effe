"""Streaming evaluation end to end: streams, the model over them, the report, the CLI verbs."""

import json
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kws_core.data.manifest import build_manifest, write_manifest
from kws_core.export.loader import ExportedModel
from kws_core.export.writer import export_model
from kws_core.infra.errors import ConfigError, KwsError
from kws_core.streaming.report import generate_test_stream, stream_accuracy, streaming_eval
from kws_core.streaming.run import score_stream, window_starts
from kws_core.streaming.score import read_ground_truth
from kws_core.training.loop import train
from tests.conftest import build_tiny_dataset, write_clip
from tests.test_train import learned_params

STREAM = {
    "stream_duration_s": 60,
    "negative_duration_s": 120,
    "word_gap_ms": 2000,
    "stream_dir": None,  # set per test root
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat", "dog"], 150, learnable=True)
    over = STREAM | {"stream_dir": str(root / "streaming")}
    p = learned_params(
        root, representative_examples=50, manifest_dir=str(root / "manifest"), **over
    )
    result = build_manifest(p.data, data, progress=False)
    write_manifest(result, root / "manifest")
    res = train(p, result.manifest, data, progress=False, log=lambda _m: None, track=True)
    export = export_model(p, "best", manifest=result.manifest)
    return p, export, res


def test_window_starts_and_times():
    assert list(window_starts(16000, 16000, 480)) == [0]
    assert list(window_starts(15999, 16000, 480)) == []
    assert list(window_starts(17000, 16000, 480)) == [0, 480, 960]


@pytest.mark.parametrize("stride_ms", [250, 30, 25])
def test_score_stream_equals_scoring_each_window(trained, stride_ms):
    """30 and 250 ms are whole hops (features computed once per stream), 25 ms is not (each
    window through the model's own front end): every path gives each window's own scores."""
    p, export, _ = trained
    model = ExportedModel.load(export.saved_model)
    assert model.scores_features
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(16000 * 3 + 777)).astype(np.float32)
    audio[20000:26000] += 0.5 * np.sin(np.arange(6000) / 5.0).astype(np.float32)
    scored = score_stream(model, audio, stride_ms)
    stride = stride_ms * 16
    starts = window_starts(len(audio), 16000, stride)
    want = model.scores(np.stack([audio[s : s + 16000] for s in starts]))
    np.testing.assert_allclose(scored.scores, want, atol=2e-5)
    assert list(scored.times_ms) == [int(s / 16 + 500) for s in starts]  # window centres
    assert scored.real_time_factor > 0
    with pytest.raises(KwsError, match="shorter than one"):
        score_stream(model, audio[:8000], 30)


def test_tflite_stream_scores_each_window_through_its_front_end(trained):
    _, export, _ = trained
    model = ExportedModel.load(export.tflite_float)
    assert not model.scores_features
    audio = (0.05 * np.random.default_rng(1).standard_normal(16000 * 2)).astype(np.float32)
    scored = score_stream(model, audio, 250)
    starts = window_starts(len(audio), 16000, 4000)
    want = model.scores(np.stack([audio[s : s + 16000] for s in starts]))
    np.testing.assert_allclose(scored.scores, want, atol=1e-6)


def test_streams_are_generated_once_and_regenerated_when_settings_change(trained):
    p, _, _ = trained
    first = generate_test_stream(p)
    truth = read_ground_truth(first.truth)
    assert 25 <= len(truth) <= 30  # a word every ~2 s of 60 s
    assert {label for label, _ in truth} <= {"yes", "no", "cat", "_unknown_"}
    again = generate_test_stream(p)
    assert again.reused and again.wav == first.wav
    neg = generate_test_stream(p, negative=True)
    assert {label for label, _ in read_ground_truth(neg.truth)} == {"_unknown_"}
    changed = p.model_copy(deep=True)
    changed.stream.stream_seed = 7
    other = generate_test_stream(changed)
    assert not other.reused and read_ground_truth(other.truth) != truth
    generate_test_stream(p)  # back to the fixture's stream


def test_streams_from_a_labelled_folder_and_a_noise_folder(trained, tmp_path):
    """stream.words_dir / noise_dir: e.g. real recordings in the official test-set layout."""
    p, _, _ = trained
    words = build_tiny_dataset(tmp_path / "words", ["yes", "no", "_unknown_"], 8, noise=False)
    (words / "_silence_").mkdir()
    write_clip(words / "_silence_" / "s.wav", np.zeros(16000, np.float32))
    noise = tmp_path / "noise"
    write_clip(noise / "hum.wav", 0.05 * np.sin(np.arange(48000) / 7.0).astype(np.float32))
    q = p.model_copy(deep=True)
    q.stream.words_dir, q.stream.noise_dir = str(words), str(noise)
    q.stream.stream_dir = str(tmp_path / "streams")
    files = generate_test_stream(q)
    truth = read_ground_truth(files.truth)
    assert {label for label, _ in truth} <= {"yes", "no", "_unknown_"}
    assert {label for label, _ in truth} >= {"yes", "no"}
    stamp = json.loads(files.wav.with_suffix(".json").read_text())
    assert stamp["words_dir"] == str(words) and stamp["noise"] == [str(noise / "hum.wav")]
    assert generate_test_stream(q).reused
    write_clip(words / "yes" / "new_nohash_0.wav", np.zeros(16000, np.float32))
    assert not generate_test_stream(q).reused  # a changed folder gives a new stream
    neg = generate_test_stream(q, negative=True)
    assert {label for label, _ in read_ground_truth(neg.truth)} == {"_unknown_"}
    for key, bad, message in (
        ("words_dir", tmp_path / "missing", "stream.words_dir: .* is not a folder"),
        ("noise_dir", tmp_path / "words" / "yes" / "x", "stream.noise_dir: .* no .wav files"),
    ):
        r = q.model_copy(deep=True)
        setattr(r.stream, key, str(bad))
        with pytest.raises(KwsError, match=message):
            generate_test_stream(r)


def test_stream_outputs_never_replace_a_users_file_or_an_input(trained, tmp_path):
    p, _, _ = trained
    mine = tmp_path / "mine.wav"
    mine.write_bytes(b"RIFF my recording")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(ConfigError, match="not written by generate-streaming-test-wav"):
        generate_test_stream(p, wav=mine, truth=tmp_path / "t.txt")
    with pytest.raises(ConfigError, match="not written by generate-streaming-test-wav"):
        generate_test_stream(p, wav=tmp_path / "new.wav", truth=notes)
    with pytest.raises(ConfigError, match="must be three files"):
        generate_test_stream(p, wav=tmp_path / "s.wav", truth=tmp_path / "s.wav")
    clip = next(p.layout.data_dir.rglob("*.wav"))
    clip_bytes = clip.read_bytes()
    with pytest.raises(ConfigError, match="inside the stream's input"):
        generate_test_stream(p, wav=clip, truth=tmp_path / "t.txt")
    with pytest.raises(ConfigError, match="is a folder"):
        generate_test_stream(p, wav=tmp_path, truth=tmp_path / "t.txt")
    assert mine.read_bytes() == b"RIFF my recording" and notes.read_text() == "my notes"
    assert clip.read_bytes() == clip_bytes
    assert not (tmp_path / "new.wav").exists() and not (tmp_path / "t.txt").exists()
    # its own stream, even one a kill left without finished settings, is written again
    wav, truth = tmp_path / "s.wav", tmp_path / "s_labels.txt"
    first = generate_test_stream(p, wav=wav, truth=truth)
    assert not first.reused and generate_test_stream(p, wav=wav, truth=truth).reused
    wav.with_suffix(".json").write_text('{"seed": null, "writing": true}')
    assert not generate_test_stream(p, wav=wav, truth=truth).reused
    assert generate_test_stream(p, wav=wav, truth=truth).reused


def test_stream_accuracy_on_a_learned_model(trained):
    p, export, _ = trained
    files = generate_test_stream(p)
    model = ExportedModel.load(export.saved_model)
    result = stream_accuracy(model, files.wav, files.truth, p)
    stats = result.stats
    # The tones are easy: most keywords are found, few false positives ...
    assert stats.false_reject_rate < 0.2, stats.summary()
    assert stats.false_positive_pct < 20, stats.summary()
    # ... while micro_speech's repeat rule fires on a word again once suppression_ms has passed
    # (its 1 s average stays high for longer than that).
    micro = p.model_copy(deep=True)
    micro.stream.repeat_after_suppression = True
    repeats = stream_accuracy(model, files.wav, files.truth, micro).stats
    assert repeats.false_positives > stats.false_positives, (repeats.summary(), stats.summary())
    assert "% matched" in stats.summary() and "false accepts" in stats.summary()
    tfl = stream_accuracy(ExportedModel.load(export.tflite_float), files.wav, files.truth, p)
    assert tfl.stats.correct == stats.correct  # float TFLite: the same detections
    assert result.scores.engine == "batch"  # auto: batch for an mfcc model
    # the stateful session (stream.engine: session): scores within float noise of the batches
    # (tests/test_stream_session.py), so the same detections
    session = p.model_copy(deep=True)
    session.stream.engine = "session"
    live = stream_accuracy(model, files.wav, files.truth, session)
    assert live.scores.engine == "session"
    np.testing.assert_allclose(live.scores.scores, result.scores.scores, rtol=0, atol=1e-4)
    assert [(d.time_ms, d.label) for d in live.detections] == [
        (d.time_ms, d.label) for d in result.detections
    ]
    assert live.stats.to_dict() == result.stats.to_dict()


def test_streaming_eval_writes_the_report_and_logs_it_to_the_training_run(trained):
    p, export, res = trained
    report = streaming_eval(p, progress=False)
    for key in ("report_json", "report_md", "det_png", "det_csv"):
        assert report.files[key].exists() and report.files[key].stat().st_size > 100
    r = json.loads(report.files["report_json"].read_text())
    assert r["keyword_stream"]["duration_s"] == pytest.approx(60)
    assert r["negative_stream"]["duration_s"] == pytest.approx(120)
    assert r["negative_stream"]["keyword_words"] == 0
    assert 0 < r["real_time_factor"] < 1
    assert r["engine"] == "batch"
    assert any(line.endswith("batch engine)") for line in report.summary_lines())
    assert report.files["det_png"].read_bytes()[:4] == b"\x89PNG"
    assert "![DET curve](det_curve.png)" in report.files["report_md"].read_text()
    client = MlflowClient(p.train.mlflow_tracking_uri)
    run = client.get_run(res.run_id)
    assert "stream_false_accepts_per_hour" in run.data.metrics
    names = [a.path for a in client.list_artifacts(res.run_id, "streaming")]
    assert "streaming/det_curve.png" in names and "streaming/report.json" in names
    assert any("threshold" in line or "FA/h" in line for line in report.summary_lines())


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "kws_core.cli", *args, "--no-progress"],
        capture_output=True,
        text=True,
    )


def test_cli_streaming_verbs(trained, tmp_path):
    p, export, _ = trained
    wav, labels = tmp_path / "s.wav", tmp_path / "s_labels.txt"
    flags = [
        f"--{k}={v}"
        for k, v in {
            "wanted_words": "yes,no,cat",
            "data_dir": p.data.data_dir,
            "data_url": "",
            "manifest_dir": p.data.manifest_dir,
            "stream_duration_s": 30,
            "word_gap_ms": 2000,
        }.items()
    ]
    run = _cli("generate-streaming-test-wav", "--output_wav", str(wav), *flags)
    assert run.returncode == 0, run.stderr
    assert wav.exists() and labels.exists()
    run = _cli(
        "test-streaming-accuracy",
        "--graph",
        str(export.tflite_int8),
        "--labels",
        str(export.labels),
        "--wav",
        str(wav),
        "--ground_truth",
        str(labels),
        "--verbose",
        *flags,
    )
    assert run.returncode == 0, run.stderr
    assert "% matched" in run.stdout and "per hour" in run.stdout
    assert "real-time factor" in run.stdout and "(batch engine)" in run.stdout
    assert "(Correct)" in run.stdout or "(Wrong)" in run.stdout  # --verbose lists events
    labels.write_text("yes, 1000\nthis line is broken\n")
    run = _cli(
        "test-streaming-accuracy",
        "--graph",
        str(export.saved_model),
        "--wav",
        str(wav),
        "--ground_truth",
        str(labels),
        *flags,
    )
    assert run.returncode == 2 and "line 2" in run.stderr and "Traceback" not in run.stderr


def test_read_stream_report_says_what_to_run(tmp_path):
    from kws_core.config import STREAM_REPORT_FILE as REPORT_FILE
    from kws_core.config import load_params
    from kws_core.infra.errors import DataError
    from kws_core.streaming.report import read_stream_report

    params = load_params(None, {"stream_dir": str(tmp_path)})
    with pytest.raises(DataError, match="run `kws stream-eval` first"):
        read_stream_report(params)
    (tmp_path / REPORT_FILE).write_text("{broken")
    with pytest.raises(DataError, match="unreadable"):
        read_stream_report(params)
    (tmp_path / REPORT_FILE).write_text('{"real_time_factor": 0.01}')
    assert read_stream_report(params) == {"real_time_factor": 0.01}
