"""StreamingSession: hop-by-hop scores equal `score_stream` on the whole stream.

Measured on these streams (noise with a loud tone), the features each window is scored on
differ from `stream_features` by at most: mfcc 1.9e-6, logmel 4.8e-6, average 1.8e-4 (3.8e-6
of the value: power, not log), embedding below the top 5 convolutions 1.4e-5 (values up to ~4),
frozen embedding 1.2e-4 (5.3e-6 of the value, up to ~50). The scores differ by at most: untrained
mfcc and logmel 7.5e-9, average 5.2e-8, trained mfcc 7.0e-7, the default embedding model 1.1e-5
(scores spanning 0..1), frozen embedding 1.2e-5; the PCM path's are bit-exact. The embedding
frames computed block by block (`_BlockEmbedder`) differ from `stream_features` as much as the
whole-window ones: 1.4e-5 (top 5 convolutions), 1.1e-4 frozen (values up to ~58).
Tolerances: scores 1e-4 absolute; features 1e-4 absolute plus 2e-5 relative.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from kws_core.config import load_params
from kws_core.export.loader import ExportedModel
from kws_core.export.writer import export_untrained
from kws_core.features.front_end import stream_features
from kws_core.infra.errors import KwsError
from kws_core.streaming.run import resolve_engine, score_stream
from kws_core.streaming.session import StreamingSession
from tests.conftest import FAST_FLAGS

RATE = 16000
FEATURE_TOL = 1e-4  # absolute, plus FEATURE_RTOL of the value
FEATURE_RTOL = 2e-5
SCORE_TOL = 1e-4
STRIDE = {"mfcc": 30, "logmel": 30, "average": 30, "embedding": 80, "embedding_frozen": 80}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Callable[[str], ExportedModel]:
    """An untrained export per front end (embedding: the default model), built once."""
    made: dict[str, ExportedModel] = {}

    def get(mode: str) -> ExportedModel:
        if mode not in made:
            if mode == "embedding":
                params = load_params(None)
            elif mode == "embedding_frozen":  # the whole embedding frozen: 96 values a frame
                params = load_params(None, {"embedding_finetune_layers": 0})
            else:
                params = load_params(None, FAST_FLAGS | {"preprocess": mode})
            folder = tmp_path_factory.mktemp(mode)
            made[mode] = ExportedModel.load(export_untrained(folder, params))
        return made[mode]

    return get


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = (0.05 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    tone = audio[RATE // 2 : RATE * 3 // 2]  # a loud tone from 0.5 s: windows differ a lot
    tone += 0.5 * np.sin(np.arange(len(tone)) / 5.0).astype(np.float32)
    return audio


def feed(session: StreamingSession, audio: np.ndarray, sizes) -> tuple[np.ndarray, np.ndarray]:
    """Push `audio` in hops of the given sizes (cycled); (times, scores) of all windows."""
    out, i, k = [], 0, 0
    while i < len(audio):
        n = sizes[k % len(sizes)]
        out += session.push(audio[i : i + n])
        i, k = i + n, k + 1
    labels = len(session.model.labels)
    scores = np.stack([s for _, s in out]) if out else np.zeros((0, labels), np.float32)
    return np.array([t for t, _ in out], np.int64), scores


def recorded(session: StreamingSession, monkeypatch) -> list[np.ndarray]:
    """The feature windows the session gives the model from now on."""
    seen: list[np.ndarray] = []
    real = session._head

    def spy(features: np.ndarray) -> np.ndarray:
        seen.append(np.array(features))
        return real(features)

    monkeypatch.setattr(session, "_head", spy)
    return seen


def assert_like_score_stream(model, audio, stride_ms, times, scores, seen=None) -> None:
    """Same window times as `score_stream`, scores within SCORE_TOL; and if `seen` (the
    feature windows the model was given), those are the whole stream's frames, window by
    window (the scores of an untrained model hardly move, the features do)."""
    if seen is not None:
        frames = stream_features(audio, model.spec)
        step = round(stride_ms * RATE / 1000) // model.spec.window_stride_samples
        view = sliding_window_view(frames, model.spec.spectrogram_length, axis=0)[::step]
        got = np.concatenate(seen)
        assert len(got) == len(times)
        want = view[: len(got)].transpose(0, 2, 1)
        np.testing.assert_allclose(got, want, rtol=FEATURE_RTOL, atol=FEATURE_TOL)
    want = score_stream(model, audio, stride_ms)
    np.testing.assert_array_equal(times, want.times_ms)
    np.testing.assert_allclose(scores, want.scores, rtol=0, atol=SCORE_TOL)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["mfcc", "logmel", "average", "embedding", "embedding_frozen"])
def test_random_hops_equal_score_stream(exports, mode, monkeypatch):
    model, stride = exports(mode), STRIDE[mode]
    audio = noise(6)
    session = StreamingSession(model, stride)
    assert session.path == "frames"
    sizes = [int(n) for n in np.random.default_rng(1).integers(1, 4000, 64)]
    seen = recorded(session, monkeypatch)
    times, scores = feed(session, audio, sizes)
    assert_like_score_stream(model, audio, stride, times, scores, seen)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["mfcc", "embedding"])
def test_hops_smaller_than_a_front_end_hop(exports, mode, monkeypatch):
    model, stride = exports(mode), STRIDE[mode]
    audio = noise(1.5, seed=2)
    session = StreamingSession(model, stride)
    seen = recorded(session, monkeypatch)
    hop = 37 if mode == "mfcc" else 700  # under 160 (mfcc frames), under 1280 (embeddings)
    times, scores = feed(session, audio, [hop, 0])  # 0: an empty hop changes nothing
    assert len(times) > 1
    assert_like_score_stream(model, audio, stride, times, scores, seen)


def test_one_hop_spanning_several_windows(exports, monkeypatch):
    model = exports("mfcc")
    audio = noise(4, seed=3)
    session = StreamingSession(model, 30)
    seen = recorded(session, monkeypatch)
    first = session.push(audio[: 3 * RATE])
    assert len(first) == (2 * RATE) // 480 + 1  # every window of the first 3 s at once
    rest = session.push(audio[3 * RATE :])
    times = np.array([t for t, _ in first + rest])
    scores = np.stack([s for _, s in first + rest])
    assert_like_score_stream(model, audio, 30, times, scores, seen)


@pytest.mark.parametrize("mode", ["mfcc", "embedding"])
def test_reset_starts_a_new_stream(exports, mode, monkeypatch):
    model, stride = exports(mode), STRIDE[mode]
    a, b = noise(3, seed=4), noise(2.5, seed=5)
    session = StreamingSession(model, stride)
    assert session.push(a[: 2 * RATE + 123])  # part-way through a frame and a window
    session.reset()
    assert session.state.samples_seen == 0
    seen = recorded(session, monkeypatch)
    times, scores = feed(session, b, [1000])
    assert_like_score_stream(model, b, stride, times, scores, seen)


def test_pcm_path_when_the_stride_is_not_whole_frames(exports):
    model = exports("mfcc")
    audio = noise(3, seed=6)
    session = StreamingSession(model, 25)  # 400 samples: not a whole number of 160-sample hops
    assert session.path == "pcm"
    times, scores = feed(session, audio, [999, 3000, 1])
    assert_like_score_stream(model, audio, 25, times, scores)
    assert len(session.state.pending) < model.spec.desired_samples + 3000  # the tail only


def test_bad_input_is_one_line(exports):
    model = exports("mfcc")
    session = StreamingSession(model, 30)
    for bad, words in (
        (np.zeros((2, 100), np.float32), "mono 1-D"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.array([np.inf], np.float32), "infinite"),
    ):
        with pytest.raises(KwsError, match=words) as e:
            session.push(bad)
        assert "\n" not in str(e.value)
    assert session.state.samples_seen == 0  # a refused hop is not taken
    with pytest.raises(KwsError, match="under one sample"):
        StreamingSession(model, 0.01)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained export (mfcc): its SavedModel and float TFLite model (PCM in)."""
    from kws_core.data.manifest import build_manifest
    from kws_core.export.writer import export_model
    from kws_core.training.loop import train
    from tests.conftest import build_tiny_dataset
    from tests.test_train import params_for

    root = tmp_path_factory.mktemp("session")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40)
    p = params_for(root, how_many_training_steps="6,2", output_file=str(root / "export"))
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    return export_model(p, "best", manifest=manifest)


