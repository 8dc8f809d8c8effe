"""`kws label-wav`: score WAV files with an exported model (SavedModel dir or .tflite)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kws_core.export.loader import ExportedModel
from kws_core.features.spectrogram import load_any_wav
from kws_core.infra.errors import ConfigError, DataError


@dataclass
class Labelled:
    path: Path
    top: list[tuple[str, float]]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{label} (score = {score:.5f})" for label, score in self.top]


def loudest_window(x: np.ndarray, n: int, hop: int) -> tuple[np.ndarray, int]:
    """The n-sample window with the most energy (hop-sample steps); (window, start)."""
    if len(x) <= n:
        return np.pad(x, (0, n - len(x))), 0
    c = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    starts = np.arange(0, len(x) - n + 1, hop)
    energy = c[starts + n] - c[starts]
    s = int(starts[int(np.argmax(energy))])
    return x[s : s + n], s


def wav_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(p.rglob("*.wav"))
        else:
            files.append(p)
    if not files:
        raise DataError(f"no .wav files in {', '.join(inputs)}")
    return files


def label_wavs(
    graph: str | Path, labels_path: str | Path, inputs: list[str], how_many_labels: int = 3
) -> list[Labelled]:
    if how_many_labels < 1:
        raise ConfigError(f"how_many_labels must be at least 1, got {how_many_labels}")
    model = ExportedModel.load(graph, labels_path)
    spec, labels = model.spec, model.labels
    batch, found = [], []
    for f in wav_files(inputs):
        wav = load_any_wav(f, spec.sample_rate)
        clip, start = loudest_window(wav.samples, spec.desired_samples, spec.window_stride_samples)
        notes = list(wav.notes)
        if len(wav.samples) > spec.desired_samples:
            notes.append(
                f"longer than {spec.clip_duration_ms} ms: scored its loudest window at "
                f"{1000 * start / spec.sample_rate:.0f} ms"
            )
        batch.append(clip)
        found.append((f, notes))
    scores = model.scores(np.stack(batch).astype(np.float32))
    out = []
    for (f, notes), s in zip(found, scores, strict=True):
        order = np.argsort(-s)[:how_many_labels]
        out.append(Labelled(f, [(labels[i], float(s[i])) for i in order], notes))
    return out
