"""End-to-end training speed and memory: `kws train` as a user runs it, one process per run.

    .venv/bin/python bench/train_speed.py --repeats 3 --out bench/results/train_speed.json

For the example's models (tiny_conv, low_latency_conv and conv; batch 100, mfcc 98x40, default
augmentation, features computed on the fly as the example does) it reports warm steps/s (after
the first step's tracing), peak RSS of the whole process, and the ratio to the example's
figures. The default model also trains from the feature cache (`feature_source=cache`, if
`kws features` has built it), and on 1 core vs 2 (the process pinned with sched_setaffinity).
Needs the data of `make run`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from measure import KWS, run, spread
from results_log import append_run

# The unmodified TensorFlow example on this machine type (issue 7): steps/s and peak RSS (GiB).
EXAMPLE = {
    "tiny_conv": {"steps_per_s": 3.6, "peak_rss_gib": 0.84},
    "low_latency_conv": {"steps_per_s": 2.5, "peak_rss_gib": 0.84},
    "conv": {"steps_per_s": 0.38, "peak_rss_gib": 1.56},
}


def train_once(arch: str, steps: int, tmp: Path, cpus: set[int] | None = None, **over) -> dict:
    out = tmp / f"{arch}-{len(list(tmp.iterdir()))}"
    flags = {
        "model_architecture": arch,
        "how_many_training_steps": steps,
        "learning_rate": 0.001,
        "eval_step_interval": 10 * steps,  # timing training, not evaluation
        "save_step_interval": 10 * steps,
        "log_step_interval": 10 * steps,
        "feature_source": "on_the_fly",
        "train_dir": out / "train",
        "summaries_dir": out / "logs",
        "reports_dir": out / "reports",
        **over,
    }
    cmd = [*KWS, "train", "--no-mlflow", *(f"--{k}={v}" for k, v in flags.items())]
    m = run(cmd, cpus=cpus)
    metrics = json.loads((out / "reports" / "metrics.json").read_text())
    return {"steps_per_s": metrics["warm_steps_per_second"], **m.row()}


def bench(arch: str, steps: int, repeats: int, tmp: Path, **kw) -> dict:
    runs = [train_once(arch, steps, tmp, **kw) for _ in range(repeats)]
    row = {
        "steps_per_s": spread([r["steps_per_s"] for r in runs]),
        "peak_rss_gib": round(max(r["peak_rss_mb"] for r in runs) / 1024, 2),
        "peak_anon_gib": round(max(r["peak_anon_mb"] for r in runs) / 1024, 2),
        "steps": steps,
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="steps of each small-model run")
    ap.add_argument("--conv_steps", type=int, default=12)
    ap.add_argument("--out", default="bench/results/train_speed.json")
    args = ap.parse_args()

    from kws_core.config import load_params

    cache_ready = (load_params("params.yaml").resolve("results/features")).exists()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp_name:
        tmp = Path(tmp_name)
        plan = [
            ("tiny_conv", "tiny_conv", args.steps, {}),
            ("low_latency_conv", "low_latency_conv", args.steps, {}),
            ("conv", "conv", args.conv_steps, {}),
            ("low_latency_conv 1 core", "low_latency_conv", args.steps, {"cpus": {0}}),
        ]
        if cache_ready:
            plan.append(
                (
                    "low_latency_conv cache",
                    "low_latency_conv",
                    args.steps,
                    {"feature_source": "cache"},
                )
            )
        for name, arch, steps, kw in plan:
            repeats = 1 if arch == "conv" else args.repeats
            row = bench(arch, steps, repeats, tmp, **kw)
            ref = EXAMPLE.get(name)
            if ref:
                row["vs_example"] = round(row["steps_per_s"]["median"] / ref["steps_per_s"], 1)
            rows[name] = row
            print(
                f"train {name}: {row['steps_per_s']['median']} steps/s "
                f"({row['steps_per_s']['min']}-{row['steps_per_s']['max']})"
                + (f", {row['vs_example']}x the example" if ref else "")
                + f", peak RSS {row['peak_rss_gib']} GiB (anon {row['peak_anon_gib']})",
                flush=True,
            )
    print(
        "summary: "
        + ", ".join(f"{name} {row['steps_per_s']['median']} steps/s" for name, row in rows.items())
    )
    append_run(args.out, repeats=args.repeats, rows=rows)


if __name__ == "__main__":
    main()