@pytest.mark.timeout(300)
def test_trained_savedmodel_and_tflite_exports(trained, monkeypatch):
    audio = noise(4, seed=7)
    saved = ExportedModel.load(trained.saved_model)
    session = StreamingSession(saved, 30)
    assert session.path == "frames"
    seen = recorded(session, monkeypatch)
    times, scores = feed(session, audio, [480, 2000, 77])
    assert_like_score_stream(saved, audio, 30, times, scores, seen)
    assert np.ptp(scores) > 0.01  # a trained model's scores move with the tone
    # A TFLite export that takes PCM: windows are scored from their samples.
    tfl = ExportedModel.load(trained.tflite_float)
    assert tfl.features_tflite() is None
    session = StreamingSession(tfl, 30)
    assert session.path == "pcm"
    times, scores = feed(session, audio, [480, 2000, 77])
    assert_like_score_stream(tfl, audio, 30, times, scores)


def test_sessions_keep_their_own_state(exports):
    """Two clients of one model, hops interleaved: each gets its own stream's scores."""
    model = exports("embedding")
    a, b = noise(3, seed=8), noise(3.2, seed=9)
    one, two = StreamingSession(model, 80), StreamingSession(model, 80)
    got: dict[int, list] = {0: [], 1: []}
    for i in range(0, len(b), 1000):
        got[0] += one.push(a[i : i + 1000])
        got[1] += two.push(b[i : i + 1000])
    for audio, out in ((a, got[0]), (b, got[1])):
        times = np.array([t for t, _ in out])
        assert_like_score_stream(model, audio, 80, times, np.stack([s for _, s in out]))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["embedding", "embedding_frozen"])
