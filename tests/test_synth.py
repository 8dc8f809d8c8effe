"""Synthetic Speech Commands generator: real espeak-ng, small sizes."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from kws_core.data.synth import (
    SPEECH_COMMANDS_WORDS,
    Speaker,
    espeak,
    generate_synthetic_dataset,
    make_background_noises,
    make_speakers,
)
from kws_core.data.synth import dataset as synth_dataset
from kws_core.infra.errors import KwsError

WORDS = ["yes", "no", "marvin"]
N_SPEAKERS = 4
N_UTT = 2
NOISE_S = 2.5
SR = 16000
CLIP_NAME = re.compile(r"^([0-9a-f]{8})_nohash_(\d+)\.wav$")
REQUIRED_NOISES = {"white_noise", "pink_noise", "brown_noise", "machinery_hum", "babble"}


def _generate(out: Path, **overrides):
    args = dict(
        words=WORDS,
        speakers=N_SPEAKERS,
        utterances_per_speaker=N_UTT,
        seed=0,
        noise_duration_s=NOISE_S,
        workers=2,
        progress=False,
    )
    args.update(overrides)
    return generate_synthetic_dataset(out, **args)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _clips(root: Path) -> list[Path]:
    return sorted(p for w in WORDS for p in (root / w).glob("*.wav"))


def _frame_rms(x: np.ndarray, frame: int = 160) -> np.ndarray:
    n = x.size // frame
    frames = x[: n * frame].astype(np.float64).reshape(n, frame)
    return np.sqrt(np.mean(frames**2, axis=1))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "speech_commands"
    report = _generate(out, workers=2)
    return out, report


# -- data set ---------------------------------------------------------------------------------
def test_report(dataset):
    out, report = dataset
    assert report.out_dir == out
    assert report.n_clips == len(WORDS) * N_SPEAKERS * N_UTT
    assert report.n_speakers == N_SPEAKERS
    assert list(report.words) == WORDS
    assert report.seconds > 0
    assert report.rejected == 0
    # the quality table: one row per voice, every generated clip kept
    table = pd.read_csv(out / "quality.csv")
    assert table["generated"].sum() == report.n_clips == table["kept"].sum()
    assert set(table["family"]) == {"espeak"}


def test_layout_and_naming(dataset):
    out, _ = dataset
    dirs = {p.name for p in out.iterdir() if p.is_dir()}
    assert dirs == set(WORDS) | {"_background_noise_"}
    assert {p.name for p in out.iterdir() if p.is_file()} == {
        "README.md",
        "speakers.csv",
        "quality.csv",
    }
    with open(out / "speakers.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "dialect", "variant", "rate", "pitch", "pitch_range"]
    ids = {r["id"] for r in rows}
    assert len(ids) == N_SPEAKERS
    for word in WORDS:
        names = sorted(p.name for p in (out / word).iterdir())
        assert len(names) == N_SPEAKERS * N_UTT
        seen = set()
        for name in names:
            m = CLIP_NAME.match(name)
            assert m, name
            assert m.group(1) in ids
            seen.add((m.group(1), int(m.group(2))))
        assert seen == {(i, n) for i in ids for n in range(N_UTT)}
    readme = (out / "README.md").read_text()
    assert "espeak-ng" in readme and "Seed: 0." in readme


def test_clip_format(dataset):
    out, _ = dataset
    clips = _clips(out)
    assert len(clips) == len(WORDS) * N_SPEAKERS * N_UTT
    for path in clips:
        info = sf.info(str(path))
        assert info.format == "WAV"
        assert info.subtype == "PCM_16"
        assert info.samplerate == SR
        assert info.channels == 1
        assert info.frames == SR  # exactly 1000 ms


def test_words_audible_over_a_nonzero_floor(dataset):
    out, _ = dataset
    for path in _clips(out):
        x, _ = sf.read(str(path), dtype="float64")
        rms = np.sort(_frame_rms(x))
        floor = np.mean(rms[:10])
        assert floor > 0.5 / 32768, f"{path.name}: silence is digital zero"
        assert np.count_nonzero(x == 0) < 0.25 * x.size, path.name
        # The word region is far above the noise floor (>= 25 dB).
        assert rms[-1] > floor * 10 ** (25 / 20), path.name
        # ... and the whole word is inside the clip: both edges are quiet.
        edges = np.r_[x[:80], x[-80:]]
        assert np.max(np.abs(edges)) < 0.5 * np.max(np.abs(x)), path.name


def test_level_spread_and_no_clipping(dataset):
    out, _ = dataset
    peaks = []
    for path in _clips(out):
        x, _ = sf.read(str(path), dtype="int16")
        peaks.append(20 * np.log10(np.max(np.abs(x.astype(np.float64))) / 32768))
    peaks = np.array(peaks)
    assert peaks.min() >= -26.0 and peaks.max() <= -0.9
    assert peaks.max() - peaks.min() > 8.0  # levels are spread, not normalised


def test_repetitions_vary(dataset):
    out, _ = dataset
    onsets = []
    for path in sorted((out / "yes").glob("*_nohash_0.wav")):
        rep0, _ = sf.read(str(path), dtype="float64")
        rep1, _ = sf.read(str(path).replace("_nohash_0", "_nohash_1"), dtype="float64")
        assert not np.array_equal(rep0, rep1)
        for x in (rep0, rep1):
            onsets.append(int(np.argmax(np.abs(x) > 0.1 * np.max(np.abs(x)))))
    assert len(set(onsets)) > len(onsets) // 2  # offsets really are random


def test_background_noise_files(dataset):
    out, _ = dataset
    folder = out / "_background_noise_"
    assert {p.stem for p in folder.glob("*.wav")} >= REQUIRED_NOISES
    for path in folder.glob("*.wav"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.frames >= NOISE_S * SR
        x, _ = sf.read(str(path), dtype="int16")
        peak = np.max(np.abs(x.astype(np.int32)))
        assert peak < 32767, f"{path.name} clips"
        assert -7.0 < 20 * np.log10(peak / 32768) < -2.5


def test_deterministic_across_runs_and_worker_counts(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    _generate(again, workers=1)
    first, second = _files(out), _files(again)
    assert first.keys() == second.keys()
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_different_seed_differs(dataset, tmp_path):
    out, _ = dataset
    other = tmp_path / "other"
    _generate(other, seed=1, workers=1)
    a, b = _files(out), _files(other)
    clips_a = {v for k, v in a.items() if k.endswith(".wav") and "_background_" not in k}
    clips_b = {v for k, v in b.items() if k.endswith(".wav") and "_background_" not in k}
    assert not clips_a & clips_b
    assert a["_background_noise_/babble.wav"] != b["_background_noise_/babble.wav"]
    assert a["speakers.csv"] != b["speakers.csv"]


# -- speakers ---------------------------------------------------------------------------------
def test_speakers_distinct_unique_and_deterministic():
    speakers = make_speakers(300, seed=7)
    assert all(isinstance(s, Speaker) for s in speakers)
    assert len({s.id for s in speakers}) == 300
    assert all(re.fullmatch(r"[0-9a-f]{8}", s.id) for s in speakers)
    combos = {(s.dialect, s.variant, s.rate, s.pitch, s.pitch_range) for s in speakers}
    assert len(combos) == 300
    assert len({(s.dialect, s.variant) for s in speakers}) > 200
    assert len({s.dialect for s in speakers}) >= 6
    genders = espeak.list_variants()
    assert {genders[s.variant] for s in speakers} == {"male", "female"}
    for s in speakers:
        assert s.dialect in espeak.list_english_dialects()
        assert 120 <= s.rate <= 220 and 20 <= s.pitch <= 80 and 20 <= s.pitch_range <= 90
    assert make_speakers(300, seed=7) == speakers
    assert make_speakers(20, seed=7) == speakers[:20]  # prefix-stable
    assert {s.id for s in make_speakers(20, seed=8)}.isdisjoint({s.id for s in speakers[:20]})


def test_speakers_bad_args():
    with pytest.raises(KwsError):
        make_speakers(0, seed=0)
    with pytest.raises(KwsError):
        make_speakers(3, seed="x")


# -- noise ------------------------------------------------------------------------------------
def test_background_noises_levels_and_determinism():
    noises = make_background_noises(SR, 1.5, seed=3)
    assert set(noises) >= REQUIRED_NOISES
    for name, x in noises.items():
        assert x.dtype == np.float32, name
        assert x.size >= 1.5 * SR, name
        peak_db = 20 * np.log10(np.max(np.abs(x)))
        assert -6.01 <= peak_db <= -2.99, (name, peak_db)
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 0.01, name
    again = make_background_noises(SR, 1.5, seed=3)
    assert all(np.array_equal(noises[k], again[k]) for k in noises)
    other = make_background_noises(SR, 1.5, seed=4)
    assert not np.array_equal(noises["babble"], other["babble"])
    assert not np.array_equal(noises["white_noise"], other["white_noise"])


def test_noise_colours_and_hum():
    noises = make_background_noises(SR, 2.0, seed=0)
    freqs = np.fft.rfftfreq(2 * SR, 1 / SR)

    def band(x, lo, hi):
        p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        return p[(freqs >= lo) & (freqs < hi)].mean()

    # white is flat, pink falls ~10 dB per decade, brown ~20 dB per decade
    ratios = {k: band(noises[k], 100, 200) / band(noises[k], 4000, 5000) for k in noises}
    assert 0.5 < ratios["white_noise"] < 2
    assert 10 < ratios["pink_noise"] < 60
    assert ratios["brown_noise"] > 200
    hum = np.abs(np.fft.rfft(noises["machinery_hum"].astype(np.float64)))
    mains = [f for f in (50, 60) if hum[freqs == 2 * f][0] > 20 * np.median(hum)]
    assert len(mains) == 1  # a strong 100 or 120 Hz line: one mains frequency

    # babble is speech-like: its short-time level fluctuates much more than white noise
    def spread(x):
        return np.std(20 * np.log10(_frame_rms(x, 320) + 1e-9))

    assert spread(noises["babble"]) > 2 * spread(noises["white_noise"])


def test_noise_bad_args():
    with pytest.raises(KwsError):
        make_background_noises(SR, 0.0, seed=0)
    with pytest.raises(KwsError):
        make_background_noises(1000, 5.0, seed=0)
    with pytest.raises(KwsError, match="no background noise called 'jazz'.*music"):
        make_background_noises(SR, 2.0, seed=0, names=("music", "jazz"))


def test_music_is_tonal_rhythmic_and_seeded():
    x = make_background_noises(SR, 8.0, seed=1, names=("music",))["music"].astype(np.float64)
    white = make_background_noises(SR, 8.0, seed=1, names=("white_noise",))["white_noise"]
    assert -6.01 <= 20 * np.log10(np.max(np.abs(x))) <= -2.99

    def peakiness(y):  # spectral peak over median: harmonic lines stand far above the floor
        p = np.abs(np.fft.rfft(y[:SR] * np.hanning(SR))) ** 2
        return p.max() / np.median(p)

    assert peakiness(x) > 100 * peakiness(white.astype(np.float64))
    # notes come and go: the level moves much more than a steady noise's
    spread = np.std(20 * np.log10(_frame_rms(x, 320) + 1e-9))
    assert spread > 2 * np.std(20 * np.log10(_frame_rms(white, 320) + 1e-9))
    again = make_background_noises(SR, 8.0, seed=1, names=("music",))["music"]
    other = make_background_noises(SR, 8.0, seed=2, names=("music",))["music"]
    assert np.array_equal(x.astype(np.float32), again) and not np.array_equal(again, other)


def test_noise_types_config_names_the_generators():
    from kws_core.config import DEFAULT_NOISE_TYPES, NOISE_TYPES, load_params
    from kws_core.data.synth import noise
    from kws_core.infra.errors import ConfigError

    assert NOISE_TYPES == noise.NOISE_NAMES + noise.EXTRA_NOISE_NAMES
    assert DEFAULT_NOISE_TYPES == ",".join(noise.NOISE_NAMES)
    p = load_params(None, {"noise_types": "babble, music"})
    assert p.data.synthetic.noise_type_list == ["babble", "music"]
    with pytest.raises(ConfigError, match="data.synthetic.noise_types.*'jazz'.*music"):
        load_params(None, {"noise_types": "babble,jazz"})


# -- espeak wrapper ---------------------------------------------------------------------------
def test_synthesize_and_trim():
    y = espeak.synthesize("sheila", "en-us+f3", 170, 50, 50)
    assert y.dtype == np.float32 and y.ndim == 1
    assert 0.2 * SR < y.size < 1.0 * SR
    peak = np.max(np.abs(y))
    assert 0.05 < peak <= 1.0
    # trimmed: sound starts and ends within the 5 ms kept at each edge
    pad = int(0.006 * SR)
    threshold = peak * 10 ** (espeak.TRIM_REL_DB / 20)
    assert np.max(np.abs(y[:pad])) > threshold and np.max(np.abs(y[-pad:])) > threshold
    with espeak.EspeakEngine() as engine:
        raw = engine.synthesize("sheila", "en-us+f3", 170, 50, 50, trim=False)
    assert raw.size > y.size
    assert raw[0] == 0.0  # espeak starts in silence; synthesize() removed it


def test_trim_silence():
    tone = 0.5 * np.sin(np.arange(1000) / 5.0)
    x = np.r_[np.zeros(3000), 1e-6 * np.ones(500), tone, np.zeros(2000)].astype(np.float32)
    y = espeak.trim_silence(x, SR)
    pad = int(espeak.TRIM_PAD_S * SR)
    assert tone.size <= y.size <= tone.size + 2 * pad + 1
    assert espeak.trim_silence(np.zeros(100, np.float32), SR).size == 0


def test_engines_are_isolated_and_repeatable():
    def run():
        with espeak.EspeakEngine() as engine:
            return [engine.synthesize(w, "en-gb-scotland+m3", 160, 40, 60) for w in WORDS]

    first = run()
    espeak.synthesize("something else entirely", "en-us+f2", 200, 70, 30)
    second = run()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_dialects_and_variants():
    dialects = espeak.list_english_dialects()
    assert {"en-us", "en-gb", "en-gb-scotland", "en-029"} <= set(dialects)
    variants = espeak.list_variants()
    assert variants["f3"] == "female" and variants["m3"] == "male"
    for dialect in dialects:
        assert espeak.synthesize("yes", f"{dialect}+m1", 170, 50, 50).size > 0


def test_espeak_bad_voice():
    with pytest.raises(KwsError, match="variant"):
        espeak.synthesize("yes", "en-us+nosuchvariant", 170, 50, 50)
    with pytest.raises(KwsError):
        espeak.synthesize("yes", "xx-nolanguage", 170, 50, 50)
    with pytest.raises(KwsError):
        espeak.synthesize("   ", "en-us", 170, 50, 50)


def test_missing_library_is_a_kws_error(monkeypatch, tmp_path):
    missing = tmp_path / "libespeak-ng.so"
    monkeypatch.setattr(espeak, "library_path", lambda: str(missing))
    with pytest.raises(KwsError) as exc:
        espeak.EspeakEngine()
    assert str(missing) in str(exc.value)
    assert "pip install espeakng-loader" in str(exc.value)

    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(espeak, "library_path", lambda: str(broken))
    with pytest.raises(KwsError, match="pip install espeakng-loader"):
        espeak.EspeakEngine()


# -- argument checks and atomicity ------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"words": []},
        {"words": "yes"},
        {"words": ["hello world"]},
        {"words": ["yes!"]},
        {"words": ["Yes"]},
        {"words": ["../up"]},
        {"words": [""]},
        {"words": ["yes", "yes"]},
        {"words": ["yes", 3]},
        {"speakers": 0},
        {"speakers": 2.5},
        {"speakers": True},
        {"utterances_per_speaker": 0},
        {"sample_rate": 1000},
        {"sample_rate": 22050, "clip_duration_ms": 1001},
        {"clip_duration_ms": 10},
        {"noise_duration_s": 0},
        {"workers": 0},
        {"seed": "abc"},
    ],
)
def test_bad_args(tmp_path, overrides):
    out = tmp_path / "out"
    with pytest.raises(KwsError):
        _generate(out, **overrides)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    with pytest.raises(KwsError, match="not a synthetic data set"):
        _generate(out, words=["yes"], speakers=1, workers=1)
    assert (out / "thesis.txt").read_text() == "do not delete"


def test_replaces_its_own_previous_output(tmp_path):
    out = tmp_path / "out"
    _generate(out, words=["yes", "no"], speakers=1, workers=1)
    _generate(out, words=["up"], speakers=1, workers=1)
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"up", "_background_noise_"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replaces_a_data_set_written_before_kws_core_was_grouped_by_stage(tmp_path):
    out = tmp_path / "out"
    _generate(out, words=["yes"], speakers=1, workers=1)
    readme = out / "README.md"
    old = readme.read_text().replace(
        synth_dataset.README_MARKER, "Generated by `kws_core.synth.generate_synthetic_dataset`"
    )
    readme.write_text(old)
    _generate(out, words=["no"], speakers=1, workers=1)
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"no", "_background_noise_"}


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real_write = synth_dataset._write_clip
    calls = {"n": 0}

    def failing_write(path, samples, sample_rate):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_write(path, samples, sample_rate)

    monkeypatch.setattr(synth_dataset, "_write_clip", failing_write)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _generate(out, words=["yes", "no"], speakers=2, utterances_per_speaker=1, workers=1)
    assert calls["n"] == 3
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temp folder either


def test_interrupted_rerun_keeps_previous_data_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _generate(out, words=["yes"], speakers=1, utterances_per_speaker=1, workers=1)
    before = _files(out)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_dataset, "_write_clip", boom)
    with pytest.raises(RuntimeError):
        _generate(out, words=["yes", "no"], speakers=2, workers=1)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_speech_commands_words():
    assert len(SPEECH_COMMANDS_WORDS) == 35
    assert SPEECH_COMMANDS_WORDS[:4] == ("yes", "no", "up", "down")
    assert SPEECH_COMMANDS_WORDS[-5:] == ("backward", "forward", "follow", "learn", "visual")
    assert len(set(SPEECH_COMMANDS_WORDS)) == 35


# -- quality gate ---------------------------------------------------------------------------------
def _word(n: int = 8000, tail: float = 0.0) -> np.ndarray:
    t = np.arange(n) / 16000
    y = 0.5 * np.sin(2 * np.pi * 200 * t) * np.hanning(n)
    if tail:
        y[-200:] = tail * np.sin(2 * np.pi * 200 * t[-200:])
    return y.astype(np.float32)


@pytest.mark.parametrize(
    "y,reason",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.full(4000, 1e-6, np.float32), "empty"),
        (np.clip(4 * _word(), -1, 1), "clipped"),
        (_word(16000 * 2), "too_long"),
        (_word(tail=0.5), "cut_off"),
        (_word(), None),
        (_word(15000), None),  # sped up a little to fit, not refused
    ],
)
def test_quality_problem(y, reason):
    assert synth_dataset.quality_problem(y, 16000, 16000) == reason


def test_quality_gate_drops_bad_clips_and_counts_them_per_voice(tmp_path, monkeypatch):
    real = synth_dataset.synthesize_espeak

    def sometimes_broken(engine, speaker, word, rng, sample_rate):
        y = real(engine, speaker, word, rng, sample_rate)
        return np.zeros(0, np.float32) if word == "no" and speaker.variant.startswith("f") else y

    monkeypatch.setattr(synth_dataset, "synthesize_espeak", sometimes_broken)
    report = generate_synthetic_dataset(
        tmp_path / "d", words=["yes", "no"], speakers=6, workers=1, noise_duration_s=1,
        progress=False,
    )  # fmt: skip
    table = pd.read_csv(tmp_path / "d" / "quality.csv")
    female = table["voice"].str.contains(r"\+f")
    assert report.rejected == table["empty"].sum() == int(female.sum()) > 0
    assert (table.loc[female, "rejected_pct"] == 50.0).all()
    assert len(list((tmp_path / "d" / "no").glob("*.wav"))) == 6 - report.rejected
    assert report.n_clips == 12 - report.rejected
    readme = (tmp_path / "d/README.md").read_text()
    assert "rejected as empty, clipped, too long or cut off" in readme


def test_dialect_filter():
    speakers = make_speakers(12, 0, dialects=["en-029", "en-us"])
    assert {s.dialect for s in speakers} == {"en-029", "en-us"}
    with pytest.raises(KwsError, match="no English dialect 'en-xx'"):
        make_speakers(3, 0, dialects=["en-xx"])


def test_piper_speakers_are_reproducible_and_vary(tmp_path):
    pytest.importorskip("piper", reason="the voices extra (piper-tts) is not installed")
    from kws_core.data.synth.piper import make_piper_speakers

    speakers = make_piper_speakers(3, 0)
    assert speakers == make_piper_speakers(5, 0)[:3] and len({s.id for s in speakers}) == 3
    assert len({s.speed for s in speakers}) == 3
    kw = dict(words=["yes", "stop"], speakers=1, piper_speakers=2, noise_duration_s=1)
    a = generate_synthetic_dataset(tmp_path / "a", workers=2, progress=False, **kw)
    b = generate_synthetic_dataset(tmp_path / "b", workers=1, progress=False, **kw)
    assert a.n_clips == b.n_clips == 6 and a.n_speakers == 3
    for word in ("yes", "stop"):
        files = sorted(p.name for p in (tmp_path / "a" / word).glob("*.wav"))
        assert len(files) == 3
        for name in files:
            assert (tmp_path / "a" / word / name).read_bytes() == (
                tmp_path / "b" / word / name
            ).read_bytes(), "Piper clips must not depend on the worker that rendered them"
    table = pd.read_csv(tmp_path / "a" / "quality.csv")
    assert table.set_index("voice").loc["piper-joe", "generated"] == 4
    piper_rows = (tmp_path / "a" / "piper_speakers.csv").read_text().splitlines()
    assert piper_rows[0] == "id,noise_scale,noise_w_scale,length_scale,speed,formant_shift,pitch_hz"
    assert len(piper_rows) == 3


def test_piper_voice_change_gives_higher_voices_reproducibly(tmp_path):
    pytest.importorskip("piper", reason="the voices extra (piper-tts) is not installed")
    parselmouth = pytest.importorskip("parselmouth", reason="the voices extra is not installed")
    from parselmouth.praat import call

    from kws_core.data.synth.piper import make_piper_speakers

    plain, half = make_piper_speakers(40, 0), make_piper_speakers(40, 0, voice_change=0.5)
    assert 10 <= sum(s.changed for s in half) <= 30 and not any(s.changed for s in plain)
    # the share changes nothing else about a speaker
    assert [(s.id, s.noise_scale, s.speed) for s in plain] == [
        (s.id, s.noise_scale, s.speed) for s in half
    ]
    changed = [s for s in half if s.changed]
    assert all(1.1 <= s.formant_shift <= 1.3 and 165 <= s.pitch_hz <= 300 for s in changed)

    kw = dict(words=["yes"], speakers=1, piper_speakers=1, noise_duration_s=1, progress=False)
    low = generate_synthetic_dataset(tmp_path / "low", workers=1, **kw)
    high = generate_synthetic_dataset(tmp_path / "high", workers=1, piper_voice_change=1.0, **kw)
    again = generate_synthetic_dataset(tmp_path / "again", workers=2, piper_voice_change=1.0, **kw)
    assert low.n_clips == high.n_clips == again.n_clips == 2

    def median_pitch(folder):
        (path,) = [p for p in (folder / "yes").glob("*.wav") if p.stem.startswith(sid)]
        sound = parselmouth.Sound(str(path))
        return call(call(sound, "To Pitch", 0.0, 75, 600), "Get quantile", 0, 0, 0.5, "Hertz")

    (speaker,) = make_piper_speakers(1, 0, voice_change=1.0)
    sid = speaker.id
    assert median_pitch(tmp_path / "low") < 140  # joe's own voice
    assert abs(median_pitch(tmp_path / "high") - speaker.pitch_hz) < 0.15 * speaker.pitch_hz
    name = f"{sid}_nohash_0.wav"
    assert (tmp_path / "high/yes" / name).read_bytes() == (
        tmp_path / "again/yes" / name
    ).read_bytes()
    assert "1 of them with a higher voice" in (tmp_path / "high/README.md").read_text()
    table = pd.read_csv(tmp_path / "high" / "quality.csv")
    assert "piper-joe-higher" in set(table["voice"])
    with pytest.raises(KwsError, match="piper_voice_change must be a share"):
        generate_synthetic_dataset(tmp_path / "bad", piper_voice_change=1.5, **kw)


def test_noise_types_choose_the_background_files(tmp_path):
    _generate(tmp_path / "m", speakers=2, words=["yes"], noise_names=("babble", "music"))
    folder = tmp_path / "m" / "_background_noise_"
    assert {p.name for p in folder.glob("*.wav")} == {"babble.wav", "music.wav"}
    assert "babble, music" in (tmp_path / "m" / "README.md").read_text()
    with pytest.raises(KwsError, match="'jazz'"):
        _generate(tmp_path / "bad", speakers=2, words=["yes"], noise_names=("jazz",))
    assert not (tmp_path / "bad").exists()
