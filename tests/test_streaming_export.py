"""`kws freeze --streaming`: model_streaming.tflite (one hop + external state) equals the clip
model over a stream, in TFLite builtin ops only."""

import json

import numpy as np
import pytest

from kws_core.data.manifest import build_manifest
from kws_core.export.loader import ExportedModel, tflite_interpreter
from kws_core.export.streaming_tflite import (
    STREAMING_INT8_TFLITE,
    STREAMING_TFLITE,
    StreamingTFLite,
)
from kws_core.export.writer import export_model
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.errors import ConfigError, KwsError
from kws_core.streaming.run import score_stream
from kws_core.training.loop import train
from tests.conftest import build_tiny_dataset, tone
from tests.test_train import params_for

# Measured max |streaming - score_stream| over these streams: 1e-10 (average), 1.2e-7
# (logmel), 1.1e-6 (mfcc); of the log-scores: 2.3e-5, 5.5e-5, 1.5e-5. One frame's RFFT and
# matmuls vs a clip's batched ones: float32 rounding only.
TOLERANCE = 1e-5
LOG_TOLERANCE = 1e-3
# int8 network vs the float streaming model: measured at most 0.040 (mfcc; logmel 0.0034,
# average 0.0039), like the clip int8 model's 0.028 / 0.0034 / 0.0039 on the same windows (an
# int8 PCM tail, requantised every invoke, gave 0.21).
INT8_TOLERANCE = 0.1

FRONT_ENDS = {
    # the tutorial's settings: 30 ms window, 10 ms hop (the window is 3 whole hops)
    "mfcc": {"preprocess": "mfcc", "model_architecture": "low_latency_conv"},
    # a 25 ms window over 20 ms hops: not whole hops, so the stream starts 15 ms of zeros early
    "logmel": {
        "preprocess": "logmel",
        "model_architecture": "tiny_conv",
        "window_size_ms": 25,
        "window_stride_ms": 20,
    },
    "average": {"preprocess": "average", "model_architecture": "low_latency_conv"},
    # the default architecture: mel frames and embeddings as state, the top 2 of the
    # embedding's convolutions trained (the export computes the layers below them per hop)
    "embedding": {
        "preprocess": "embedding",
        "model_architecture": "embedding_mlp",
        "embedding_finetune_layers": 2,
    },
}


@pytest.fixture(scope="module", params=sorted(FRONT_ENDS))
def exported(tmp_path_factory, request):
    root = tmp_path_factory.mktemp(f"stream_{request.param}")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 30)
    p = params_for(
        root,
        how_many_training_steps="6,2",
        output_file=str(root / "export"),
        representative_examples=30,
        streaming=True,
        **FRONT_ENDS[request.param],
    )
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    return p, export_model(p, "best", manifest=manifest)


def _stream(seconds: float = 3.0) -> np.ndarray:
    """Tone bursts over noise; not a whole number of hops long."""
    parts = [tone(f"s{i}", n=16000) for i in range(int(seconds))]
    rng = np.random.default_rng(1)
    x = np.concatenate([*parts, 0.01 * rng.standard_normal(1234).astype(np.float32)])
    return x + 0.01 * rng.standard_normal(len(x)).astype(np.float32)


@pytest.mark.parametrize("hops_per_result", [1, 2])
def test_streaming_model_equals_score_stream(exported, hops_per_result):
    p, result = exported
    spec = FeatureSpec.from_params(p)
    stride_ms = hops_per_result * spec.frame_ms
    pcm = _stream()
    # (the SavedModel: model_float.tflite with a resized batch drifts by up to 4e-3 on tiny_conv)
    want = score_stream(ExportedModel.load(result.saved_model), pcm, stride_ms)
    stream = StreamingTFLite(result.tflite_streaming, stride_ms)
    # pushed in uneven pieces (under and over one hop): the results must not depend on them
    got, i = [], 0
    for size in np.random.default_rng(0).integers(1, 700, 1000):
        got += stream.push(pcm[i : i + size])
        i += size
        if i >= len(pcm):
            break
    times = np.array([t for t, _ in got])
    scores = np.stack([s for _, s in got])
    np.testing.assert_array_equal(times, want.times_ms)
    diff = np.abs(scores - want.scores).max()
    assert diff <= TOLERANCE, diff
    # the tiny models saturate (the average one scores ~1 - 1e-5 for one label): compare the
    # log-scores too, which see the small scores move
    seen = want.scores > 1e-30
    log_diff = np.abs(np.log(scores[seen]) - np.log(want.scores[seen])).max()
    assert log_diff <= LOG_TOLERANCE, log_diff
    # the model is not constant: the equality above says something
    assert np.ptp(np.log(np.maximum(want.scores, 1e-30)), axis=0).max() > 1


