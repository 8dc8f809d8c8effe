"""Block-wise stream scoring: the same scores as `score_stream`, in bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from kws_core.config import load_params
from kws_core.export.loader import ExportedModel
from kws_core.export.writer import export_untrained
from kws_core.infra.errors import KwsError
from kws_core.streaming.recognize import RecognizeCommands
from kws_core.streaming.run import CHUNK, BlockScorer, score_stream, score_stream_blocks
from tests.conftest import FAST_FLAGS

RATE = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> ExportedModel:
    # the MFCC model: these strides (30 ms ...) are whole hops of its 10 ms frames
    params = load_params(None, FAST_FLAGS)
    return ExportedModel.load(export_untrained(tmp_path_factory.mktemp("untrained"), params))


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = (0.05 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    audio[RATE * 5 : RATE * 6] += 0.5 * np.sin(np.arange(RATE) / 5.0).astype(np.float32)
    return audio


def cut(audio: np.ndarray, sizes: list[int]) -> Iterator[np.ndarray]:
    """`audio` in blocks of the given sizes, cycled (0 gives an empty block)."""
    i, k = 0, 0
    while i < len(audio):
        yield audio[i : i + sizes[k % len(sizes)]]
        i, k = i + sizes[k % len(sizes)], k + 1


def assert_same(model: ExportedModel, audio: np.ndarray, stride_ms: float, sizes: list[int]):
    want = score_stream(model, audio, stride_ms)
    got = score_stream_blocks(model, cut(audio, sizes), stride_ms)
    np.testing.assert_array_equal(got.scores, want.scores)  # bit for bit
    np.testing.assert_array_equal(got.times_ms, want.times_ms)
    assert got.times_ms.dtype == np.int64
    assert got.audio_seconds == want.audio_seconds


# One stream_features batch is 100 clips of 98 frames: 1,568,320 samples (98.02 s) at the
# defaults; streams of that length, and longer, cross or end on its boundary.
FEATURE_BATCH_SAMPLES = (100 * 98 - 98) * 160 + RATE


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [FEATURE_BATCH_SAMPLES, FEATURE_BATCH_SAMPLES + 10 * RATE + 777])
def test_blocks_equal_score_stream_from_features(model, n):
    """30 ms is 3 hops: the features path (front end once, windows as frame views)."""
    assert BlockScorer(model, 30).from_features
    audio = noise(n / RATE)[:n]
    assert_same(model, audio, 30, [60 * RATE])
    assert_same(model, audio, 30, [12345, 0, 1, 777_777])


@pytest.mark.timeout(60)
def test_blocks_equal_score_stream_from_samples(model):
    """25 ms is not a whole number of 10 ms hops: each window through the model's own front
    end. The stream holds exactly 2 model calls of CHUNK windows."""
    assert not BlockScorer(model, 25).from_features
    n = (2 * CHUNK - 1) * 400 + RATE
    audio = noise(n / RATE)[:n]
    assert_same(model, audio, 25, [7 * RATE])
    assert_same(model, audio, 25, [401, 0, 99_999])
    assert_same(model, audio[: n - 1], 25, [n])  # one window fewer: a short last call


@pytest.mark.timeout(30)
def test_block_scorer_refuses_what_score_stream_refuses(model):
    with pytest.raises(KwsError, match="shorter than one"):
        score_stream_blocks(model, [np.zeros(8000), np.zeros(7999)], 30)
    with pytest.raises(KwsError, match="mono 1-D"):
        BlockScorer(model, 30).push(np.zeros((2, 100)))
    with pytest.raises(KwsError, match="under one sample"):
        BlockScorer(model, 0.01)
    scorer = BlockScorer(model, 30)
    scorer.push(np.zeros(RATE))
    assert len(scorer.finish()[0]) == 1
    with pytest.raises(KwsError, match="after finish"):
        scorer.push(np.zeros(10))


def _peak_bytes(model: ExportedModel, minutes: int) -> tuple[int, int]:
    """Python-side peak memory (tracemalloc: NumPy buffers included) while scoring a noise
    stream generated in 60 s blocks and smoothed as it goes, and the windows scored."""
    rng = np.random.default_rng(minutes)
    rc = RecognizeCommands(model.labels)
    windows = 0
    tracemalloc.start()
    try:
        scorer = BlockScorer(model, 30)
        for k in range(minutes + 1):
            if k < minutes:
                block = (0.05 * rng.standard_normal(60 * RATE)).astype(np.float32)
                scores, times = scorer.push(block)
            else:
                scores, times = scorer.finish()
            for row, t in zip(scores, times.tolist(), strict=True):
                rc.process_latest_result(row, t)
            windows += len(times)
        return tracemalloc.get_traced_memory()[1], windows
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_memory_stays_bounded_over_a_long_stream(model):
    """20 minutes of audio is 77 MB of float32 samples. Scored block by block, the peak is
    one block's generation, the scorer's tail and one model call's arrays (~36 MB at the
    defaults), whatever the stream's length."""
    short, short_windows = _peak_bytes(model, 5)
    long, long_windows = _peak_bytes(model, 20)
    assert long_windows == (20 * 60 * RATE - RATE) // 480 + 1
    assert short_windows == (5 * 60 * RATE - RATE) // 480 + 1
    assert long < 50e6, f"peak {long / 1e6:.1f} MB for 20 minutes"
    assert long - short < 1e6, f"peak grew {(long - short) / 1e6:.2f} MB from 5 to 20 minutes"