def test_embedding_blocks_and_whole_windows_equal_score_stream(exports, mode, monkeypatch):
    """Digital silence next to noise spans over 80 dB: those windows' floor clamps, so they
    run whole; the rest come from the blocks. Both give the whole stream's frames."""
    model = exports(mode)
    audio = noise(6, seed=10)
    audio[2 * RATE : 3 * RATE] = 0.0
    session = StreamingSession(model, 80)
    assert session._framer.blocks is not None
    seen = recorded(session, monkeypatch)
    times, scores = feed(session, audio, [1280, 5000, 311])
    assert session.state.incremental > 10 and session.state.whole > 5
    assert_like_score_stream(model, audio, 80, times, scores, seen)


@pytest.mark.timeout(120)
def test_session_engine_of_score_stream(exports):
    """`score_stream(engine="session")`: the same windows as the batches, scores within
    SCORE_TOL; "auto" takes it for the embedding front end only."""
    model = exports("embedding")
    audio = noise(5, seed=11)
    audio[RATE : RATE + 8000] = 0.0
    got = score_stream(model, audio, 80, engine="session")
    want = score_stream(model, audio, 80, engine="batch")
    assert (got.engine, want.engine) == ("session", "batch")
    np.testing.assert_array_equal(got.times_ms, want.times_ms)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=SCORE_TOL)
    assert got.seconds > 0 and got.audio_seconds == want.audio_seconds
    assert resolve_engine(model, 80) == "session"
    assert resolve_engine(model, 40) == "batch"  # not whole embedding hops: the PCM path
    assert resolve_engine(exports("mfcc"), 30) == "batch"
    assert resolve_engine(exports("mfcc"), 30, "session") == "session"
    with pytest.raises(KwsError, match="stream.engine: 'fast' is not one of auto, session"):
        score_stream(model, audio, 80, engine="fast")
    with pytest.raises(KwsError, match="shorter than one"):
        score_stream(model, audio[:8000], 80, engine="session")
