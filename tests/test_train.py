"""Real TensorFlow training on a tiny data set: every architecture, resume, check_nans, MLflow."""

import json
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from kws_core.config import load_params
from kws_core.data.manifest import build_manifest
from kws_core.infra.errors import ConfigError, KwsError
from kws_core.training.checkpoints import CheckpointManager
from kws_core.training.loop import NanError, piecewise_rate, train
from kws_core.training.models import model_names
from tests.conftest import FAST_FLAGS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import build_tiny_dataset

    root = tmp_path_factory.mktemp("train")
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat", "dog"], 60)
    return root, data


def params_for(root, **over):
    base = {
        "wanted_words": "yes,no",
        "data_dir": str(root / "data"),
        "data_url": "",
        "how_many_training_steps": "4,2",
        "learning_rate": "0.01,0.001",
        "batch_size": 8,
        "eval_step_interval": 3,
        "save_step_interval": 2,
        "log_step_interval": 1,
        "train_dir": str(root / "train"),
        "summaries_dir": str(root / "logs"),
        "reports_dir": str(root / "reports"),
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "cache_dir": str(root / "features"),
    }
    return load_params(None, FAST_FLAGS | base | over)


def learned_params(root, **over):
    """Params for a small model that really learns `build_tiny_dataset(..., learnable=True)`."""
    base = {
        "wanted_words": "yes,no,cat",
        "how_many_training_steps": "60,20",
        "learning_rate": "0.003,0.001",
        "batch_size": 32,
        "eval_step_interval": 40,
        "save_step_interval": 40,
        "output_file": str(root / "export"),
        "testing_percentage": 20,
    }
    return params_for(root, **(base | over))


def run(root, data, track=False, **over):
    # one feature cache beside the module's data set, shared by the tests (keyed by params)
    over.setdefault("cache_dir", str(data.parent / "features"))
    p = params_for(root, **over)
    manifest = build_manifest(p.data, data, progress=False).manifest
    lines = []
    result = train(p, manifest, data, progress=False, log=lines.append, track=track)
    return result, lines


def test_piecewise_rate_is_1_based_blocks():
    assert [piecewise_rate(s, [2, 3], [1.0, 0.1]) for s in range(1, 7)] == [
        1.0,
        1.0,
        0.1,
        0.1,
        0.1,
        0.1,
    ]


@pytest.mark.parametrize("arch", model_names())
def test_every_architecture_trains_a_few_steps(tiny, tmp_path, arch):
    _, data = tiny
    result, lines = run(
        tmp_path, data, model_architecture=arch, how_many_training_steps="2,1", batch_size=4
    )
    assert result.final_step == 3 and result.arch == arch
    assert (result.train_dir / f"{arch}.ckpt-2.index").exists()
    assert (result.train_dir / f"{arch}.ckpt-best.index").exists()
    assert any(line.startswith("Step #1: rate 0.010000, accuracy ") for line in lines)
    assert 0.0 <= result.test_accuracy <= 1.0


