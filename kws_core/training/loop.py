"""The tutorial's train.py as a function: piecewise schedule, logs, checkpoints, MLflow."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from kws_core.config import Params, write_params
from kws_core.data.labels import write_labels
from kws_core.features.background import noise_dirs
from kws_core.infra.atomic import atomic_write_text
from kws_core.infra.errors import KwsError
from kws_core.infra.faults import crash_point
from kws_core.infra.plots import confusion_matrix, format_confusion
from kws_core.training.checkpoints import CheckpointManager, resolve_checkpoint, restore
from kws_core.training.data import open_training_data
from kws_core.training.evaluate import check_eval_dirs, evaluate_features
from kws_core.training.models import EMBEDDING_NORM, build_model, model_summary
from kws_core.training.models.normalization import set_inner_stats, split
from kws_core.training.report import RunFacts, TrainResult, report_run

__all__ = ["NanError", "TrainResult", "train"]


class NanError(KwsError):
    """check_nans found a NaN/Inf."""


IN_PROGRESS = "in_progress.json"  # written when training starts, removed when it ends


def _run_digest(params: Params) -> str:
    """What must be equal for a run to continue another: every param but start_checkpoint."""
    dump = params.model_dump(mode="json")
    dump["train"]["start_checkpoint"] = ""
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


def _interrupted_run(marker: Path, params: Params, manager, say) -> str:
    """Resume from "latest" when the last run in train_dir, same params, was killed midway."""
    try:
        same = json.loads(marker.read_text())["params"] == _run_digest(params)
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if not (same and manager.state.latest):
        return ""
    say(
        f"Resuming an interrupted run from {manager.state.latest} (delete {marker} or pass "
        "--start_checkpoint to choose otherwise)"
    )
    return "latest"


def piecewise_rate(step: int, steps: list[int], rates: list[float]) -> float:
    """Learning rate of a 1-based step: rates[i] for the i-th block of steps."""
    total = 0
    for n, rate in zip(steps, rates, strict=True):
        total += n
        if step <= total:
            return rate
    return rates[-1]


def make_optimizer(name: str, rate: float):
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=rate, momentum=0.9)
    return keras.optimizers.SGD(learning_rate=rate)


def label_log_prior(labels: np.ndarray, count: int) -> np.ndarray:
    """log(share of each label) among training rows, minus its mean (a label with no rows
    gets the smallest share seen, so nothing is infinite)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=count).astype(np.float64)
    counts[counts == 0] = counts[counts > 0].min() if np.any(counts > 0) else 1.0
    log_p = np.log(counts / counts.sum())
    return (log_p - log_p.mean()).astype(np.float32)


