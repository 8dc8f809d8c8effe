"""Shared fixtures: tiny Speech-Commands-like folders built from tones (no espeak needed)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import kws_core  # noqa: F401  (before any test module imports TensorFlow: its oneDNN default)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from kws_core.features.recording import CHAIN_OFF  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Tests of the pipeline's machinery (training loop, resume, kills, locks, CLI, UIs) train the
# tutorial's fast MFCC model; the default speech-embedding model has tests of its own
# (test_speech_embedding.py, test_export.py, test_pipelines.py's run of the repo's params.yaml).
FAST_MODEL = {
    "features": {"preprocess": "mfcc"},
    "train": {"model_architecture": "low_latency_conv", "feature_source": "on_the_fly"},
    "stream": {"clip_stride_ms": 30},
    # the streaming export has tests of its own (test_streaming_export.py, test_demo.py)
    "export": {"streaming": False},
    # the tutorial's augmentation: the recording chain costs ~0.25 s a step on the fly
    "augment": dict(CHAIN_OFF),
}
FAST_FLAGS = {k: v for section in FAST_MODEL.values() for k, v in section.items()}


def with_fast_model(body: dict) -> dict:
    """A params body (sections) with FAST_MODEL under what it sets itself."""
    out = {section: dict(values) for section, values in FAST_MODEL.items()}
    for section, values in body.items():
        out[section] = out.get(section, {}) | dict(values)
    return out


REALDATA = REPO.parent / "shared" / "realdata"


def tone(seed: str, n: int = 16000, rate: int = 16000, freq: float | None = None) -> np.ndarray:
    """A short tone burst in silence, deterministic for `seed` (its pitch too, unless `freq`)."""
    h = int(hashlib.sha1(seed.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(h)
    x = 0.001 * rng.standard_normal(n)
    start, length = rng.integers(0, n // 2), n // 3
    t = np.arange(length) / rate
    pitch = (200 + h % 800) if freq is None else freq * (1 + 0.03 * rng.standard_normal())
    x[start : start + length] += 0.3 * np.sin(2 * np.pi * pitch * t)
    return x.astype(np.float32)


def write_clip(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    from kws_core.infra.wav import write_wav

    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, samples, rate)
    return path


def build_tiny_dataset(
    root: Path,
    words: list[str],
    speakers: int,
    utterances: int = 1,
    noise: bool = True,
    learnable: bool = False,
) -> Path:
    """Tone clips in the Speech Commands layout; `learnable` gives each word its own pitch."""
    for s in range(speakers):
        spk = hashlib.sha1(f"spk{s}".encode()).hexdigest()[:8]
        for i, w in enumerate(words):
            freq = 300.0 * 1.5**i if learnable else None
            for n in range(utterances):
                write_clip(root / w / f"{spk}_nohash_{n}.wav", tone(f"{w}{spk}{n}", freq=freq))
    if noise:
        rng = np.random.default_rng(0)
        write_clip(
            root / "_background_noise_" / "white_noise.wav", 0.1 * rng.standard_normal(16000 * 3)
        )
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Callable[..., Path]:
    def make(words=("yes", "no", "cat", "dog"), speakers: int = 60, **kw) -> Path:
        return build_tiny_dataset(tmp_path / "data", list(words), speakers, **kw)

    return make


@pytest.fixture
def realdata() -> Path:
    if not (REALDATA / "speech_commands_test_v0.02_dev").is_dir():
        pytest.skip("shared/realdata is not present")
    return REALDATA


def copy_dvc_project(repo: Path) -> None:
    """The repo's dvc.yaml, .dvcignore and the kws_core code its stages list as deps, into
    `repo` (the `kws` commands still run the installed package)."""
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    shutil.copytree(
        REPO / "kws_core", repo / "kws_core", ignore=shutil.ignore_patterns("__pycache__")
    )
