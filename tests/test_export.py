"""`kws freeze` (first part): SavedModel + float TFLite with the front end inside."""

import json

import numpy as np
import tensorflow as tf

from kws_core.evaluate import load_model
from kws_core.export import export_model, tflite_scores
from kws_core.features import FeatureSpec
from kws_core.manifest import build_manifest
from kws_core.train import evaluate_features, train
from tests.test_train import params_for


def test_exported_models_give_the_checkpoints_top1_on_the_whole_test_partition(tmp_path):
    from kws_core.input_data import AudioProcessor
    from tests.conftest import build_tiny_dataset

    data = build_tiny_dataset(tmp_path / "data", ["yes", "no", "cat"], 40)
    p = params_for(tmp_path, how_many_training_steps="6,2", output_file=str(tmp_path / "export"))
    manifest = build_manifest(p.data, data, progress=False).manifest
    train(p, manifest, data, progress=False, log=lambda _m: None, track=False)
    result = export_model(p, "best")
    meta = json.loads(result.meta.read_text())
    spec = FeatureSpec.from_params(p)
    assert FeatureSpec.from_dict(meta["features"]) == spec
    assert result.labels.read_text().split() == ["_silence_", "_unknown_", "yes", "no"]

    model, labels, _, _ = load_model(p, "best")
    proc = AudioProcessor(manifest, data, labels, spec, p.augment, progress=False)
    x, _ = proc.features("testing")
    pcm = proc.sets["testing"].float_audio()
    want = evaluate_features(model, x)
    saved = tf.saved_model.load(str(result.saved_model)).signatures["serving_default"]
    got_sm = list(saved(pcm=tf.constant(pcm)).values())[0].numpy()
    got_tfl = tflite_scores(result.tflite_float, pcm)
    assert len(pcm) > 5
    np.testing.assert_array_equal(got_sm.argmax(1), want)
    np.testing.assert_array_equal(got_tfl.argmax(1), want)
    np.testing.assert_allclose(got_tfl, got_sm, atol=1e-4)
    np.testing.assert_allclose(got_sm.sum(1), 1.0, atol=1e-5)  # scores, not logits
