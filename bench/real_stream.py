"""The default export over streams of real speech and real background noise.

    .venv/bin/python bench/real_stream.py \
        --words_dir ../shared/realdata/speech_commands_test_v0.02_dev \
        --noise_dir ../shared/realdata/_background_noise_

Builds (or reuses) a keyword stream (`stream_duration_s`, words from `--words_dir`, 30% of them
unknown words) and a negative stream (`negative_duration_s` of that folder's non-keywords), both
over the noise files of `--noise_dir`, in results/bench_real/stream, and runs `kws stream-eval`'s
evaluation on the export of `make run` (its SavedModel unless `--graph`). Appends to
bench/results/real_stream.json: keywords correct, false-reject rate, false accepts per hour on
the negative stream at the default threshold and at the threshold for a 10% false-reject rate,
and the real-time factor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from results_log import append_run

from kws_core.config import load_params

FRR = 0.10


def at_false_reject_rate(curve: pd.DataFrame, frr: float) -> dict:
    """The highest swept threshold whose false-reject rate is <= frr, and its FA/h."""
    ok = curve[curve["false_reject_rate"] <= frr]
    if ok.empty:
        return {"threshold": None, "false_accepts_per_hour": None}
    row = ok.sort_values("threshold").iloc[-1]
    return {
        "threshold": float(row["threshold"]),
        "false_accepts_per_hour": float(row["false_accepts_per_hour"]),
        "false_reject_rate": float(row["false_reject_rate"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--graph", default="")
    ap.add_argument("--words_dir", required=True)
    ap.add_argument("--noise_dir", required=True)
    ap.add_argument("--stream_dir", default="results/bench_real/stream")
    ap.add_argument("--out", default="bench/results/real_stream.json")
    args = ap.parse_args()

    from kws_core.streaming.report import streaming_eval

    params = load_params(
        args.params,
        {
            "words_dir": str(Path(args.words_dir).resolve()),
            "noise_dir": str(Path(args.noise_dir).resolve()),
            "stream_dir": args.stream_dir,
        },
    )
    report = streaming_eval(
        params, graph=Path(args.graph) if args.graph else None, progress=False, log_mlflow=False
    )
    r = report.report
    pos, neg = r["keyword_stream"], r["negative_stream"]
    curve = pd.read_csv(report.files["det_csv"])
    row = {
        "model": r["model"],
        "architecture": r["architecture"],
        "words_dir": args.words_dir,
        "noise_dir": args.noise_dir,
        "threshold": params.stream.detection_threshold,
        # keyword occurrences detected with the right label (1 - false-reject rate)
        "keywords_correct": 1 - pos["false_reject_rate"],
        "tutorial_correct_pct": pos["correct_pct"],
        "false_reject_rate": pos["false_reject_rate"],
        "fa_per_hour": neg["false_accepts_per_hour"],
        "negative_hours": neg["duration_s"] / 3600,
        "at_frr_10": at_false_reject_rate(curve, FRR),
        "real_time_factor": r["real_time_factor"],
    }
    append_run(Path(args.out), **row)
    at = row["at_frr_10"]
    at_text = (
        f"{at['false_accepts_per_hour']:.1f} FA/h at threshold {at['threshold']:.2f}"
        if at["threshold"] is not None
        else f"no threshold reaches {100 * FRR:.0f}% FRR"
    )
    print(
        f"summary: real stream {r['architecture']}: {100 * row['keywords_correct']:.1f}% of "
        f"keywords correct, FRR {100 * row['false_reject_rate']:.1f}%, "
        f"{row['fa_per_hour']:.1f} FA/h at threshold {row['threshold']}; {at_text}; "
        f"RTF {row['real_time_factor']:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
