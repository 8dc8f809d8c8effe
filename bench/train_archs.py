"""Train every architecture on the synthetic default set for a fixed budget and record the numbers.

    .venv/bin/python bench/train_archs.py --steps 600 --out bench/results/train_archs.json

Each architecture trains `--steps` steps (Adam, the CPU profile's schedule scaled to the budget)
in one process, one after the other on the same machine, so the steps/s are comparable. The test
accuracy is on the synthetic test partition; `--real_test_dir` adds accuracy on real speech in the
official test-set layout (e.g. ../shared/realdata/speech_commands_test_v0.02_dev).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kws_core.config import load_params
from kws_core.data.manifest import load_manifest
from kws_core.steps import manifest_path
from kws_core.training.models import model_names


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--archs", default=",".join(model_names()))
    ap.add_argument("--real_test_dir", default="")
    ap.add_argument("--out", default="bench/results/train_archs.json")
    args = ap.parse_args()

    from kws_core.training.evaluate import evaluate_dir
    from kws_core.training.loop import train

    rows = []
    for arch in args.archs.split(","):
        first = int(args.steps * 0.8)
        over = {
            "model_architecture": arch,
            "how_many_training_steps": f"{first},{args.steps - first}",
            "train_dir": f"results/bench/{arch}",
            "summaries_dir": f"results/bench/{arch}_logs",
            "reports_dir": f"results/bench/{arch}_reports",
            "eval_step_interval": max(args.steps // 4, 1),
            "save_step_interval": args.steps,
        }
        params = load_params(args.params, over)
        manifest = load_manifest(manifest_path(params))
        data_dir = params.resolve(params.data.data_dir)
        t0 = time.perf_counter()
        res = train(params, manifest, data_dir, progress=False, log=lambda _m: None, track=False)
        row = {
            "arch": arch,
            "params": res.params_count,
            "mflops": round(res.flops / 1e6, 2),
            "steps": res.final_step,
            "steps_per_s": round(res.steps_per_second, 2),
            "train_s": round(res.seconds, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
            "val_acc": round(100 * res.best_val_accuracy, 1),
            "test_acc": round(100 * res.test_accuracy, 1),
        }
        if args.real_test_dir:
            ev = evaluate_dir(params, Path(args.real_test_dir), "best")
            row["real_acc"] = round(100 * ev.accuracy, 1)
            row["real_n"] = ev.n
        print(json.dumps(row), flush=True)
        rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