def train(
    params: Params,
    manifest: pd.DataFrame,
    data_dir: Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    track: bool = True,
    parent_run_id: str = "",
) -> TrainResult:
    """Train params.train.model_architecture on the manifest; returns where everything is.

    `parent_run_id` nests the MLflow run under a parent (one per multi-architecture comparison).
    """
    say = log or (lambda msg: tqdm.write(msg))
    t = params.train
    eval_dirs = check_eval_dirs(params)  # a missing folder stops the run before any work
    noise_dirs(params)  # so does a missing noise folder
    tf.keras.utils.set_random_seed(t.seed)
    model, labels, spec = build_model(params)
    summary = model_summary(model)
    data = open_training_data(params, manifest, data_dir, labels, spec, progress=progress)
    val_x, val_y = data.validation

    steps, rates = t.steps, t.rates
    total = sum(steps)
    optimizer = make_optimizer(t.optimizer, rates[0])
    optimizer.build(model.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, name="global_step")
    # Keras does not track dropout's seed-generator state; save it so a resumed run draws the
    # same dropout masks as an uninterrupted one.
    seeds = [v for v in model.variables if "seed_generator" in v.path]
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var, seeds=seeds)
    train_dir = params.layout.train_dir
    manager = CheckpointManager(train_dir, t.model_architecture, ckpt)
    start = 0
    marker = train_dir / IN_PROGRESS
    start_from = t.start_checkpoint or _interrupted_run(marker, params, manager, say)
    if not start_from:
        manager.reset()  # a fresh run: forget an earlier run's best and latest
        if t.normalize_features and spec.embedding_finetune_layers:
            # The outer normalisation stays the identity: the fine-tuned convolutions expect
            # the activations as they are; their embeddings are normalised instead.
            _, body = split(model)
            set_inner_stats(body, EMBEDDING_NORM, data.input_sample(t.batch_size))
        elif t.normalize_features:
            norm, _ = split(model)
            norm.set_stats(*data.feature_stats(t.batch_size))
    else:
        prefix = resolve_checkpoint(start_from, train_dir)
        restore(ckpt, prefix)
        start = int(step_var.numpy())
        say(f"Restored {prefix} at step {start}")
        if start >= total and t.start_checkpoint:  # (a resumed run just evaluates)
            raise KwsError(
                f"start_checkpoint {prefix} is at step {start}, already at or past the "
                f"{total} steps of how_many_training_steps"
            )
    if data.describe():
        say(data.describe())
    labels_path = write_labels(labels, train_dir / f"{t.model_architecture}_labels.txt")
    write_params(params, train_dir / "params.yaml")
    atomic_write_text(marker, json.dumps({"params": _run_digest(params)}))

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    log_prior = tf.constant(
        label_log_prior(data.training_labels, len(labels)) if t.balance_classes else 0.0,
        tf.float32,
    )
    variables = model.trainable_variables
    names = ["cross_entropy", "logits"] + [f"gradient of {v.path}" for v in variables]
    names += [v.path for v in variables]

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            # Logit adjustment (Menon et al. 2021): the loss sees logits + log prior, so the
            # model's own logits come out as if every label were equally likely.
            loss = loss_fn(y, logits + log_prior)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, tf.int32), y), tf.float32))
        finite = [tf.reduce_all(tf.math.is_finite(loss)), tf.reduce_all(tf.math.is_finite(logits))]
        if t.check_nans:
            finite += [tf.reduce_all(tf.math.is_finite(g)) for g in grads]
            finite += [tf.reduce_all(tf.math.is_finite(v)) for v in variables]
        return loss, acc, tf.stack(finite)

    summaries = params.layout.summaries_dir
    train_writer = tf.summary.create_file_writer(str(summaries / "train"))
    val_writer = tf.summary.create_file_writer(str(summaries / "validation"))
    tracker = None
    if track:
        from kws_core.training.tracking import RunTracker, dataset_hash, git_commit

        tracker = RunTracker(
            params,
            tags={
                "run_name": f"{t.model_architecture}-{time.strftime('%Y%m%d-%H%M%S')}",
                "architecture": t.model_architecture,
                "dataset_hash": dataset_hash(manifest),
                "git_commit": git_commit(params.resolve(".")),
                "wanted_words": params.data.wanted_words,
                "resumed_from_step": str(start),
            }
            | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
            | data.tags,
        )
        tracker.log_metrics({"params": summary["params"], "flops": summary["flops"]}, step=start)

    def validate(step: int) -> float:
        pred = evaluate_features(model, val_x)
        cm = confusion_matrix(val_y, pred, len(labels))
        acc = float(np.mean(pred == val_y)) if len(val_y) else 0.0
        say(f"Confusion Matrix:\n{format_confusion(cm, labels)}")
        say(f"Step {step}: Validation accuracy = {100 * acc:.1f}% (N={len(val_y)})")
        with val_writer.as_default():
            tf.summary.scalar("accuracy", acc, step=step)
        if tracker:
            tracker.log_metrics({"validation_accuracy": acc}, step)
        if manager.save_best(step, acc):
            say(f"Saving best model to {train_dir / (t.model_architecture + '.ckpt-best')}")
        return acc

    status = "FAILED"
    t0 = t_warm = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not progress)
    try:
        dataset = data.batches(t.batch_size, start + 1, total)
        step = start
        for step, (x, y) in enumerate(dataset, start=start + 1):
            rate = piecewise_rate(step, steps, rates)
            optimizer.learning_rate.assign(rate)
            loss, acc, finite = train_step(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
            step_var.assign(step)
            if not bool(np.all(finite.numpy())):
                bad = names[int(np.argmin(finite.numpy()))]
                raise NanError(
                    f"check_nans: NaN/Inf in {bad} at step {step}; the last good checkpoint "
                    f"({manager.state.latest or 'none'}) is intact"
                )
            bar.update(1)
            loss_v, acc_v = float(loss), float(acc)
            if step == start + 1:
                t_warm = time.perf_counter()
            if step % t.log_step_interval == 0 or step == start + 1:
                say(
                    f"Step #{step}: rate {rate:f}, accuracy {100 * acc_v:.1f}%, "
                    f"cross entropy {loss_v:f}"
                )
                with train_writer.as_default():
                    tf.summary.scalar("accuracy", acc_v, step=step)
                    tf.summary.scalar("cross_entropy", loss_v, step=step)
                    tf.summary.scalar("learning_rate", rate, step=step)
                if tracker:
                    tracker.log_metrics(
                        {"train_accuracy": acc_v, "cross_entropy": loss_v, "learning_rate": rate},
                        step,
                    )
            if step % t.eval_step_interval == 0 or step == total:
                validate(step)
            if step % t.save_step_interval == 0 or step == total:
                manager.save(step)
            crash_point("train.after_step")
        bar.close()
        time_end = time.perf_counter()
        if manager.state.best:
            restore(ckpt, train_dir / manager.state.best)
        facts = RunFacts(
            train_dir=train_dir,
            summaries_dir=summaries,
            labels_path=labels_path,
            best=manager.state.best,
            latest=manager.state.latest,
            best_step=manager.state.best_step,
            best_val_accuracy=manager.state.best_val_accuracy,
            start_step=start,
            final_step=step,
            seconds=time_end - t0,
            warm_seconds=time_end - t_warm,
            params_count=summary["params"],
            flops=summary["flops"],
        )
        result = report_run(
            params, model, labels, spec, data.testing, eval_dirs, facts, tracker, say
        )
        status = "FINISHED"
        marker.unlink(missing_ok=True)
        return result
    except KeyboardInterrupt:
        status = "KILLED"  # the marker stays: the next run with these params resumes
        raise
    except Exception:
        marker.unlink(missing_ok=True)  # a failure (NaN, bad data) is not resumed into
        raise
    finally:
        data.close()
        bar.close()
        train_writer.close()
        val_writer.close()
        if tracker:
            tracker.finish(status)
