"""The noise recordings augmentation mixes into training clips and cuts silence from.

They are data_dir's `_background_noise_/*.wav` (the tutorial's) plus any folders in
`augment.noise_dirs` (the user's own rooms). NumPy only: the feature cache hashes them
without importing TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kws_core.config import BACKGROUND_NOISE_DIR, Params
from kws_core.infra.errors import ConfigError
from kws_core.infra.wav import WavError, read_wav


def noise_dirs(params: Params) -> list[Path]:
    """`augment.noise_dirs` as folders holding .wav files, or a one-line ConfigError."""
    dirs = [params.resolve(d) for d in params.augment.noise_dir_list]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(
                f"augment.noise_dirs: {d} is not a folder; give folders of noise .wav files "
                "separated by commas, or '' for none"
            )
        if not any(d.glob("*.wav")):
            raise ConfigError(
                f"augment.noise_dirs: {d} holds no .wav files; put the noise recordings "
                "directly in it (not in subfolders)"
            )
    return dirs


def background_files(data_dir: Path, extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """The noise recordings augmentation draws from: data_dir's `_background_noise_/*.wav`,
    then each of `extra_dirs`' *.wav, in a fixed order."""
    files = sorted((data_dir / BACKGROUND_NOISE_DIR).glob("*.wav"))
    for folder in extra_dirs:
        files += sorted(Path(folder).glob("*.wav"))
    return files


def load_background(
    data_dir: Path, sample_rate: int, min_samples: int, extra_dirs: Sequence[Path] = ()
) -> list[np.ndarray]:
    """Usable noise recordings (`background_files`) as float32 arrays (bad or short files
    skipped)."""
    out = []
    for path in background_files(data_dir, extra_dirs):
        try:
            x = read_wav(path, sample_rate)
        except (WavError, OSError):
            continue
        if len(x) > min_samples:
            out.append(x.astype(np.float32))
    return out
