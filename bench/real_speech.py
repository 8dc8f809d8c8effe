"""Real-speech accuracy of models trained on synthetic speech only: the levers, per seed.

    .venv/bin/python bench/real_speech.py --variants mfcc_llc,emb80_mlp --seeds 0,1 \
        --real_dir ../shared/realdata/speech_commands_test_v0.02_dev

Each variant is a set of params overrides (VARIANTS below) on top of params.yaml; each (variant,
seed) trains untracked into results/bench_real/<variant>-s<seed>, then is scored on the
synthetic test partition and on every `--real_dir` (official test-set layout). One JSON row per
run is appended to bench/results/real_speech.json (accuracy, per-class accuracy, seconds);
bench/report.py turns them into the real-speech table of BENCHMARKS.md. The data set is the one
params.yaml describes (the default synthetic set after `make run`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from results_log import append_run

from kws_core.config import load_params
from kws_core.data.manifest import load_manifest
from kws_core.features.recording import CHAIN_OFF
from kws_core.steps import dataset_step, manifest_path, manifest_step

# The tutorial's augmentation only (shift + background volume): what every variant below up to
# the recording chain was measured with, before the chain became the default.
_TUT_AUG = {"noise_snr_db": ""} | CHAIN_OFF
# The earlier CPU default (profiles/mfcc_cpu.yaml).
_MFCC = _TUT_AUG | {
    "preprocess": "mfcc",
    "feature_source": "on_the_fly",
    "model_architecture": "low_latency_conv",
    "how_many_training_steps": "4000,1000",
    "learning_rate": "0.001,0.0001",
}
_EMB = _TUT_AUG | {"preprocess": "embedding", "feature_source": "cache"}
# The recording chain (room, microphone, speed, gain, distortion) and levers of it switched off
# one at a time (chain_snr switches SNR noise on), on params.yaml's data set.
_CHAIN = {
    "preprocess": "embedding",
    "feature_source": "cache",
    "embedding_hop_ms": 80,
    # the whole chain as first measured; params.yaml now keeps only room + mic (chain_room_mic)
    "speed_probability": 0.5,
    "gain_probability": 0.5,
    "distortion_probability": 0.1,
}
_DEFAULT_DATA = {
    "data_dir": "results/bench_real/data_default",
    "manifest_dir": "results/bench_real/manifest_default",
    "heldout_dir": "results/bench_real/heldout_default",
}
# The default since issue 13's second round: top 5 fine-tuned, 1000 espeak speakers.
_SPK1000 = _DEFAULT_DATA | {
    "piper_voice_change": 0.0,
    "embedding_finetune_layers": 5,
    "speakers": 1000,
    "data_dir": "results/bench_real/data_default_spk1000",
    "manifest_dir": "results/bench_real/manifest_default_spk1000",
}
_CHAIN_ABLATIONS = {
    "snr": {"noise_snr_db": ""},
    "speed": {"speed_probability": 0.0},
    "reverb": {"reverb_probability": 0.0},
    "mic": {"mic_probability": 0.0},
    "gain": {"gain_probability": 0.0},
    "distortion": {"distortion_probability": 0.0},
}
VARIANTS: dict[str, dict] = {
    "mfcc_llc": _MFCC,
    "emb80_mlp": _EMB | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"},
    "emb40_mlp": _EMB | {"embedding_hop_ms": 40, "model_architecture": "embedding_mlp"},
    "emb80_conv": _EMB | {"embedding_hop_ms": 80, "model_architecture": "embedding_conv"},
    "emb40_conv": _EMB | {"embedding_hop_ms": 40, "model_architecture": "embedding_conv"},
    "emb80_mlp_c16": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "cache_copies": 16},
    "emb80_mlp_d02": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "dropout_rate": 0.2},
    "emb80_mlp_u256": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "embedding_units": 256},
    "emb80_mlp_noaug": _EMB
    | {
        "embedding_hop_ms": 80,
        "model_architecture": "embedding_mlp",
        "background_frequency": 0.0,
        "time_shift_ms": 0.0,
    },
    "emb80_mlp_spk1000": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {
        "speakers": 1000,
        "data_dir": "results/bench_real/data_spk1000",
        "manifest_dir": "results/bench_real/manifest_spk1000",
    },
    "emb80_mlp_spk500": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {
        "speakers": 500,
        "data_dir": "results/bench_real/data_spk500",
        "manifest_dir": "results/bench_real/manifest_spk500",
    },
    "emb80_mlp_unk50": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {"unknown_percentage": 50, "manifest_dir": "results/bench_real/manifest_unk50"},
    "emb80_mlp_unk50_nobal": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "balance_classes": False}
    | {"unknown_percentage": 50, "manifest_dir": "results/bench_real/manifest_unk50"},
    "emb80_mlp_long": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {"how_many_training_steps": "8000,2000"},
    "emb80_mlp_short": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {"how_many_training_steps": "1000,250"},
    "emb80_mlp_vshort": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {"how_many_training_steps": "400,100", "eval_step_interval": 100},
    "emb80_mlp_shift200": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "time_shift_ms": 200.0},
    "emb80_mlp_bg100": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "background_frequency": 1.0},
    # + 60 (200) Piper `joe` speakers x 35 words (bench/heldout_voices.py --seed 1 (2)
    # --keyword_speakers 60 --other_speakers 60 (200), copied into a copy of the default set):
    # Piper is then no longer held out, so these rows have no held-out score.
    "emb80_mlp_piper60": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {
        "data_url": "",
        "data_dir": "results/bench_real/data_piper",
        "manifest_dir": "results/bench_real/manifest_piper",
    },
    "emb80_mlp_piper200": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp"}
    | {
        "data_url": "",
        "data_dir": "results/bench_real/data_piper200",
        "manifest_dir": "results/bench_real/manifest_piper200",
    },
    "emb80_mlp_loud": _EMB
    | {"embedding_hop_ms": 80, "model_architecture": "embedding_mlp", "background_volume": 0.3},
    "chain": _CHAIN | {"model_architecture": "embedding_mlp"},
    **{
        f"chain_no_{lever}": _CHAIN | {"model_architecture": "embedding_mlp"} | off
        for lever, off in _CHAIN_ABLATIONS.items()
    },
    "chain_pitch": _CHAIN | {"model_architecture": "embedding_mlp", "pitch_probability": 0.3},
    "chain_room_mic": _CHAIN
    | {
        "model_architecture": "embedding_mlp",
        "speed_probability": 0.0,
        "gain_probability": 0.0,
        "distortion_probability": 0.0,
    },
    # params.yaml's data set with the tutorial's augmentation only: what the chain adds
    "chain_off": _CHAIN | _TUT_AUG,
    "chain_snr": _CHAIN | {"model_architecture": "embedding_mlp", "noise_snr_db": "-5,20"},
    # params.yaml's defaults on their own data set: 250 espeak speakers (two dialects held out)
    # + 60 Piper speakers; the held-out dialect family in results/bench_real/heldout_default.
    "default": _DEFAULT_DATA | {"model_architecture": "embedding_mlp"},
    # issue 14's default: 250 espeak speakers, the embedding frozen (renamed from "default")
    "issue14_default": _DEFAULT_DATA
    | {"model_architecture": "embedding_mlp", "speakers": 250, "embedding_finetune_layers": 0},
    "default_espeak": _DEFAULT_DATA
    | {
        "piper_speakers": 0,
        "data_dir": "results/bench_real/data_default_espeak",
        "manifest_dir": "results/bench_real/manifest_default_espeak",
        "heldout_dir": "results/bench_real/heldout_default_espeak",
    },
    "mfcc_llc_default": _DEFAULT_DATA
    | {k: v for k, v in _MFCC.items() if k not in _TUT_AUG}
    | {"feature_source": "cache"},
    # + real clips of 341 speakers as a second source (bench/real_split.py), weight 3; score
    # on results/bench_real/real_heldout_speakers (209 other speakers).
    "multi_real": _DEFAULT_DATA
    | {
        "sources": "results/bench_real/real_train_speakers:3:training",
        "data_dir": "results/bench_real/data_default_spk1000",
        "manifest_dir": "results/bench_real/manifest_multi_real_spk1000",
    },
    # the same with issue 14's default (250 espeak speakers, embedding frozen)
    "issue14_multi_real": _DEFAULT_DATA
    | {
        "sources": "results/bench_real/real_train_speakers:3:training",
        "manifest_dir": "results/bench_real/manifest_multi_real",
        "speakers": 250,
        "embedding_finetune_layers": 0,
    },
    # Piper speakers given higher voices (Praat "Change gender": formants and pitch):
    # voice0 is the default data set without it, voice50 with half of them changed.
    "voice0": _DEFAULT_DATA | {"piper_voice_change": 0.0},
    **{
        f"voice{int(100 * share)}{'' if n == 60 else f'_p{n}'}": _DEFAULT_DATA
        | {
            "piper_voice_change": share,
            "piper_speakers": n,
            "data_dir": f"results/bench_real/data_voice{int(100 * share)}_p{n}",
            "manifest_dir": f"results/bench_real/manifest_voice{int(100 * share)}_p{n}",
        }
        for share, n in [(0.5, 60), (1.0, 60), (0.5, 120)]
    },
    # The speech embedding's top convolutions fine-tuned with the head (issue 13), on voice0's
    # data set; embedding_mlp is the head.
    **{
        f"finetune{k}": _DEFAULT_DATA | {"piper_voice_change": 0.0, "embedding_finetune_layers": k}
        for k in (1, 2, 5, 9)
    },
    # More espeak speakers on voice0's data set (250 -> 1000; synthesis is cheap, the cache is not)
    "voice0_spk1000": _DEFAULT_DATA
    | {
        "piper_voice_change": 0.0,
        "speakers": 1000,
        "data_dir": "results/bench_real/data_default_spk1000",
        "manifest_dir": "results/bench_real/manifest_default_spk1000",
    },
    "finetune5_spk1000": _SPK1000,
    # The tutorial's CNN (MFCC) on the 1000-speaker data set: as first measured (5,000 steps),
    # then trained 4x longer (it underfits: ~73% on synthetic test clips).
    **{
        f"mfcc_llc_spk1000{tag}": _DEFAULT_DATA
        | {k: v for k, v in _MFCC.items() if k not in _TUT_AUG}
        | {
            "feature_source": "cache",
            "speakers": 1000,
            "data_dir": "results/bench_real/data_default_spk1000",
            "manifest_dir": "results/bench_real/manifest_default_spk1000",
        }
        | extra
        for tag, extra in [
            ("", {}),
            ("_long", {"how_many_training_steps": "16000,4000"}),
            ("_sa50", {"specaugment_probability": 0.5}),
            ("_sa100", {"specaugment_probability": 1.0}),
            (
                "_long_sa50",
                {"how_many_training_steps": "16000,4000", "specaugment_probability": 0.5},
            ),
            (
                "_long_sa100",
                {"how_many_training_steps": "16000,4000", "specaugment_probability": 1.0},
            ),
            # with SpecAugment 0.5: log-mel instead of MFCC, noise in every clip, gain
            ("_sa50_logmel", {"specaugment_probability": 0.5, "preprocess": "logmel"}),
            ("_sa50_bg100", {"specaugment_probability": 0.5, "background_frequency": 1.0}),
            ("_sa50_gain", {"specaugment_probability": 0.5, "gain_probability": 0.5}),
            ("_sa50_copies8", {"specaugment_probability": 0.5, "cache_copies": 8}),
            ("_logmel", {"preprocess": "logmel"}),
            ("_sa100_logmel", {"specaugment_probability": 1.0, "preprocess": "logmel"}),
            (
                "_sa50_logmel_bg100",
                {
                    "specaugment_probability": 0.5,
                    "preprocess": "logmel",
                    "background_frequency": 1.0,
                },
            ),
        ]
    },
    # Levers on the default (finetune5_spk1000): SpecAugment, music among the noise beds
    # (a data set of its own), and for the multi-source run a heavier real weight.
    "finetune5_spk1000_sa50": _SPK1000 | {"specaugment_probability": 0.5},
    "finetune5_spk1000_sa100": _SPK1000 | {"specaugment_probability": 1.0},
    "finetune5_spk1000_music": _SPK1000
    | {
        "noise_types": "white_noise,pink_noise,brown_noise,machinery_hum,babble,music",
        "data_dir": "results/bench_real/data_default_spk1000_music",
        "manifest_dir": "results/bench_real/manifest_default_spk1000_music",
    },
    "multi_real_w6": _DEFAULT_DATA
    | {
        "sources": "results/bench_real/real_train_speakers:6:training",
        "data_dir": "results/bench_real/data_default_spk1000",
        "manifest_dir": "results/bench_real/manifest_multi_real_w6",
    },
    "multi_real_w6_sa50": _DEFAULT_DATA
    | {
        "sources": "results/bench_real/real_train_speakers:6:training",
        "data_dir": "results/bench_real/data_default_spk1000",
        "manifest_dir": "results/bench_real/manifest_multi_real_w6",
        "specaugment_probability": 0.5,
    },
    "multi_real_sa50": _DEFAULT_DATA
    | {
        "sources": "results/bench_real/real_train_speakers:3:training",
        "data_dir": "results/bench_real/data_default_spk1000",
        "manifest_dir": "results/bench_real/manifest_multi_real_spk1000",
        "specaugment_probability": 0.5,
    },
    # The tutorial's CNN on MFCC with the chain (cache: on the fly the chain costs ~0.25 s/step).
    "mfcc_llc_chain": {k: v for k, v in _MFCC.items() if k not in _TUT_AUG}
    | {"feature_source": "cache"},
}


def heldout_score(params, evals: dict) -> float | None:
    """Accuracy on the held-out dialect family (train.eval_dirs entry of heldout_dir)."""
    name = params.resolve(params.data.synthetic.heldout_dir).name
    entry = evals.get(name)
    return round(entry["accuracy"], 4) if entry else None


def piper_in_training(params, variant: str) -> bool:
    """From the recipe the data set was generated with (its marker), not from params: a bench
    may reuse a data set made before piper_speakers existed."""
    from kws_core.data.fetch import read_marker

    marker = read_marker(params.resolve(params.data.data_dir)) or {}
    return "piper" in variant or marker.get("recipe", {}).get("piper_speakers", 0) > 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variants", default="mfcc_llc,emb80_mlp")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--real_dir", action="append", default=[])
    ap.add_argument("--out", default="bench/results/real_speech.json")
    ap.add_argument(
        "--score_only",
        action="store_true",
        help="score the checkpoints an earlier run left in results/bench_real (e.g. on a new "
        "--real_dir) instead of training again",
    )
    args = ap.parse_args()

    from kws_core.training.evaluate import evaluate_dir
    from kws_core.training.loop import train

    real_dirs = [Path(d) for d in args.real_dir if Path(d).is_dir()]
    out = Path(args.out)
    for variant in args.variants.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            base = f"results/bench_real/{variant}-s{seed}"
            over = VARIANTS[variant] | {
                "seed": seed,
                "train_dir": base,
                "summaries_dir": f"{base}_logs",
                "reports_dir": f"{base}_reports",
                "save_step_interval": 1000,
                "cache_dir": "results/bench_real/features",
            }
            params = load_params(args.params, over)
            if args.score_only:
                done = params.resolve(params.train.reports_dir) / "metrics.json"
                if not done.exists():
                    print(f"skip: {variant} seed {seed} has no finished run in {base}")
                    continue
                metrics = json.loads(done.read_text())
                test_acc, seconds = metrics["test_accuracy"], metrics["seconds"]
                weights = metrics["params_count"]
                evals = metrics.get("eval", {})
                # the run that trained it: its overrides and time stand for this row
                trained = [
                    r
                    for r in (json.loads(out.read_text()) if out.exists() else [])
                    if (r["variant"], r["seed"]) == (variant, seed) and not r.get("scored_only")
                ]
                wall = trained[-1]["wall_s"] if trained else 0.0
                overrides = trained[-1]["overrides"] if trained else VARIANTS[variant]
            else:
                if not manifest_path(params).exists():  # a variant with its own data set
                    dataset_step(params, progress=False)
                    manifest_step(params, progress=False)
                manifest = load_manifest(manifest_path(params))
                t0 = time.perf_counter()
                res = train(
                    params,
                    manifest,
                    params.resolve(params.data.data_dir),
                    progress=False,
                    log=lambda _m: None,
                    track=False,
                )
                test_acc, seconds = res.test_accuracy, res.seconds
                wall, weights = time.perf_counter() - t0, res.params_count
                evals = res.eval_dirs
                overrides = VARIANTS[variant]
            row = {
                "variant": variant,
                "seed": seed,
                "overrides": overrides,
                "synthetic_test": round(test_acc, 4),
                "train_s": round(seconds, 1),
                "wall_s": round(wall, 1),
                "params": weights,
                "scored_only": args.score_only,
                "real": {},
                # the synthetic set's held-out dialect family, scored by training itself
                "heldout_dialects": heldout_score(params, evals),
                # a Piper-trained model's score on bench/heldout_voices.py is not held out
                "piper_in_training": piper_in_training(params, variant),
            }
            for d in real_dirs:
                ev = evaluate_dir(params, d)
                row["real"][d.name] = {
                    "accuracy": round(ev.accuracy, 4),
                    "n": ev.n,
                    "per_class": {k: round(v, 4) for k, v in ev.per_label.items()},
                }
            append_run(out, **row)
            real = " ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in row["real"].items())
            print(
                f"summary: {variant} seed {seed}: synthetic test "
                f"{100 * test_acc:.1f}%, real {real or '-'}, {row['wall_s']} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
