"""`kws_core.demo.fake_mic`: where a capture starts in the file played into it."""

import numpy as np
import pytest

from kws_core.demo.fake_mic import capture_offset_ms
from kws_core.infra.errors import KwsError

RATE = 16000


def bursts(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts of random length and loudness: an envelope with one best alignment."""
    rng = np.random.default_rng(seed)
    x = 0.001 * rng.standard_normal(int(seconds * RATE))
    at = 0
    while at < len(x):
        n = int(rng.integers(1600, 8000))
        x[at : at + n] *= rng.uniform(5, 300)
        at += n + int(rng.integers(1600, 12000))
    return x.astype(np.float32)


@pytest.mark.parametrize("lag_ms", [0, 730, 2480, -400])
def test_the_lag_is_found_from_either_side(lag_ms):
    played = bursts(20, 0)
    lag = lag_ms * RATE // 1000
    if lag >= 0:
        received = played[lag:]
    else:  # the capture began before the file: silence first
        received = np.concatenate([np.zeros(-lag, np.float32), played])
    # what the page sends is int16 PCM, a little noisy
    noisy = received + 0.0005 * np.random.default_rng(1).standard_normal(len(received))
    received = np.round(noisy * 32767) / 32767
    assert capture_offset_ms(received.astype(np.float32), played, RATE) == lag_ms


def test_another_file_is_a_one_line_error():
    with pytest.raises(KwsError, match="does not line up") as e:
        capture_offset_ms(bursts(12, 2), bursts(20, 3), RATE)
    assert "\n" not in str(e.value)
