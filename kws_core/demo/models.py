"""What `kws demo --graph` can run live, behind one `push(pcm)` / `reset()` interface.

* a clip export (saved_model folder, model_float.tflite, model_int8.tflite ...): an
  `ExportedModel` scored by a stateful `StreamingSession`;
* a streaming export (`kws freeze --streaming`: model_streaming.tflite,
  model_streaming_int8.tflite): one front-end hop and its state per invoke, run by
  `kws_core.export.streaming_tflite.StreamingTFLite` (used as is: this module only picks it).

Both report `(time_ms, scores)` per window every `clip_stride_ms`, stamped as `score_stream`
stamps them, so the demo's decoder and page do not care which one runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kws_core.export.loader import ExportedModel, _find_meta, _read_meta
from kws_core.export.streaming_tflite import STREAMING_TFLITE, StreamingTFLite
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.errors import KwsError
from kws_core.streaming.session import StreamingSession


class LiveScorer(Protocol):
    """A live stream's scorer: new samples in, the windows they complete out."""

    def push(self, pcm: np.ndarray) -> list[tuple[int, np.ndarray]]: ...

    def reset(self) -> None: ...


@dataclass
class StreamingExport:
    """A streaming model of a `kws freeze --streaming` export (its file and export.json), read
    and checked once: each client's interpreter is built from these bytes."""

    path: Path
    meta: dict
    spec: FeatureSpec
    labels: list[str]
    content: bytes = b""

    @classmethod
    def load(cls, graph: Path) -> StreamingExport:
        """The streaming model at `graph`, checked (checksum, tensors) by opening it once."""
        meta = _read_meta(_find_meta(graph))
        spec = FeatureSpec.from_dict(meta["features"])
        StreamingTFLite(graph, spec.frame_ms)  # every check it makes on the file, before serving
        content = graph.read_bytes()
        want = meta.get("files", {}).get(graph.name, {}).get("sha256")
        if want and hashlib.sha256(content).hexdigest() != want:  # replaced since the check
            raise KwsError(f"{graph} changed while loading; start kws demo again")
        return cls(graph, meta, spec, list(meta["labels"]), content)

    def scorer(self, clip_stride_ms: float) -> StreamingTFLite:
        """A new stream's own interpreter (KwsError naming stream.clip_stride_ms when the
        stride is not whole front-end hops)."""
        return StreamingTFLite(
            self.path, clip_stride_ms, content=self.content, spec=self.spec, labels=self.labels
        )

    def fits(self, clip_stride_ms: float) -> bool:
        """Whether `clip_stride_ms` is a whole number of this model's hops."""
        stride = round(clip_stride_ms * self.spec.sample_rate / 1000)
        return stride >= self.spec.window_stride_samples and not (
            stride % self.spec.window_stride_samples
        )


DemoModel = ExportedModel | StreamingExport


def is_streaming_model(graph: Path) -> bool:
    """Whether `graph` is a .tflite file its export.json lists as a streaming model (the
    streaming entries alone describe their input and output tensors)."""
    if not (graph.is_file() and graph.suffix == ".tflite"):
        return False
    try:
        meta = _read_meta(_find_meta(graph))
    except KwsError:
        return False  # ExportedModel.load says what is wrong with it
    entry = meta.get("models", {}).get(graph.name)
    return isinstance(entry, dict) and "inputs" in entry


def default_graph(export: Path, clip_stride_ms: float) -> Path:
    """What `kws demo` runs without --graph: the export's streaming model (what a device runs)
    when it has one that runs at `clip_stride_ms`, else its SavedModel (any stride); a one-line
    KwsError when there is no export."""
    streaming = export / STREAMING_TFLITE
    if streaming.is_file():
        spec = FeatureSpec.from_dict(_read_meta(_find_meta(streaming))["features"])
        if StreamingExport(streaming, {}, spec, []).fits(clip_stride_ms):
            return streaming
    if (export / "saved_model").exists():
        return export / "saved_model"
    raise KwsError(
        f"no export at {export} (export.output_file): run `kws freeze` (or `make run`) first, "
        "or pass --graph MODEL"
    )


def load_demo_model(graph: str | Path) -> DemoModel:
    """The model at `graph` (clip or streaming export), or a one-line KwsError."""
    graph = Path(graph)
    if is_streaming_model(graph):
        return StreamingExport.load(graph)
    return ExportedModel.load(graph)


def live_scorer(model: DemoModel, clip_stride_ms: float) -> LiveScorer:
    """A new stream's scorer for `model`: its own state (and, streaming, its interpreter)."""
    if isinstance(model, StreamingExport):
        return model.scorer(clip_stride_ms)
    # Stateful: each hop computes only its new feature frames (kws_core.streaming.session).
    return StreamingSession(model, clip_stride_ms)


def model_info(model: DemoModel) -> dict[str, Any]:
    """What the page and /api/model show about the model, and how it runs."""
    streaming = isinstance(model, StreamingExport)
    return {
        "path": str(model.path),
        "architecture": model.meta.get("architecture", "?"),
        "labels": model.labels,
        "streaming": streaming,
        "runs_as": (
            "streaming model (StreamingTFLite: one front-end hop and its state per invoke)"
            if streaming
            else "clip model (StreamingSession: only the new feature frames per hop)"
        ),
        "input": "pcm hop + state" if streaming else model.meta["input"],
        "features": model.spec.describe(),
        "sample_rate": model.spec.sample_rate,
        "clip_duration_ms": model.spec.clip_duration_ms,
    }
