"""Cost of each stage as the synthetic data set grows (1x, 3x, 10x speakers), and synthesis speed.

    .venv/bin/python bench/scaling.py --scales 1,3,10 --out bench/results/scaling.json

For each scale a fresh data set of `250 x scale` synthetic speakers (35 words each, plus noise)
goes through the CLI stages a user runs: `kws dataset` (espeak-ng synthesis on
`synthetic_workers` processes), `manifest`, `validate` (Great Expectations), `features` (the
augmented feature cache) and `train` (`--steps` steps from the cache, so training time should
stay flat and its memory should not follow the data: the cache is memory-mapped). Every stage is
its own process: wall seconds, peak RSS and peak anonymous RSS. Synthesis clips/s is the
dataset stage's clip count over its seconds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from measure import KWS, run
from results_log import append_run

STAGES = ("dataset", "manifest", "validate", "features", "train")


def scale_run(scale: float, steps: int, root: Path) -> dict:
    base = root / f"x{scale:g}"
    flags = {
        "speakers": round(250 * scale),
        "data_dir": base / "data",
        "manifest_dir": base / "manifest",
        "cache_dir": base / "features",
        "train_dir": base / "train",
        "summaries_dir": base / "logs",
        "reports_dir": base / "reports",
        "feature_source": "cache",
        "how_many_training_steps": steps,
        "learning_rate": 0.001,
        "eval_step_interval": steps,
        "save_step_interval": steps,
    }
    args = [f"--{k}={v}" for k, v in flags.items()]
    row: dict = {"speakers": flags["speakers"]}
    for stage in STAGES:
        extra = ["--no-mlflow"] if stage == "train" else []
        m = run([*KWS, stage, "--no-progress", *extra, *args])
        row[stage] = m.row()
        if stage == "dataset":
            clips = sum(1 for _ in (base / "data").rglob("*.wav"))
            row["clips"] = clips
            row["synth_clips_per_s"] = round(clips / m.seconds)
        print(f"  x{scale:g} {stage}: {m.row()}", flush=True)
    shutil.rmtree(base / "data", ignore_errors=True)  # 10x is ~3 GB of WAVs
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="1,3,10")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default="bench/results/scaling.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kws-scaling-") as tmp:
        for scale in (float(s) for s in args.scales.split(",")):
            rows.append({"scale": scale, **scale_run(scale, args.steps, Path(tmp))})
    first = rows[0]
    parts = []
    for r in rows[1:]:
        growth = {s: round(r[s]["seconds"] / first[s]["seconds"], 1) for s in STAGES}
        parts.append(f"x{r['scale']:g}: time {growth}")
    rates = [r["synth_clips_per_s"] for r in rows]
    print(f"scaling vs x{first['scale']:g}: {'; '.join(parts)}; synthesis {rates} clips/s")
    append_run(args.out, steps=args.steps, rows=rows)


if __name__ == "__main__":
    main()