def test_int8_streaming_model_tracks_the_float_one(exported):
    p, result = exported
    stride_ms = 2 * FeatureSpec.from_params(p).frame_ms
    pcm = _stream()
    want = StreamingTFLite(result.tflite_streaming, stride_ms).push(pcm)
    got = StreamingTFLite(result.tflite_streaming_int8, stride_ms).push(pcm)
    assert [t for t, _ in got] == [t for t, _ in want]
    diff = np.abs(np.stack([s for _, s in got]) - np.stack([s for _, s in want])).max()
    assert diff <= INT8_TOLERANCE, diff
    meta = json.loads(result.meta.read_text())
    io, float_io = meta["models"][STREAMING_INT8_TFLITE], meta["models"][STREAMING_TFLITE]
    assert io["inputs"] == float_io["inputs"] and io["outputs"] == float_io["outputs"]
    interp = tflite_interpreter(model_path=str(result.tflite_streaming_int8))
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert {"QUANTIZE", "DEQUANTIZE"} <= ops  # the network runs in int8
    assert any(np.dtype(t["dtype"]) == np.int8 for t in interp.get_tensor_details())


def test_reset_starts_a_new_stream(exported):
    p, result = exported
    stride_ms = FeatureSpec.from_params(p).frame_ms
    stream = StreamingTFLite(result.tflite_streaming, stride_ms)
    first = stream.push(_stream(1.5))
    stream.reset()
    again = stream.push(_stream(1.5))
    assert [t for t, _ in first] == [t for t, _ in again]
    np.testing.assert_array_equal(first[-1][1], again[-1][1])


def test_io_layout_in_export_json_and_builtin_ops_only(exported):
    p, result = exported
    spec = FeatureSpec.from_params(p)
    meta = json.loads(result.meta.read_text())
    io = meta["models"][STREAMING_TFLITE]
    hop, tail = spec.window_stride_samples, spec.window_size_samples - spec.window_stride_samples
    state = {"frames": {"dtype": "float32", "shape": [1, *spec.shape]}}
    if spec.preprocess == "embedding":
        # 80 ms hops = 8 mel frames: the 352 samples a 512-tap mel frame needs beyond its
        # 160-sample hop, and the 76 - 8 mel frames the next embedding reuses
        assert hop == 1280
        state["pcm_tail"] = {"dtype": "float32", "shape": [1, 352]}
        state["mel"] = {"dtype": "float32", "shape": [1, 68, 32]}
    else:
        state["pcm_tail"] = {"dtype": "float32", "shape": [1, tail]}
    assert io["inputs"] == {"pcm": {"dtype": "float32", "shape": [1, hop]}, **state}
    assert io["outputs"] == {
        "scores": {"dtype": "float32", "shape": [1, len(meta["labels"])]},
        **{f"new_{name}": desc for name, desc in state.items()},
    }
    assert STREAMING_TFLITE in meta["files"]  # checksummed like the other models
    ops = {
        d["op_name"]
        for d in tflite_interpreter(model_path=str(result.tflite_streaming))._get_ops_details()
    }
    # the STFT: an RFFT, or for the embedding's mel graph a convolution
    assert "RFFT2D" in ops or spec.preprocess == "embedding"
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops


def test_misuse_is_a_one_line_error(exported, tmp_path):
    p, result = exported
    with pytest.raises(KwsError, match="a streaming model"):
        ExportedModel.load(result.tflite_streaming)
    with pytest.raises(KwsError, match="not a streaming model"):
        StreamingTFLite(result.tflite_float, 20)
    with pytest.raises(KwsError, match="whole number of"):
        StreamingTFLite(result.tflite_streaming, 1.5 * FeatureSpec.from_params(p).frame_ms)
    with pytest.raises(KwsError, match="1-D"):
        StreamingTFLite(result.tflite_streaming, 2 * FeatureSpec.from_params(p).frame_ms).push(
            np.zeros((2, 320))
        )


def test_a_features_in_export_has_the_same_streaming_model(exported, tmp_path):
    """`features_outside` changes the clip models' input, not the streaming model (PCM in)."""
    p, result = exported
    ex = p.export.model_copy(update={"features_outside": True, "quantize": False})
    features_in = export_model(p.model_copy(update={"export": ex}), "best", out_dir=tmp_path)
    assert json.loads(features_in.meta.read_text())["input"] == "features"
    stride_ms = FeatureSpec.from_params(p).frame_ms
    pcm = _stream(1.5)
    want = StreamingTFLite(result.tflite_streaming, stride_ms).push(pcm)
    got = StreamingTFLite(features_in.tflite_streaming, stride_ms).push(pcm)
    np.testing.assert_allclose(
        np.stack([s for _, s in got]), np.stack([s for _, s in want]), atol=1e-6
    )


def test_an_embedding_hop_as_long_as_its_window_is_refused():
    from kws_core.export.streaming_tflite import check_streamable

    spec = FeatureSpec(preprocess="embedding", embedding_hop_ms=760, clip_duration_ms=2000)
    with pytest.raises(ConfigError, match="embedding_hop_ms shorter") as e:
        check_streamable(spec)
    assert "\n" not in str(e.value)
