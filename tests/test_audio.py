import os
import struct

import numpy as np
import pytest
import soundfile as sf

from kws_core.infra.wav import WavError, inspect_wav, read_wav, write_wav


def good(tmp_path, n=16000):
    p = tmp_path / "ok.wav"
    write_wav(p, 0.5 * np.sin(np.linspace(0, 200, n)), 16000)
    return p


def test_good_clip(tmp_path):
    info = inspect_wav(good(tmp_path), 16000)
    assert (info.sample_rate, info.channels, info.bits, info.num_samples) == (16000, 1, 16, 16000)
    assert info.duration_ms == 1000.0
    assert 0.49 < info.peak <= 0.5 and 0.3 < info.rms < 0.4
    assert len(info.sha1) == 40
    x = read_wav(good(tmp_path), 16000)
    assert x.shape == (16000,) and x.dtype == np.float32


def test_sha1_ignores_header_metadata(tmp_path):
    p = good(tmp_path)
    data = p.read_bytes()
    # Insert a LIST chunk before the data chunk: same audio, different file bytes.
    fmt_end = 12 + 8 + 16
    extra = b"LIST" + struct.pack("<I", 4) + b"INFO"
    q = tmp_path / "meta.wav"
    body = data[12:fmt_end] + extra + data[fmt_end:]
    q.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    assert inspect_wav(q, 16000).sha1 == inspect_wav(p, 16000).sha1


def _sf(tmp_path, name, data, rate=16000, subtype="PCM_16"):
    p = tmp_path / name
    sf.write(p, data, rate, subtype=subtype, format="WAV")
    return p


BAD = {
    "truncated": "truncated WAV",
    "corrupt_header": "corrupt WAV",
    "rate_8k": "sample rate 8000 Hz, expected 16000",
    "stereo": "2 channels, expected mono",
    "u8": "8-bit PCM, expected 16-bit",
    "pcm24": "24-bit PCM, expected 16-bit",
    "float": "32-bit float samples, expected 16-bit PCM",
    "empty_file": "empty file",
    "no_samples": "empty WAV (0 samples)",
    "text": "not a WAV file",
}


def make_bad(tmp_path, kind):
    x = 0.1 * np.ones(16000)
    if kind == "truncated":
        p = good(tmp_path)
        p.write_bytes(p.read_bytes()[:20000])
        return p
    if kind == "corrupt_header":
        p = good(tmp_path)
        data = bytearray(p.read_bytes())
        data[12:16] = b"junk"  # fmt chunk renamed: no fmt before data
        p.write_bytes(bytes(data))
        return p
    if kind == "rate_8k":
        return _sf(tmp_path, "r.wav", x[:8000], rate=8000)
    if kind == "stereo":
        return _sf(tmp_path, "s.wav", np.stack([x, x], axis=1))
    if kind == "u8":
        return _sf(tmp_path, "u8.wav", x, subtype="PCM_U8")
    if kind == "pcm24":
        return _sf(tmp_path, "p24.wav", x, subtype="PCM_24")
    if kind == "float":
        return _sf(tmp_path, "f.wav", x, subtype="FLOAT")
    if kind == "empty_file":
        p = tmp_path / "e.wav"
        p.write_bytes(b"")
        return p
    if kind == "no_samples":
        p = tmp_path / "z.wav"
        write_wav(p, np.zeros(0), 16000)
        return p
    if kind == "text":
        p = tmp_path / "t.wav"
        p.write_text("hello, I am not audio\n")
        return p
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_kind_of_bad_wav_has_a_plain_reason(tmp_path, kind):
    with pytest.raises(WavError) as e:
        inspect_wav(make_bad(tmp_path, kind), 16000)
    assert BAD[kind] in str(e.value)


def test_write_wav_is_16_bit_mono_and_clips(tmp_path):
    p = tmp_path / "c.wav"
    write_wav(p, np.array([2.0, -2.0, 0.0]), 16000)
    data, rate = sf.read(p, dtype="int16")
    assert rate == 16000 and list(data) == [32767, -32768, 0]
    assert sf.info(p).subtype == "PCM_16"


@pytest.mark.parametrize("kind", sorted(set(BAD) - {"no_samples"}))
def test_read_wav_refuses_what_inspect_refuses(tmp_path, kind):
    # Read as 16-bit PCM anyway, a stereo or float file would come out as noise.
    with pytest.raises(WavError, match=BAD[kind].split(",")[0]):
        read_wav(make_bad(tmp_path, kind), 16000)


def test_special_files_are_wav_errors_not_hangs(tmp_path):
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    for p in (fifo, tmp_path / "zero.wav", tmp_path):
        with pytest.raises(WavError, match="not a regular file"):
            inspect_wav(p, 16000)
    with pytest.raises(WavError, match="unreadable"):
        inspect_wav(tmp_path / "missing.wav", 16000)
