"""The export as an MLflow model: logged into its run, registered, loaded back by alias."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kws_core.data.manifest import build_manifest, write_manifest
from kws_core.export.loader import ExportedModel
from kws_core.infra.wav import read_wav
from kws_core.steps import freeze_step
from kws_core.training.loop import train
from tests.conftest import build_tiny_dataset
from tests.test_train import learned_params


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 60, learnable=True)
    p = learned_params(root, manifest_dir=str(root / "manifest"), quantize=False)
    result = build_manifest(p.data, data, progress=False)
    write_manifest(result, root / "manifest")
    trained = train(p, result.manifest, data, progress=False, log=lambda _m: None, track=True)
    return p, trained, data


def test_freeze_registers_a_pyfunc_that_scores_a_clip_from_the_champion_alias(tracked):
    p, trained, data = tracked
    exported = freeze_step(p, progress=False)
    reg = exported.registered
    assert reg is not None and reg.champion and reg.name == "kws-low_latency_conv-yes-no-cat"
    uri = p.train.mlflow_tracking_uri
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias(reg.name, "champion")
    assert str(version.version) == reg.version and version.run_id == trained.run_id
    # logging into the finished run left it finished
    assert client.get_run(trained.run_id).info.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{reg.name}@champion")
    inputs = model.metadata.get_input_schema().inputs
    assert list(inputs[0].shape) == [-1, 16000]
    clip = next((data / "yes").glob("*.wav"))
    pcm = read_wav(clip, 16000)[None, :].astype(np.float32)
    scores = model.predict(pcm)
    want = ExportedModel.load(exported.saved_model).scores(pcm)
    assert list(scores.columns) == ExportedModel.load(exported.saved_model).labels
    np.testing.assert_allclose(scores.to_numpy(), want, atol=1e-6)
    # the TFLite files travel with it
    files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(trained.run_id)}
    assert "plots" in files
    local = mlflow.artifacts.download_artifacts(f"models:/{reg.name}@champion")
    assert any(Path(local).rglob("model_float.tflite"))


def test_a_worse_export_is_registered_but_the_champion_stays(tracked):
    p, _, _ = tracked
    first = freeze_step(p, progress=False).registered
    client = MlflowClient(p.train.mlflow_tracking_uri)
    champ = client.get_model_version_by_alias(first.name, "champion")
    client.set_model_version_tag(first.name, champ.version, "val_accuracy", "2.0")
    second = freeze_step(p, progress=False).registered
    assert not second.champion and int(second.version) > int(champ.version)
    assert client.get_model_version_by_alias(first.name, "champion").version == champ.version


def test_an_untracked_run_is_exported_without_registering(tmp_path):
    data = build_tiny_dataset(tmp_path / "data", ["yes", "no", "cat"], 20, learnable=True)
    p = learned_params(
        tmp_path,
        manifest_dir=str(tmp_path / "manifest"),
        quantize=False,
        how_many_training_steps="4,2",
    )
    result = build_manifest(p.data, data, progress=False)
    write_manifest(result, tmp_path / "manifest")
    train(p, result.manifest, data, progress=False, log=lambda _m: None, track=False)
    assert freeze_step(p, progress=False).registered is None
    assert freeze_step(p, progress=False, track=False).registered is None
