"""`kws freeze`: SavedModel + TFLite float/int8, PCM-in and features-outside, checked at load."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kws_core.data.manifest import build_manifest
from kws_core.export.loader import ExportedModel
from kws_core.export.streaming_tflite import STREAMING_TFLITE
from kws_core.export.writer import export_model
from kws_core.features.augmented_audio import AudioProcessor
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.errors import ConfigError, KwsError
from kws_core.training.evaluate import load_model
from kws_core.training.loop import evaluate_features, train
from tests.conftest import FAST_FLAGS, build_tiny_dataset
from tests.test_train import learned_params, params_for

WORDS = ["yes", "no", "cat", "dog"]


def _trained(root, **over):
    data = build_tiny_dataset(root / "data", WORDS, 150, learnable=True)
    p = learned_params(root, **({"representative_examples": 100} | over))
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    return p, manifest, data


def _test_set(p, manifest, data):
    model, labels, spec, _ = load_model(p, "best")
    proc = AudioProcessor(manifest, data, labels, spec, p.augment, progress=False)
    x, y = proc.features("testing")
    return proc.sets["testing"].float_audio(), y, evaluate_features(model, x)


@pytest.fixture(scope="module")
def pcm_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    p, manifest, data = _trained(root)
    return p, export_model(p, "best", manifest=manifest), _test_set(p, manifest, data)


def test_float_exports_give_the_checkpoints_top1_on_the_whole_test_partition(pcm_export):
    p, result, (pcm, truth, want) = pcm_export
    assert len(pcm) > 30
    assert np.mean(want == truth) > 0.8, "the small model should have learned the tones"
    sm = ExportedModel.load(result.saved_model, result.labels).scores(pcm)
    tfl = ExportedModel.load(result.tflite_float, result.labels).scores(pcm)
    np.testing.assert_array_equal(sm.argmax(1), want)
    np.testing.assert_array_equal(tfl.argmax(1), want)
    np.testing.assert_allclose(tfl, sm, atol=1e-4)
    np.testing.assert_allclose(sm.sum(1), 1.0, atol=1e-5)  # scores, not logits


def test_int8_loses_at_most_one_point_and_takes_int16_pcm(pcm_export):
    p, result, (pcm, truth, want) = pcm_export
    int8 = ExportedModel.load(result.tflite_int8, result.labels)
    got = int8.scores(pcm).argmax(1)
    assert np.mean(got == truth) >= np.mean(want == truth) - 0.01
    meta = json.loads(result.meta.read_text())
    io = meta["models"]["model_int8.tflite"]
    assert io["input"]["dtype"] == "int16" and io["input"]["shape"] == [1, 16000]
    assert meta["models"]["model_float.tflite"]["input"]["dtype"] == "float32"
    # The network really is int8: the file is far smaller than the float one.
    assert result.sizes["model_int8.tflite"] < 0.45 * result.sizes["model_float.tflite"]


def test_export_json_records_what_loaders_check(pcm_export):
    p, result, _ = pcm_export
    meta = json.loads(result.meta.read_text())
    assert FeatureSpec.from_dict(meta["features"]) == FeatureSpec.from_params(p)
    assert meta["labels"] == result.labels.read_text().split()
    assert meta["labels"] == ["_silence_", "_unknown_", "yes", "no", "cat"]
    assert meta["input"] == "pcm" and len(meta["normalization"]["mean"]) == 40
    assert meta["representative_examples"] == 100
    assert sorted(p.name for p in result.out_dir.iterdir()) == [
        "export.json",
        "labels.txt",
        "model_float.tflite",
        "model_int8.tflite",
        "saved_model",
    ]


def test_savedmodel_int16_signature_matches_float(pcm_export):
    import tensorflow as tf

    _, result, (pcm, _, _) = pcm_export
    sigs = tf.saved_model.load(str(result.saved_model)).signatures
    f = list(sigs["serving_default"](pcm=tf.constant(pcm[:5])).values())[0].numpy()
    raw = np.round(pcm[:5] * 32767).astype(np.int16)
    i = list(sigs["pcm_int16"](pcm=tf.constant(raw)).values())[0].numpy()
    np.testing.assert_allclose(f, i, atol=1e-3)


def test_mismatches_at_load_time_are_clear_errors(pcm_export, tmp_path):
    _, result, _ = pcm_export
    wrong_labels = tmp_path / "labels.txt"
    wrong_labels.write_text("_silence_\n_unknown_\nyes\nno\nup\n")
    with pytest.raises(KwsError, match="labels.txt of its export"):
        ExportedModel.load(result.tflite_float, wrong_labels)
    # The model of one export beside the export.json of another (other clip length).
    other = tmp_path / "other"
    shutil.copytree(result.out_dir, other)
    meta = json.loads((other / "export.json").read_text())
    half = FeatureSpec.from_dict(meta["features"]).to_dict() | {"clip_duration_ms": 500}
    meta["features"] = FeatureSpec.from_dict(
        {k: v for k, v in half.items() if k in FeatureSpec.__dataclass_fields__}
    ).to_dict()
    (other / "export.json").write_text(json.dumps(meta))
    with pytest.raises(KwsError, match="different exports"):
        ExportedModel.load(other / "model_float.tflite")
    with pytest.raises(KwsError, match="different exports"):
        ExportedModel.load(other / "saved_model")
    meta["features"]["desired_samples"] = 123  # edited by hand: inconsistent
    (other / "export.json").write_text(json.dumps(meta))
    with pytest.raises(KwsError, match="export.json: not a kws export description"):
        ExportedModel.load(other / "model_float.tflite")
    (other / "export.json").write_text("{not json")
    with pytest.raises(KwsError, match="not a kws export description"):
        ExportedModel.load(other / "model_float.tflite")
    shutil.copy(result.meta, other / "export.json")
    (other / "model_float.tflite").write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(KwsError, match="export damaged: model_float.tflite is 240 bytes"):
        ExportedModel.load(other / "model_float.tflite")
    (other / "junk").mkdir()
    with pytest.raises(KwsError, match="not a model"):
        ExportedModel.load(other / "junk")
    (other / "export.json").unlink()
    with pytest.raises(KwsError, match="no export.json"):
        ExportedModel.load(other / "model_int8.tflite")


def test_features_outside_float_and_full_integer(tmp_path):
    p, manifest, data = _trained(tmp_path, features_outside=True)
    result = export_model(p, "best", manifest=manifest)
    pcm, truth, want = _test_set(p, manifest, data)
    meta = json.loads(result.meta.read_text())
    assert meta["input"] == "features"
    io = meta["models"]["model_int8.tflite"]
    assert io["input"]["dtype"] == "int8" and io["input"]["shape"] == [1, 98, 40]
    assert io["output"]["dtype"] == "int8" and "quantization" in io["input"]
    fl = ExportedModel.load(result.tflite_float, result.labels).scores(pcm)
    np.testing.assert_array_equal(fl.argmax(1), want)
    sm = ExportedModel.load(result.saved_model).scores(pcm)
    np.testing.assert_array_equal(sm.argmax(1), want)
    q = ExportedModel.load(result.tflite_int8).scores(pcm).argmax(1)
    assert np.mean(q == truth) >= np.mean(want == truth) - 0.01


def test_freeze_refuses_folders_that_are_not_its_own(pcm_export, tmp_path):
    p, _result, _ = pcm_export
    # (float only: no calibration clips needed)
    p = p.model_copy(update={"export": p.export.model_copy(update={"quantize": False})})
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(ConfigError, match="is not a kws export"):
        export_model(p, "best", out_dir=precious)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    data_dir = p.resolve(p.data.data_dir)
    for inside in (data_dir, data_dir.parent):  # the data itself, or a folder holding it
        with pytest.raises(ConfigError, match="holds data.data_dir"):
            export_model(p, "best", out_dir=inside)
    assert any(data_dir.rglob("*.wav"))
    (precious / "thesis.txt").unlink()
    fresh = tmp_path / "fresh"
    export_model(p, "best", out_dir=fresh)
    export_model(p, "best", out_dir=fresh)  # an earlier export: replaced
    assert (fresh / "export.json").is_file()
    export_model(p, "best", out_dir=precious)  # now empty: fine
    with pytest.raises(ConfigError, match="is a file"):
        export_model(p, "best", out_dir=fresh / "labels.txt")


def test_micro_front_end_needs_features_outside(tmp_path):
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no"], 20)
    p = params_for(tmp_path, preprocess="micro", how_many_training_steps="2,1")
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    with pytest.raises(ConfigError, match="features_outside=true"):
        export_model(p, "best", manifest=manifest)
    p2 = params_for(
        tmp_path, preprocess="micro", features_outside=True, quantize=False, streaming=True
    )
    result = export_model(p2, "best", out_dir=tmp_path / "micro")
    assert result.tflite_int8 is None and result.tflite_float.exists()
    # no streaming model (the front end op is not a builtin): skipped, and said why
    assert result.tflite_streaming is None and not (result.out_dir / STREAMING_TFLITE).exists()
    assert result.notes == [
        f"{STREAMING_TFLITE} not written: the micro front end has no streaming model yet (only "
        "mfcc, logmel, average, embedding) (export.streaming)"
    ]
    shape = json.loads(result.meta.read_text())["models"]["model_float.tflite"]["input"]["shape"]
    assert shape == [1, *FeatureSpec.from_params(p2).shape]


def test_cli_freeze_prints_every_file_with_its_size(pcm_export, tmp_path):
    p, result, _ = pcm_export
    out = tmp_path / "cli_export"
    flags = [
        f"--{k}={v}"
        for k, v in {
            "wanted_words": "yes,no,cat",
            "data_dir": p.data.data_dir,
            "data_url": "",
            "train_dir": p.train.train_dir,
            "output_file": str(out),
            "representative_examples": 20,
            "manifest_dir": str(tmp_path / "manifest"),
        }.items()
    ] + [
        f"--{k}={v}"
        for k, v in FAST_FLAGS.items()  # the fixture's model
    ]
    subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "manifest", "--no-progress", *flags],
        check=True,
        capture_output=True,
    )
    run = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", "freeze", "--no-progress", *flags],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    for name in ("saved_model", "model_float.tflite", "model_int8.tflite", "labels.txt"):
        assert name in run.stdout
        assert (out / name).exists()
    assert " MB" in run.stdout or " kB" in run.stdout


# 0: the frozen embedding; 2: its top two convolutions fine-tuned inside the model
@pytest.fixture(scope="module", params=[0, 2], ids=["frozen", "finetune2"])
def embedding_export(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("embedding_export")
    p, manifest, data = _trained(
        root,
        preprocess="embedding",
        model_architecture="embedding_mlp",
        embedding_finetune_layers=request.param,
        feature_source="cache",
        how_many_training_steps="150,50",
        dropout_rate=0.1,
        representative_examples=50,
    )
    return p, export_model(p, "best", manifest=manifest), _test_set(p, manifest, data)


def test_embedding_export_runs_pcm_to_scores_in_builtin_ops(embedding_export):
    p, result, (pcm, truth, want) = embedding_export
    assert np.mean(want == truth) > 0.8, "the embedding head should have learned the tones"
    meta = json.loads(result.meta.read_text())
    assert meta["architecture"] == "embedding_mlp" and meta["features"]["preprocess"] == "embedding"
    assert meta["models"]["model_float.tflite"]["input"]["shape"] == [1, 16000]
    top = p.features.embedding_finetune_layers
    assert meta["features"]["embedding_finetune_layers"] == top
    assert meta["features"]["fingerprint_width"] == (96 if top == 0 else 8 * 2 * 96)
    if top:  # training moved the fine-tuned convolutions away from Google's weights
        from kws_core.features.speech_embedding import top_model
        from kws_core.training.models.normalization import split

        _, body = split(load_model(p, "best")[0])
        tuned = body.get_layer("speech_embedding_top").trainable_weights
        start = top_model(top).trainable_weights
        assert len(tuned) == len(start) == 3  # two kernels and a bias
        assert all(
            np.abs(a.numpy() - b.numpy()).max() > 1e-4 for a, b in zip(tuned, start, strict=True)
        )
    sm = ExportedModel.load(result.saved_model, result.labels).scores(pcm)
    tfl = ExportedModel.load(result.tflite_float, result.labels).scores(pcm)
    np.testing.assert_array_equal(sm.argmax(1), want)
    np.testing.assert_array_equal(tfl.argmax(1), want)
    np.testing.assert_allclose(tfl, sm, atol=1e-4)
    # The front end stays float in the int8 model (as for mfcc): the head is what is quantised.
    q = ExportedModel.load(result.tflite_int8).scores(pcm).argmax(1)
    assert np.mean(q == truth) >= np.mean(want == truth) - 0.02


def test_embedding_stream_reuses_embeddings_and_equals_per_window_scores(embedding_export):
    from kws_core.streaming.run import score_stream, score_stream_blocks

    p, result, (pcm, _truth, _want) = embedding_export
    model = ExportedModel.load(result.saved_model, result.labels)
    stream = pcm[:6].reshape(-1)
    hop_ms = p.features.embedding_hop_ms
    fast = score_stream(model, stream, hop_ms)  # embeddings computed once per hop
    starts = np.arange(0, len(stream) - 16000 + 1, 16 * hop_ms)
    slow = model.scores(np.stack([stream[s : s + 16000] for s in starts]))
    assert fast.scores.shape == slow.shape
    np.testing.assert_allclose(fast.scores, slow, atol=1e-4)
    blocks = score_stream_blocks(model, np.array_split(stream, 7), hop_ms)
    np.testing.assert_array_equal(blocks.scores, fast.scores)
