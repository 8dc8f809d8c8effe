"""Split a real labelled folder by speaker into a training half and held-out speakers.

    .venv/bin/python bench/real_split.py ../shared/realdata/speech_commands_test_v0.02_dev

Links (symlinks, nothing copied) each clip into `--train_out/<label>/` or, for `--heldout_pct`
of the speakers (by a salted SHA-1 of the speaker), `--out/<label>/`. Train with
`data.sources=<train_out>:W:training` and score `--out`: speakers the model never heard.
(The tutorial's which_set cannot split the official test set: its speakers were chosen by that
very hash, so ~86 % of them land in `testing`.)
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

from kws_core.data.partition import speaker_of

MARKER = ".real_split"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--out", default="results/bench_real/real_heldout_speakers")
    ap.add_argument("--train_out", default="results/bench_real/real_train_speakers")
    ap.add_argument("--heldout_pct", type=float, default=40.0)
    args = ap.parse_args()
    src = Path(args.src).resolve()
    outs = {"heldout": Path(args.out), "train": Path(args.train_out)}
    for out in outs.values():
        if out.exists():
            if not (out / MARKER).exists():
                raise SystemExit(f"real_split: {out} exists and was not written by this script")
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / MARKER).write_text(f"{src}\n")
    n = dict.fromkeys(outs, 0)
    speakers = {k: set() for k in outs}
    for wav in sorted(src.glob("*/*.wav")):
        spk = speaker_of(wav.name)
        h = int(hashlib.sha1(f"kws-real-split|{spk}".encode()).hexdigest(), 16) % 10000
        part = "heldout" if h < 100 * args.heldout_pct else "train"
        (outs[part] / wav.parent.name).mkdir(exist_ok=True)
        (outs[part] / wav.parent.name / wav.name).symlink_to(wav)
        n[part] += 1
        speakers[part].add(spk)
    assert not speakers["heldout"] & speakers["train"]
    for part, out in outs.items():
        print(f"summary: {part}: {n[part]} clips of {len(speakers[part])} speakers in {out}")


if __name__ == "__main__":
    main()
