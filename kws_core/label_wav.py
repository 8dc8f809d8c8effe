"""`kws label-wav`: score WAV files with an exported model (SavedModel dir or .tflite)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kws_core.errors import DataError, KwsError
from kws_core.export import EXPORT_META, tflite_scores
from kws_core.features import FeatureSpec
from kws_core.labels import read_labels
from kws_core.spectrogram import load_any_wav


@dataclass
class Labelled:
    path: Path
    top: list[tuple[str, float]]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{label} (score = {score:.5f})" for label, score in self.top]


def _meta_for(graph: Path) -> FeatureSpec:
    for folder in (graph.parent, graph.parent.parent) if graph.is_dir() else (graph.parent,):
        meta = folder / EXPORT_META
        if meta.exists():
            return FeatureSpec.from_dict(json.loads(meta.read_text())["features"])
    raise KwsError(f"{graph}: no {EXPORT_META} next to the model; export it with `kws freeze`")


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
    graph = Path(graph)
    if not graph.exists():
        raise KwsError(f"--graph {graph}: no such model (a saved_model folder or a .tflite file)")
    labels = read_labels(labels_path)
    spec = _meta_for(graph)
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
    pcm = np.stack(batch).astype(np.float32)
    if graph.suffix == ".tflite":
        scores = tflite_scores(graph, pcm)
    else:
        import tensorflow as tf

        fn = tf.saved_model.load(str(graph)).signatures["serving_default"]
        scores = list(fn(pcm=tf.constant(pcm)).values())[0].numpy()
    if scores.shape[1] != len(labels):
        raise KwsError(
            f"--labels {labels_path} has {len(labels)} labels, the model {scores.shape[1]}"
        )
    out = []
    for (f, notes), s in zip(found, scores, strict=True):
        order = np.argsort(-s)[:how_many_labels]
        out.append(Labelled(f, [(labels[i], float(s[i])) for i in order], notes))
    return out
