from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kws_core.infra.errors import DataError
from kws_core.infra.wav import read_wav
from kws_core.streaming import generate, generate_stream, read_ground_truth, write_stream
from tests.conftest import write_clip

RATE = 16000
LABELS = ["_silence_", "_unknown_", "yes", "no"]


def peaked_clip(peak_s: float, freq: float) -> np.ndarray:
    """A 1 s clip whose loudest point is at peak_s (a Gaussian-windowed tone)."""
    t = np.arange(RATE) / RATE
    return (0.5 * np.exp(-(((t - peak_s) / 0.04) ** 2)) * np.sin(2 * np.pi * freq * t)).astype(
        np.float32
    )


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, pd.DataFrame, list[str]]:
    """Clips whose word sits early, centred or late, a manifest and one noise file."""
    root = tmp_path / "data"
    rows = []
    for word, label in (("yes", "yes"), ("no", "no"), ("cat", "_unknown_")):
        for i, peak in enumerate((0.2, 0.5, 0.8)):
            path = f"{word}/spk{i}_nohash_0.wav"
            write_clip(root / path, peaked_clip(peak, 300 + 100 * i), RATE)
            rows.append({"path": path, "word": word, "label": label, "partition": "testing"})
    # Rows that must never be used: another partition (file missing) and silence.
    rows.append({"path": "yes/gone.wav", "word": "yes", "label": "yes", "partition": "training"})
    noise = "_background_noise_/white_noise.wav"
    rows.append({"path": noise, "word": "_silence_", "label": "_silence_", "partition": "testing"})
    rng = np.random.default_rng(0)
    write_clip(root / noise, 0.1 * rng.standard_normal(RATE * 3), RATE)
    return root, pd.DataFrame(rows), [noise]


def make(dataset, **kw):
    root, manifest, background = dataset
    args = dict(duration_s=120, word_gap_ms=1000, seed=3) | kw
    return generate_stream(manifest, root, background, LABELS, **args)


def test_duration_word_count_and_unknown_share(dataset):
    samples, truth = make(dataset, unknown_fraction=0.3)
    assert samples.dtype == np.float32 and samples.size == 120 * RATE
    assert np.abs(samples).max() <= 1.0
    assert len(truth) == 120
    labels = [label for label, _ in truth]
    assert labels.count("_unknown_") == 36
    assert {"yes", "no"} <= set(labels) <= {"yes", "no", "_unknown_"}
    times = np.array([t for _, t in truth])
    assert np.all(np.diff(times) >= 600)  # jitter keeps words at least 0.6 gaps apart
    assert times[0] > 0 and times[-1] < 120_000
    assert np.abs(samples[: RATE // 2]).max() > 0  # background noise is there


def envelope_peak(samples: np.ndarray, centre_ms: int, span_ms: int = 400) -> float:
    """Time (ms) of the loudest 10 ms frame within span_ms of centre_ms."""
    frame = RATE // 100
    lo = (centre_ms - span_ms) * RATE // 1000
    chunk = samples[lo : lo + 2 * span_ms * RATE // 1000]
    energy = np.square(chunk[: chunk.size // frame * frame]).reshape(-1, frame).sum(axis=1)
    return (lo + (int(np.argmax(energy)) + 0.5) * frame) * 1000 / RATE


def test_truth_time_is_the_words_loudest_point(dataset):
    samples, truth = make(dataset, background_volume=0.0, duration_s=30, word_gap_ms=2000)
    assert len(truth) == 15
    for _, time_ms in truth:
        assert abs(envelope_peak(samples, time_ms) - time_ms) <= 10


def test_same_seed_same_stream(dataset):
    a, truth_a = make(dataset, duration_s=20)
    b, truth_b = make(dataset, duration_s=20)
    c, truth_c = make(dataset, duration_s=20, seed=4)
    assert np.array_equal(a, b) and truth_a == truth_b
    assert not np.array_equal(a, c) and truth_a != truth_c


def test_negative_stream_has_no_keywords(dataset):
    samples, truth = make(dataset, keywords=False, duration_s=60, word_gap_ms=3000)
    assert len(truth) == 20
    assert {label for label, _ in truth} == {"_unknown_"}


def test_write_stream_round_trip_and_atomicity(dataset, tmp_path, monkeypatch):
    samples, truth = make(dataset, duration_s=10)
    out = tmp_path / "out"
    wav, labels = write_stream(out / "stream.wav", out / "stream_labels.txt", samples, truth)
    assert np.allclose(read_wav(wav, RATE), samples, atol=1 / 32000)
    assert read_ground_truth(labels) == truth
    assert sorted(p.name for p in out.iterdir()) == ["stream.wav", "stream_labels.txt"]

    def boom(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(generate, "write_ground_truth", boom)
    with pytest.raises(OSError):
        write_stream(tmp_path / "new" / "s.wav", tmp_path / "new" / "s.txt", samples, truth)
    assert list((tmp_path / "new").iterdir()) == []


def test_clear_errors(dataset, tmp_path):
    root, manifest, background = dataset
    with pytest.raises(DataError, match="validation partition .* no clips of the wanted words"):
        make(dataset, partition="validation")
    with pytest.raises(DataError, match="_background_noise_"):
        generate_stream(manifest, root, [], LABELS, duration_s=10)
    no_unknown = manifest[manifest.label != "_unknown_"]
    with pytest.raises(DataError, match="no _unknown_ clips"):
        generate_stream(no_unknown, root, background, LABELS, 10, keywords=False)
    generate_stream(no_unknown, root, background, LABELS, 10, unknown_fraction=0)  # fine
    broken = manifest.assign(path=manifest.path.str.replace("cat/", "dog/"))
    with pytest.raises(DataError, match=r"dog/spk\d_nohash_0.wav.*rebuild the manifest"):
        generate_stream(broken, root, background, LABELS, 30, keywords=False)
    with pytest.raises(DataError, match="background file .*missing.wav"):
        generate_stream(manifest, root, ["missing.wav"], LABELS, 10)


def test_with_a_real_manifest(tiny_dataset):
    from kws_core.config import load_params
    from kws_core.data.manifest import build_manifest

    root = tiny_dataset(speakers=30)
    result = build_manifest(load_params(None, {"wanted_words": "yes,no"}).data, root, False)
    samples, truth = generate_stream(
        result.manifest, root, list(result.background.path), LABELS, 30, word_gap_ms=3000
    )
    assert samples.size == 30 * RATE and len(truth) == 10
    assert {label for label, _ in truth} <= {"yes", "no", "_unknown_"}
