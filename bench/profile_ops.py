"""Where the training input pipeline spends its time, op by op (TensorFlow's step-stats profiler).

    .venv/bin/python bench/profile_ops.py --batches 30 --out bench/results/profile_ops.json

Builds one batch of the real training pipeline (gather + time shift + background noise +
features, batch `train.batch_size`) as a TF1 graph and runs it `--batches` times with
`RunOptions(trace_level=FULL_TRACE)`; every kernel's wall time is summed by op type and by
stage (`augment` = the audio mix, `features` = the front end). Prints the hot spot on one line.
Needs the data of `make run`.
"""

from __future__ import annotations

import argparse
from collections import Counter

from measure import default_processor
from results_log import append_run

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)


def main() -> None:
    import tensorflow as tf

    from kws_core.config import load_params
    from kws_core.features.front_end import compute_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--out", default="bench/results/profile_ops.json")
    args = ap.parse_args()

    params = load_params(args.params)
    _, spec, proc = default_processor(params)
    graph = tf.Graph()
    with graph.as_default():
        step = tf.compat.v1.placeholder(tf.int64, [])
        with tf.name_scope("augment"):
            audio, _ = proc._audio_batch_fn(params.train.batch_size)(step)
        with tf.name_scope("features"):
            feats = compute_features(audio, spec)
    by_op: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(feats, {step: 0})  # warm-up
        opts = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for i in range(args.batches):
            meta = tf.compat.v1.RunMetadata()
            sess.run(feats, {step: i + 1}, options=opts, run_metadata=meta)
            for dev in meta.step_stats.dev_stats:
                for node in dev.node_stats:
                    name = node.node_name.split(":")[0]
                    if name in ("_SOURCE", "_SINK") or "/" not in name:
                        continue
                    # Grappler renames folded/fused nodes; the timeline label keeps the op type.
                    op = node.timeline_label.split("(")[0].split("=")[-1].strip() or name
                    us = node.op_end_rel_micros - node.op_start_rel_micros
                    by_op[op] += us
                    stage = "features" if "features/" in name else "augment"
                    by_stage[stage] += us
    total = sum(by_op.values()) or 1
    ops = {op: round(100 * us / total, 1) for op, us in by_op.most_common(8)}
    stages = {s: round(100 * us / total, 1) for s, us in by_stage.most_common()}
    ms_per_batch = total / 1000 / args.batches
    top, share = next(iter(ops.items()))
    print(
        f"input pipeline profile: {ms_per_batch:.1f} ms of kernel time per batch; stages "
        f"{stages}; hot spot {top} ({share}%); top ops {ops}"
    )
    append_run(
        args.out,
        batches=args.batches,
        kernel_ms_per_batch=round(ms_per_batch, 2),
        stage_pct=stages,
        op_pct=ops,
    )


if __name__ == "__main__":
    main()
