import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from kws_core.config import load_params
from kws_core.features.front_end import FeatureSpec
from kws_core.features.spectrogram import load_any_wav, spectrogram_db, wav_to_spectrogram
from kws_core.infra.errors import DataError

SPEC = FeatureSpec.from_params(load_params(None))


def tone(freq, rate=16000, seconds=1.0, start=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * (t >= start)).astype(np.float32)


def test_tone_lands_at_its_frequency_and_time():
    times, freqs, db = spectrogram_db(tone(1000), 16000, 30, 10)
    assert len(times) == 98 and freqs[-1] == 8000
    late = db[:, times > 0.6].mean(axis=1)
    assert abs(freqs[np.argmax(late)] - 1000) < 40  # frequency bottom to top, peak at 1 kHz
    assert db[:, times < 0.4].max() < late.max() - 60  # silence before the burst


def test_png_and_notes_for_stereo_44k_long_file(tmp_path):
    x = tone(1000, rate=44100, seconds=1.5)
    wav = tmp_path / "stereo.wav"
    sf.write(wav, np.stack([x, x], axis=1), 44100, subtype="PCM_24")
    loaded = load_any_wav(wav, 16000)
    assert len(loaded.samples) == 24000
    notes = wav_to_spectrogram(wav, tmp_path / "out.png", SPEC)
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"
    text = " ".join(notes)
    assert "down-mixed 2 channels" in text and "resampled 44100 Hz to 16000 Hz" in text
    assert "first 1000 ms" in text


def test_never_overwrites_a_file_that_is_not_its_own_png(tmp_path):
    wav = tmp_path / "clip.wav"
    sf.write(wav, tone(1000), 16000, subtype="PCM_16")
    before = wav.read_bytes()
    with pytest.raises(DataError, match="is the input WAV"):
        wav_to_spectrogram(wav, wav, SPEC)
    other = tmp_path / "other.wav"
    other.write_bytes(before)
    with pytest.raises(DataError, match="is not a PNG"):
        wav_to_spectrogram(wav, other, SPEC)
    assert wav.read_bytes() == before and other.read_bytes() == before
    png = tmp_path / "out.png"
    wav_to_spectrogram(wav, png, SPEC)
    wav_to_spectrogram(wav, png, SPEC)  # its own picture: drawn again
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(DataError, match="not a readable WAV"):
        load_any_wav(bad, 16000)
    with pytest.raises(DataError, match="no such file"):
        load_any_wav(tmp_path / "missing.wav", 16000)
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kws_core.cli",
            "wav-to-spectrogram",
            "--input_wav",
            str(bad),
            "--output_png",
            str(tmp_path / "x.png"),
            "--params",
            str(params),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.wav: not a readable WAV" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
