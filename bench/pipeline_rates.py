"""Front-end and input-pipeline throughput, and what the pipeline costs a training step.

    .venv/bin/python bench/pipeline_rates.py --repeats 5 --out bench/results/pipeline_rates.json

Needs the default data set and manifest (`make run` first). Three measurements, each repeated
`--repeats` times after a warm-up, reported as median and min-max:

1. front end: `compute_features` (mfcc 98x40) on clips already in memory, in batches of 100
   (the training batch) and of 1,000;
2. training input pipeline: batches of 100 delivered by `AudioProcessor.training_dataset`
   (gather from RAM + time shift + background noise + features), nothing consuming them;
3. the default model's training step fed by that pipeline, and by the feature cache
   (`feature_source: cache`, if built), vs fed the same batch from memory (the issue-7
   criterion: the pipeline should cost under 10%).

Pipelines are started (traced, first batch out) before the clock starts: startup is paid once
per training run, not per step.

Reference (issue 7, the unmodified TensorFlow example on this machine type): ~400 training clips/s
from its input pipeline. Each measurement prints one summary line and the run is appended to the
JSON file.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from measure import default_processor
from results_log import append_run

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)

EXAMPLE_PIPELINE_CLIPS_PER_S = 400.0


def _repeat(fn, repeats: int) -> list[float]:
    fn()  # warm-up (tracing, allocation)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(float(np.median(values)), 1),
        "min": round(float(np.min(values)), 1),
        "max": round(float(np.max(values)), 1),
    }


def main() -> None:
    import tensorflow as tf

    from kws_core.config import load_params
    from kws_core.data.manifest import load_manifest
    from kws_core.features.front_end import compute_features
    from kws_core.steps import manifest_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=100, help="pipeline batches per repeat")
    ap.add_argument("--out", default="bench/results/pipeline_rates.json")
    args = ap.parse_args()

    params = load_params(args.params)
    model, spec, proc = default_processor(params)
    rows = {}

    # 1. front end
    audio = proc.sets["training"].float_audio()[:1000]
    for size, key in ((100, "frontend_clips_per_s"), (1000, "frontend_b1000_clips_per_s")):
        batches = [tf.constant(audio[i : i + size]) for i in range(0, len(audio), size)]
        fe = _repeat(lambda b=batches: [compute_features(x, spec).numpy() for x in b], args.repeats)
        rows[key] = _summary([len(audio) / t for t in fe])
        print(f"front end ({spec.describe()}, batches of {size}): {rows[key]} clips/s")

    # 2. input pipeline alone
    batch = params.train.batch_size
    n = args.batches

    def started(first: int):
        """An iterator over n batches whose pipeline is already traced and running."""
        it = iter(proc.training_dataset(batch, first, first + n))
        next(it)
        return it

    def drain():
        it = started(1)
        t0 = time.perf_counter()
        for _ in it:
            pass
        return time.perf_counter() - t0

    ip = [drain() for _ in range(args.repeats + 1)][1:]
    rows["pipeline_clips_per_s"] = _summary([n * batch / t for t in ip])
    ratio = rows["pipeline_clips_per_s"]["median"] / EXAMPLE_PIPELINE_CLIPS_PER_S
    rows["pipeline_vs_example"] = round(ratio, 1)
    print(
        f"training input pipeline (batch {batch}): {rows['pipeline_clips_per_s']} clips/s, "
        f"{ratio:.1f}x the example's ~400"
    )

    # 3. a training step fed by the pipeline vs from memory
    optimizer = tf.keras.optimizers.Adam(1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    x0, y0 = next(iter(proc.training_dataset(batch, 1, 1)))

    def from_memory():
        for _ in range(n):
            step(x0, y0).numpy()

    def from_pipeline():
        it = started(1)
        t0 = time.perf_counter()
        for x, y in it:
            step(x, y).numpy()
        return time.perf_counter() - t0

    cache_dir = params.resolve(params.features.cache_dir)
    cache = None
    if cache_dir.exists():
        from kws_core.features.cache import build_feature_cache

        manifest = load_manifest(manifest_path(params))
        cache = build_feature_cache(params, manifest, params.resolve(params.data.data_dir), False)

    def from_cache():
        it = iter(cache.batches(batch, 1, n, params.train.seed))
        t0 = time.perf_counter()
        for x, y in it:
            step(tf.convert_to_tensor(x), tf.convert_to_tensor(y)).numpy()
        return time.perf_counter() - t0

    mem = _repeat(from_memory, args.repeats)
    rows["step_ms_from_memory"] = _summary([1000 * t / n for t in mem])
    sources = [("pipeline", from_pipeline)] + ([("cache", from_cache)] if cache else [])
    for name, fn in sources:
        times = [fn() for _ in range(args.repeats + 1)][1:]
        rows[f"step_ms_with_{name}"] = _summary([1000 * t / n for t in times])
        overhead = np.median(times) / np.median(mem) - 1
        rows[f"{name}_overhead_pct"] = round(100 * overhead, 1)
        print(
            f"{params.train.model_architecture} step: {rows['step_ms_from_memory']['median']} "
            f"ms from memory, {rows[f'step_ms_with_{name}']['median']} ms fed by the {name} "
            f"(+{100 * overhead:.0f}%)"
        )

    cache_note = (
        f", cache +{rows['cache_overhead_pct']:.0f}%" if "cache_overhead_pct" in rows else ""
    )
    print(
        f"summary: front end {rows['frontend_clips_per_s']['median']:,.0f} clips/s, pipeline "
        f"{rows['pipeline_clips_per_s']['median']:,.0f} clips/s ({ratio:.1f}x the example), "
        f"step +{rows['pipeline_overhead_pct']:.0f}% on the fly{cache_note}"
    )
    append_run(
        args.out, repeats=args.repeats, architecture=params.train.model_architecture, rows=rows
    )


if __name__ == "__main__":
    main()
