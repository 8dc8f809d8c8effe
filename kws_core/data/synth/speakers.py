"""Synthetic speakers: fixed combinations of espeak-ng dialect, voice variant, rate and pitch."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kws_core.data.synth import espeak
from kws_core.infra.errors import KwsError

RATE_WPM = (120, 220)
PITCH = (20, 80)
PITCH_RANGE = (20, 90)

# Variants that sound like a person (not a robot, whisper, croak or cartoon) and render the same
# samples every time. Klatt-based variants are left out: they sound more synthetic.
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda",
    "grandma", "linda", "steph", "steph2", "steph3",
)  # fmt: skip
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen",
    "Storm", "antonio", "ed", "grandpa", "gustave", "ian", "iven", "iven2", "iven3",
    "iven4", "john", "kaukovalta", "marcelo", "michel", "miguel", "norbert", "pablo",
    "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "travis", "victor",
)  # fmt: skip


@dataclass(frozen=True)
class Speaker:
    id: str
    dialect: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int

    @property
    def voice(self) -> str:
        """espeak voice name, e.g. 'en-gb-scotland+f3'."""
        return f"{self.dialect}+{self.variant}"


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(_digest(*parts)[:16], "little"))


def available_variants() -> tuple[list[str], list[str]]:
    """(female, male) variant names from the curated lists that this wheel actually has."""
    have = espeak.list_variants()
    female = [v for v in FEMALE_VARIANTS if v in have]
    male = [v for v in MALE_VARIANTS if v in have]
    if not female or not male:
        # An unusual espeak-ng build: fall back to whatever the variant files say about gender.
        female = female or [v for v, g in have.items() if g == "female" and " " not in v]
        male = male or [v for v, g in have.items() if g == "male" and " " not in v]
    if not female or not male:
        raise KwsError(
            f"espeak-ng data in {espeak.data_path()} lacks male or female voice variants: "
            "reinstall it with `pip install espeakng-loader`"
        )
    return female, male


def make_speakers(n: int, seed: int, dialects: Sequence[str] | None = None) -> list[Speaker]:
    """`n` distinct speakers, the same for the same `seed`.

    Speakers alternate female/male variants and cycle through every (dialect, variant) pair in a
    seed-shuffled order before any pair repeats; rate, pitch and pitch range are drawn per
    speaker. The list is prefix-stable: make_speakers(10, s)[:5] == make_speakers(5, s).
    Ids are 8 lowercase hex characters from sha256(seed, index), unique within the list.
    `dialects` keeps only those English dialects (None: every one the wheel has).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise KwsError(f"number of speakers must be a whole number >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KwsError(f"seed must be an integer, got {seed!r}")
    have = espeak.list_english_dialects()
    if dialects is None:
        dialects = have
    else:
        unknown = [d for d in dialects if d not in have]
        if unknown or not dialects:
            raise KwsError(
                f"espeak-ng has no English dialect {unknown[0] if unknown else '(none given)'!r}; "
                f"choose from {', '.join(have)}"
            )
        dialects = [d for d in have if d in dialects]
    female, male = available_variants()
    pools = []
    for gender, variants in (("female", female), ("male", male)):
        pairs = [(d, v) for d in dialects for v in variants]
        order = _rng("kws-synth-pairs", seed, gender).permutation(len(pairs))
        pools.append([pairs[i] for i in order])

    speakers: list[Speaker] = []
    ids: set[str] = set()
    combos: set[tuple[str, str, int, int, int]] = set()
    for i in range(n):
        pool = pools[i % 2]
        dialect, variant = pool[(i // 2) % len(pool)]
        attempt = 0
        while True:
            rng = _rng("kws-synth-voice", seed, i, attempt)
            rate = int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1))
            pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
            pitch_range = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
            combo = (dialect, variant, rate, pitch, pitch_range)
            if combo not in combos:
                break
            attempt += 1
        attempt = 0
        while True:
            sid = _digest("kws-synth-speaker", seed, i, attempt).hex()[:8]
            if sid not in ids:
                break
            attempt += 1
        combos.add(combo)
        ids.add(sid)
        speakers.append(Speaker(sid, dialect, variant, rate, pitch, pitch_range))
    return speakers