def test_log_lines_checkpoints_tensorboard_and_files(tiny, tmp_path):
    _, data = tiny
    result, lines = run(tmp_path, data)
    step_re = re.compile(
        r"^Step #(\d+): rate (\d+\.\d{6}), accuracy \d+\.\d%, cross entropy \d+\.\d+$"
    )
    steps = [int(m.group(1)) for line in lines if (m := step_re.match(line))]
    assert steps == [1, 2, 3, 4, 5, 6]
    rates = [m.group(2) for line in lines if (m := step_re.match(line))]
    assert rates == ["0.010000"] * 4 + ["0.001000"] * 2
    val = [
        line
        for line in lines
        if re.match(r"^Step \d+: Validation accuracy = \d+\.\d% \(N=\d+\)$", line)
    ]
    assert [v.split(":")[0] for v in val] == ["Step 3", "Step 6"]
    assert any(line.startswith("Confusion Matrix:") and "_silence_" in line for line in lines)
    assert lines[-1].startswith("Final test accuracy = ")
    d = result.train_dir
    assert sorted(p.name for p in d.glob("*.index")) == [
        "low_latency_conv.ckpt-2.index",
        "low_latency_conv.ckpt-4.index",
        "low_latency_conv.ckpt-6.index",
        "low_latency_conv.ckpt-best.index",
    ]
    assert not list(d.glob(".ckpt-*"))  # no temp leftovers
    assert (d / "low_latency_conv_labels.txt").read_text().split() == [
        "_silence_",
        "_unknown_",
        "yes",
        "no",
    ]
    reports = result.reports_dir
    assert (reports / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((reports / "metrics.json").read_text())["final_step"] == 6
    for sub in ("train", "validation"):
        assert list((tmp_path / "logs" / sub).glob("events.out.tfevents.*"))


def _weights(train_dir, arch):
    reader = tf.train.load_checkpoint(str(train_dir / f"{arch}.ckpt-6"))
    keys = [k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")]
    return {k: reader.get_tensor(k) for k in keys}


@pytest.mark.parametrize(
    "source,extra",
    [("cache", {}), ("on_the_fly", {}), ("cache", {"specaugment_probability": 1.0})],
    ids=["cache", "on_the_fly", "cache_specaugment"],
)
def test_resume_ends_at_the_same_step_with_the_same_weights(tiny, tmp_path, source, extra):
    _, data = tiny
    full, full_lines = run(tmp_path / "a", data, feature_source=source, **extra)
    part, _ = run(
        tmp_path / "b", data, how_many_training_steps="4,2", feature_source=source, **extra
    )
    # simulate an interruption: resume from the step-2 checkpoint of run b
    resumed, lines = run(
        tmp_path / "b",
        data,
        feature_source=source,
        start_checkpoint=str(tmp_path / "b/train/low_latency_conv.ckpt-2"),
        **extra,
    )
    assert lines[0].startswith("Restored") and "at step 2" in lines[0]
    assert resumed.start_step == 2 and resumed.final_step == full.final_step == 6
    first = [line for line in lines if line.startswith("Step #")][0]
    assert first.startswith("Step #3: rate 0.010000")
    other, _ = run(tmp_path / "c", data, seed=1, feature_source=source, **extra)
    arch = "low_latency_conv"
    a, b = _weights(full.train_dir, arch), _weights(resumed.train_dir, arch)
    c = _weights(other.train_dir, arch)
    assert a.keys() == b.keys() == c.keys() and a
    # Same batches, same dropout masks, same schedule, same optimizer state: the resumed run
    # reproduces the uninterrupted one, far closer than a run that saw other batches (seed 1).
    resume_gap = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    seed_gap = max(float(np.max(np.abs(a[k] - c[k]))) for k in a)
    assert resume_gap <= 1e-6 < seed_gap, (resume_gap, seed_gap)
    tail = [line for line in lines if line.startswith("Step #")]
    assert tail == [line for line in full_lines if line.startswith("Step #")][2:]
    if extra:  # the masks change training: same seed and batches without them, other weights
        plain, _ = run(tmp_path / "d", data, feature_source=source)
        d = _weights(plain.train_dir, arch)
        weights = [k for k in a if k.startswith("optimizer/_trainable_variables/")]
        assert weights and max(float(np.max(np.abs(a[k] - d[k]))) for k in weights) > 1e-4


def test_resume_errors_are_clear(tiny, tmp_path):
    _, data = tiny
    run(tmp_path, data)
    with pytest.raises(KwsError, match="no such checkpoint; available"):
        run(tmp_path, data, start_checkpoint=str(tmp_path / "train/low_latency_conv.ckpt-5"))
    with pytest.raises(KwsError, match="already at or past"):
        run(tmp_path, data, start_checkpoint="latest")
    with pytest.raises(KwsError, match="does not fit this model"):
        run(
            tmp_path,
            data,
            model_architecture="tiny_conv",
            start_checkpoint=str(tmp_path / "train/low_latency_conv.ckpt-2"),
        )


def test_check_nans_names_step_and_tensor_and_keeps_last_good_checkpoint(tiny, tmp_path):
    _, data = tiny
    with pytest.raises(NanError) as e:
        run(
            tmp_path,
            data,
            check_nans=True,
            learning_rate="1e30,1e30",
            how_many_training_steps="40,1",
            save_step_interval=1,
            eval_step_interval=100,
        )
    msg = str(e.value)
    step = int(re.search(r"at step (\d+)", msg).group(1))
    assert re.search(r"NaN/Inf in (cross_entropy|logits|gradient of \S+|\S+/\S+) at step", msg)
    state = CheckpointManager.read_state(tmp_path / "train")
    assert state.latest_step == step - 1
    reader = tf.train.load_checkpoint(str(tmp_path / "train" / state.latest))
    for k in reader.get_variable_to_shape_map():
        v = reader.get_tensor(k)
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            assert np.all(np.isfinite(v)), k


def test_mlflow_run_artifacts_and_metrics(tiny, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    _, data = tiny
    first, _ = run(tmp_path, data, track=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    r = client.get_run(first.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["train.model_architecture"] == "low_latency_conv"
    assert r.data.params["data.wanted_words"] == "yes,no"
    assert {"architecture", "dataset_hash", "git_commit"} <= set(r.data.tags)
    assert "test_accuracy" in r.data.metrics and "validation_accuracy" in r.data.metrics
    assert len(client.get_metric_history(first.run_id, "cross_entropy")) == 6
    arts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"plots", "tables", "checkpoint", "low_latency_conv_labels.txt"} <= arts
    ck = {a.path for a in client.list_artifacts(first.run_id, "checkpoint")}
    assert "checkpoint/low_latency_conv.ckpt-best.index" in ck
    # one name per figure: the curve, and the value the best checkpoint was chosen by
    best = client.get_metric_history(first.run_id, "best_validation_accuracy")
    assert [(m.value, m.step) for m in best] == [(first.best_val_accuracy, first.best_step)]
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on runs
    assert client.search_registered_models() == []  # kws freeze registers the export
    assert mlflow.get_tracking_uri()  # the module stays importable/usable after runs


def test_evaluate_on_an_official_layout_folder(tiny, tmp_path, realdata_or_tiny):
    from kws_core.training.evaluate import evaluate_dir

    _, data = tiny
    result, _ = run(tmp_path, data)
    p = params_for(tmp_path)
    test_dir = realdata_or_tiny
    ev = evaluate_dir(p, test_dir, "best", png=tmp_path / "eval.png")
    assert ev.n > 0 and 0.0 <= ev.accuracy <= 1.0
    assert ev.confusion.sum() == ev.n and ev.labels == result.labels
    assert (tmp_path / "eval.png").exists()
    # folders that are not model labels (here: up, down, ...) count as _unknown_
    unknown = ev.labels.index("_unknown_")
    assert ev.confusion[unknown].sum() >= sum(
        1
        for d in test_dir.iterdir()
        if d.is_dir() and d.name not in ev.labels
        for _ in d.glob("*.wav")
    )
    with pytest.raises(KwsError, match="not a folder"):
        evaluate_dir(p, tmp_path / "missing", "best")


@pytest.fixture
def realdata_or_tiny(tmp_path):
    """A folder in the official test-set layout: built from tones (no real data needed)."""
    from tests.conftest import build_tiny_dataset

    root = build_tiny_dataset(
        tmp_path / "official", ["yes", "no", "up", "_unknown_"], 4, noise=False
    )
    (root / "_silence_").mkdir()
    from tests.conftest import write_clip

    write_clip(root / "_silence_" / "silence_0.wav", np.zeros(16000, dtype=np.float32))
    (root / "no" / "broken.wav").write_text("junk")
    return root


def test_eval_dirs_are_scored_after_training_into_metrics_and_mlflow(tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    _, data = tiny
    # Two labelled folders: the tutorial layout (with _background_noise_, skipped) twice, one of
    # them under the same folder name, so the second gets a numbered name.
    a, b = data, tmp_path / "other" / data.name
    shutil.copytree(data, b)
    result, lines = run(tmp_path, data, track=True, eval_dirs=f"{a},{b}")
    name_a, name_b = data.name, f"{data.name}_2"
    assert set(result.eval_dirs) == {name_a, name_b}
    ev = result.eval_dirs[name_a]
    clips = sum(
        1 for d in data.iterdir() if d.name != "_background_noise_" for _ in d.glob("*.wav")
    )
    assert ev["n"] == clips and 0.0 <= ev["accuracy"] <= 1.0
    assert set(ev["per_class"]) <= set(result.labels) and "_unknown_" in ev["per_class"]
    assert any(line.startswith(f"Accuracy on {name_a} = ") for line in lines)
    metrics = json.loads((result.reports_dir / "metrics.json").read_text())
    assert metrics["eval"][name_a]["accuracy"] == pytest.approx(ev["accuracy"])
    assert (result.reports_dir / f"eval_{name_a}_confusion.png").exists()
    logged = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.run_id)
    assert logged.data.metrics[f"eval_{name_a}_accuracy"] == pytest.approx(ev["accuracy"])
    assert f"eval_{name_b}__unknown_" in logged.data.metrics


def test_a_missing_eval_dir_stops_before_any_work(tiny, tmp_path):
    _, data = tiny
    with pytest.raises(ConfigError, match=r"train.eval_dirs: .*missing is not a folder"):
        run(tmp_path, data, eval_dirs=str(tmp_path / "missing"))
    assert not (tmp_path / "train").exists()


def test_label_log_prior_is_centred_log_shares():
    from kws_core.training.loop import label_log_prior

    prior = label_log_prior(np.array([0, 0, 0, 1, 1, 2]), 4)  # label 3 has no rows
    counts = np.array([3, 2, 1, 1], float)
    want = np.log(counts / counts.sum())
    np.testing.assert_allclose(prior, want - want.mean(), rtol=1e-6)
    assert abs(prior.sum()) < 1e-5 and prior[0] > prior[1] > prior[2] == prior[3]
    np.testing.assert_allclose(label_log_prior(np.array([0, 1, 2]), 3), 0.0, atol=1e-7)


def test_balance_classes_changes_training_only_when_labels_are_unequal(tiny, tmp_path):
    _, data = tiny
    # yes,no with 10% unknown / silence: unequal shares, so the adjustment changes the weights
    on, _ = run(tmp_path / "on", data, balance_classes=True, feature_source="cache")
    off, _ = run(tmp_path / "off", data, balance_classes=False, feature_source="cache")
    a = tf.train.load_checkpoint(str(on.best_checkpoint))
    b = tf.train.load_checkpoint(str(off.best_checkpoint))
    weights = [k for k in a.get_variable_to_shape_map() if "_trainable_variables/" in k]
    assert weights
    assert any(
        not np.allclose(a.get_tensor(k), b.get_tensor(k))
        for k in weights
        if a.get_tensor(k).dtype.kind == "f"
    )


def test_read_metrics_is_the_reader_of_what_training_wrote(tiny, tmp_path):
    from kws_core.infra.errors import DataError
    from kws_core.training.report import metrics_path, read_metrics

    root, data = tiny
    p = params_for(tmp_path / "m")
    with pytest.raises(DataError, match="train first"):
        read_metrics(p)
    result, _ = run(tmp_path / "m", data)
    metrics = read_metrics(p)
    assert metrics_path(p) == result.reports_dir / "metrics.json"
    assert metrics["test_accuracy"] == result.test_accuracy and metrics["final_step"] == 6
    metrics_path(p).write_text("[1, 2]")
    with pytest.raises(DataError, match="not a JSON object"):
        read_metrics(p)
