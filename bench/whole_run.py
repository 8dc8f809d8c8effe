"""The whole default pipeline as `make run` runs it, from an empty results folder.

    .venv/bin/python bench/whole_run.py --out bench/results/whole_run.json

Clones the repository's HEAD into a temporary folder (so nothing is reused: the synthetic data
set is generated again) and runs `python -m pipelines.run` there with this virtualenv: all seven
Dagster assets and their checks, in one process. Reports the wall time, peak RSS, each step's
time, the default model's training speed, minutes and accuracy, and the streaming evaluation's
real-time factor. Uncommitted changes are not part of the run (it says so).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

from measure import PYTHON, ROOT, run
from results_log import append_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/whole_run.json")
    args = ap.parse_args()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if dirty:
        print("whole_run: uncommitted changes are not benchmarked (the run uses HEAD)")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="kws-whole-run-") as tmp:
        clone = Path(tmp) / "kws"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        m = run(
            [
                PYTHON,
                "-m",
                "pipelines.run",
                "--no-progress",
                "--dagster_home",
                str(clone / "results" / "dagster_home"),
            ],
            cwd=clone,
        )
        train = json.loads((clone / "results/train_reports/metrics.json").read_text())
        stream = json.loads((clone / "results/streaming/report.json").read_text())
    steps = dict(
        (name, float(sec))
        for name, sec in re.findall(
            r"(\w+) (\d+) s", m.output.split("step times:")[1].split("\n")[0]
        )
    )
    row = {
        "commit": commit,
        "minutes": round(m.seconds / 60, 2),
        "peak_rss_gib": round(m.peak_rss_mb / 1024, 2),
        "peak_anon_gib": round(m.peak_anon_mb / 1024, 2),
        "step_seconds": steps,
        "train_steps": train["final_step"],
        "train_steps_per_s": round(train["steps_per_second"], 2),
        "train_minutes": round(train["seconds"] / 60, 2),
        "val_accuracy": round(100 * train["best_val_accuracy"], 1),
        "test_accuracy": round(100 * train["test_accuracy"], 1),
        "stream_rtf": round(stream["real_time_factor"], 4),
    }
    print(
        f"whole make run: {row['minutes']} min, peak RSS {row['peak_rss_gib']} GiB; training "
        f"{row['train_steps']} steps in {row['train_minutes']} min ({row['train_steps_per_s']} "
        f"steps/s) to val {row['val_accuracy']}% / test {row['test_accuracy']}%; streaming RTF "
        f"{row['stream_rtf']}"
    )
    append_run(args.out, **row)


if __name__ == "__main__":
    main()
