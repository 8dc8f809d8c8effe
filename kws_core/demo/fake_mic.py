"""A WAV file as the demo page's microphone: Chromium's flags, and where the page's time 0 is.

The browser test (tests/ui/test_demo_page.py) and `bench/demo_browser.py` play a stream into
the page with Chromium's fake microphone (`fake_microphone_args`). It starts playing its file
when the device opens, before the page's AudioWorklet is connected, so the page hears the file
from some way in; to score the page's detections against the file's ground truth,
`capture_offset_ms` finds that offset from the audio the server received.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kws_core.infra.errors import KwsError

MIN_CORRELATION = 0.8  # below this the capture is not the file (or not enough of it)


def fake_microphone_args(wav: str | Path) -> list[str]:
    """Chromium flags: headless-safe, microphone granted without asking, `wav` as its audio."""
    return [
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def _loudness(x: np.ndarray, hop: int) -> np.ndarray:
    """Log RMS of each `hop` samples (the envelope: robust to resampling and int16 rounding)."""
    n = len(x) // hop
    return np.log(np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)) + 1e-4)


def capture_offset_ms(
    received: np.ndarray, played: np.ndarray, rate: int, max_lag_s: float = 3.0
) -> int:
    """Where the capture's time 0 falls in `played` (ms, 10 ms steps; negative: before it
    starts): the lag that best lines up the 10 ms loudness of the first 10 s received with the
    file's. KwsError when no lag correlates above MIN_CORRELATION."""
    hop = rate // 100
    a, b = _loudness(received[: 10 * rate], hop), _loudness(played, hop)
    lags = range(-int(100 * max_lag_s), int(100 * max_lag_s))
    corr = np.full(len(lags), -1.0)
    for i, lag in enumerate(lags):
        x, y = (a, b[lag:]) if lag >= 0 else (a[-lag:], b)
        n = min(len(x), len(y))
        if n > 100 and np.std(x[:n]) > 0 and np.std(y[:n]) > 0:  # at least 1 s overlapping
            corr[i] = np.corrcoef(x[:n], y[:n])[0, 1]
    best = int(np.argmax(corr))
    if corr[best] < MIN_CORRELATION:
        raise KwsError(
            f"the captured audio does not line up with the played file (best correlation "
            f"{corr[best]:.2f} within {max_lag_s:g} s); was it the file that played?"
        )
    return 10 * lags[best]
