"""A small ctypes wrapper around the espeak-ng library shipped in the `espeakng-loader` wheel.

espeak-ng keeps its synthesiser state in C globals, and some of it (pitch flutter phase,
automatic gain, echo buffer) carries over from one utterance to the next: the same text
synthesised twice in one process comes out a few samples different. `EspeakEngine` therefore
loads its own private copy of the shared library, so each engine starts from the same state and
its output depends only on the calls made on it. Use one engine for a fixed sequence of
utterances (a speaker, a babble track) when the result must be reproducible.

`synthesize()` uses one engine per process, initialised on first use.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import math
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from scipy.signal import firwin, resample_poly

from kws_core.infra.errors import KwsError

_FIX = "reinstall it with `pip install espeakng-loader`"

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE = 1
PARAM_PITCH = 3
PARAM_RANGE = 4

RATE_LIMITS = (80, 450)  # words per minute accepted by espeak-ng
PERCENT_LIMITS = (0, 100)  # pitch and pitch range
RAND_SEED = 0x6B7773  # fixed seed for espeak-ng's breath noise and libc rand() (Klatt voices)
TRIM_REL_DB = -40.0  # samples this far below the peak count as silence when trimming
TRIM_ABS = 3.0 / 32768  # ... and never less than a few LSBs
TRIM_PAD_S = 0.005  # keep a little of the fade in/out

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_TEXT_OK = re.compile(r"\S")
_VARIANT_GENDER = re.compile(r"^\s*gender\s+(\w+)", re.IGNORECASE | re.MULTILINE)
_VARIANT_PITCH = re.compile(r"^\s*pitch\s+(\d+)", re.IGNORECASE | re.MULTILINE)
_LANGUAGE = re.compile(r"^\s*language\s+(\S+)", re.IGNORECASE | re.MULTILINE)


def _loader():
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - the wheel is a hard dependency
        raise KwsError(f"espeak-ng is not available ({exc}): {_FIX}") from None
    return espeakng_loader


def library_path() -> str:
    """Path of the libespeak-ng shared library inside the espeakng-loader wheel."""
    return str(_loader().get_library_path())


def data_path() -> str:
    """Path of the espeak-ng-data directory inside the espeakng-loader wheel."""
    try:
        return str(_loader().get_data_path())
    except (RuntimeError, OSError) as exc:
        raise KwsError(f"espeak-ng data directory is missing ({exc}): {_FIX}") from None


@functools.cache
def _dialect_files() -> dict[str, str]:
    """English dialect code (e.g. 'en-gb-scotland') -> voice file name espeak-ng accepts."""
    lang_dir = Path(data_path()) / "lang" / "gmw"
    if not lang_dir.is_dir():
        raise KwsError(f"espeak-ng data has no English voices under {lang_dir}: {_FIX}")
    found: dict[str, str] = {}
    for path in sorted(lang_dir.iterdir()):
        if not path.name.lower().startswith("en") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        match = _LANGUAGE.search(text)
        code = (match.group(1) if match else path.name).lower()
        if code == "en-shaw":  # the Shavian alphabet, not an accent
            continue
        found[code] = path.name
    if not found:
        raise KwsError(f"espeak-ng data has no English voices under {lang_dir}: {_FIX}")
    return found


def list_english_dialects() -> list[str]:
    """English dialect codes the wheel provides, e.g. ['en-029', 'en-gb', ..., 'en-us-nyc']."""
    return sorted(_dialect_files())


@functools.cache
def _variants() -> dict[str, str]:
    variant_dir = Path(data_path()) / "voices" / "!v"
    if not variant_dir.is_dir():
        raise KwsError(f"espeak-ng data has no voice variants under {variant_dir}: {_FIX}")
    out: dict[str, str] = {}
    for path in sorted(variant_dir.iterdir(), key=lambda p: p.name):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        gender = _VARIANT_GENDER.search(text)
        pitch = _VARIANT_PITCH.search(text)
        if gender and gender.group(1).lower() in ("male", "female"):
            out[path.name] = gender.group(1).lower()
        elif pitch:  # most community variants do not say; their base pitch does
            out[path.name] = "female" if int(pitch.group(1)) >= 140 else "male"
        else:
            out[path.name] = "unknown"
    return out


def list_variants() -> dict[str, str]:
    """Voice variants of the wheel (name -> 'male' | 'female' | 'unknown'), sorted by name."""
    return dict(_variants())


def split_voice(voice: str) -> tuple[str, str | None]:
    """'en-us+f3' -> ('en-us', 'f3'); 'en-gb' -> ('en-gb', None)."""
    base, _, variant = voice.partition("+")
    return base, (variant or None)


def _espeak_voice_name(voice: str) -> str:
    base, variant = split_voice(voice)
    if not base:
        raise KwsError(f"espeak voice {voice!r} has no language part: use e.g. 'en-us+f3'")
    if variant is not None and variant not in _variants():
        raise KwsError(
            f"espeak voice variant {variant!r} does not exist in {data_path()}/voices/!v: "
            "pick one from kws_core.data.synth.espeak.list_variants()"
        )
    base = _dialect_files().get(base.lower(), base)
    return base if variant is None else f"{base}+{variant}"


def _clamp(value: int, limits: tuple[int, int]) -> int:
    return int(min(max(int(value), limits[0]), limits[1]))


def trim_silence(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading/trailing samples quieter than 40 dB below the peak (keeping 5 ms of edge)."""
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    threshold = max(peak * 10 ** (TRIM_REL_DB / 20), TRIM_ABS)
    loud = np.flatnonzero(np.abs(x) > threshold)
    if loud.size == 0:
        return x[:0]
    pad = int(round(TRIM_PAD_S * sample_rate))
    return x[max(loud[0] - pad, 0) : min(loud[-1] + pad + 1, x.size)]


@functools.cache
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    # The filter resample_poly designs by default (Kaiser, beta 5), built once instead of per call.
    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    taps.setflags(write=False)
    return taps


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (22050 -> 16000 Hz is up 320, down 441)."""
    if from_rate == to_rate or x.size == 0:
        return x.astype(np.float32, copy=False)
    g = math.gcd(int(from_rate), int(to_rate))
    up, down = to_rate // g, from_rate // g
    return resample_poly(x, up, down, window=_polyphase_filter(up, down)).astype(np.float32)


class EspeakEngine:
    """One private, freshly initialised copy of libespeak-ng.

    Each engine loads its own copy of the shared library, so its C globals are its own:
    two engines fed the same calls produce identical samples, whatever ran before.
    Calls on one engine are serialised by a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._voice: str | None = None
        self._params: tuple[int, int, int] | None = None
        self._lib = None
        data = data_path()
        self._lib, self._handle = self._load_private_copy()
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # keep a reference alive
        rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if rate <= 0:
            self._unload()
            raise KwsError(
                f"espeak-ng ({library_path()}) failed to initialise with data {data}: {_FIX}"
            )
        self.native_rate = int(rate)
        self._set_rand_seed = getattr(self._lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None
        self._lib.espeak_SetSynthCallback(self._callback)

    # -- loading ---------------------------------------------------------------------------
    @staticmethod
    def _load_private_copy() -> tuple[ctypes.CDLL, int]:
        src = library_path()
        if not os.path.isfile(src):
            raise KwsError(f"espeak-ng library not found at {src}: {_FIX}")
        errors = []
        for base in (tempfile.gettempdir(), str(Path.home() / ".cache" / "kws")):
            try:
                os.makedirs(base, exist_ok=True)
                fd, copy = tempfile.mkstemp(prefix="kws-espeak-", suffix=".so", dir=base)
                os.close(fd)
            except OSError as exc:
                errors.append(f"{base}: {exc}")
                continue
            try:
                shutil.copyfile(src, copy)
                lib = ctypes.CDLL(copy)
            except OSError as exc:
                errors.append(f"{copy}: {exc}")
                try:  # is the library itself broken, or only this folder (e.g. mounted noexec)?
                    ctypes.CDLL(src)
                except OSError as exc2:
                    raise KwsError(
                        f"cannot load the espeak-ng library {src} ({exc2}): {_FIX}"
                    ) from None
                continue
            finally:
                try:
                    os.unlink(copy)  # the mapping stays valid; nothing is left on disk
                except OSError:
                    pass
            _declare(lib)
            return lib, lib._handle
        raise KwsError(
            f"cannot load a private copy of the espeak-ng library {src} ({'; '.join(errors)}): "
            "set TMPDIR to a folder that allows executable files"
        )

    def _unload(self) -> None:
        lib, self._lib = self._lib, None
        if lib is None:
            return
        try:
            lib.espeak_Terminate()
        finally:
            try:
                _ctypes.dlclose(self._handle)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._unload()

    def __enter__(self) -> EspeakEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._unload()
        except Exception:
            pass

    # -- synthesis -------------------------------------------------------------------------
    def _on_samples(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        """Select e.g. 'en-us+f3' (dialect code from list_english_dialects(), '+variant')."""
        if self._lib is None:
            raise KwsError("espeak engine is closed: create a new EspeakEngine")
        if voice == self._voice:
            return
        name = _espeak_voice_name(voice)
        if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise KwsError(
                f"espeak-ng has no voice {voice!r}: use a dialect from list_english_dialects() "
                "plus an optional '+variant' from list_variants()"
            )
        self._voice = voice
        self._params = None

    def synth_raw(self, text: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        """int16 samples at `native_rate` for `text` in the current voice (no trimming)."""
        if not isinstance(text, str) or not _TEXT_OK.search(text):
            raise KwsError(f"nothing to synthesise in text {text!r}: pass a word or a sentence")
        with self._lock:
            if self._lib is None:
                raise KwsError("espeak engine is closed: create a new EspeakEngine")
            if self._voice is None:
                raise KwsError("no espeak voice selected: call set_voice('en-us+f3') first")
            params = (
                _clamp(rate, RATE_LIMITS),
                _clamp(pitch, PERCENT_LIMITS),
                _clamp(pitch_range, PERCENT_LIMITS),
            )
            if params != self._params:
                self._lib.espeak_SetParameter(PARAM_RATE, params[0], 0)
                self._lib.espeak_SetParameter(PARAM_PITCH, params[1], 0)
                self._lib.espeak_SetParameter(PARAM_RANGE, params[2], 0)
                self._params = params
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            _seed_libc_rand()
            if self._set_rand_seed is not None:  # espeak-ng seeds its own RNG from the clock
                self._set_rand_seed(RAND_SEED)
            err = self._lib.espeak_Synth(
                data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if err != 0:
            raise KwsError(f"espeak-ng failed to synthesise {text!r} (error {err}): {_FIX}")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def synthesize(
        self,
        text: str,
        voice: str,
        rate: int,
        pitch: int,
        pitch_range: int,
        sample_rate: int = 16000,
        trim: bool = True,
    ) -> np.ndarray:
        """float32 samples in -1..1 at `sample_rate`, leading/trailing silence trimmed."""
        self.set_voice(voice)
        raw = self.synth_raw(text, rate, pitch, pitch_range)
        x = raw.astype(np.float32) / np.float32(32768.0)
        if trim:
            x = trim_silence(x, self.native_rate)
        y = resample(x, self.native_rate, int(sample_rate))
        return np.clip(y, -1.0, 1.0).astype(np.float32, copy=False)

    def version(self) -> str:
        return (self._lib.espeak_Info(None) or b"?").decode()


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p


@functools.cache
def _libc_srand():
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError):  # pragma: no cover - not on glibc/musl
        return None


def _seed_libc_rand() -> None:
    # Klatt-based variants draw noise from libc rand(); reseed so each utterance is repeatable.
    srand = _libc_srand()
    if srand is not None:
        srand(RAND_SEED)


_default_engine: EspeakEngine | None = None
_default_pid: int | None = None
_default_lock = threading.Lock()


def default_engine() -> EspeakEngine:
    """The process-wide engine behind `synthesize()`, initialised once per process."""
    global _default_engine, _default_pid
    with _default_lock:
        if _default_engine is None or _default_pid != os.getpid():
            _default_engine = EspeakEngine()
            _default_pid = os.getpid()
        return _default_engine


def synthesize(
    text: str,
    voice: str,
    rate: int,
    pitch: int,
    pitch_range: int,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Speak `text` with espeak-ng; float32 in -1..1 at `sample_rate`, silence trimmed.

    voice: '<dialect>[+<variant>]', e.g. 'en-us+f3'; rate in words per minute (80..450);
    pitch and pitch_range 0..100. Uses the per-process engine, so repeated calls can differ by
    a few samples (espeak-ng carries state between utterances); use an `EspeakEngine` per
    reproducible sequence instead.
    """
    return default_engine().synthesize(text, voice, rate, pitch, pitch_range, sample_rate)
