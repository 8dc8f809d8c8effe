"""safe_extract_tar: faithful extraction, hostile archives refused before anything is written."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from kws_core.data import extract as extract_mod
from kws_core.data.extract import safe_extract_tar
from kws_core.infra.errors import DataError

SPEECH_FILES = {
    "yes/0a7c2a8d_nohash_0.wav": b"RIFF....WAVEfmt yes0",
    "yes/0a9f9af7_nohash_1.wav": b"RIFF....WAVEfmt yes1",
    "no/0b09edd3_nohash_0.wav": b"RIFF....WAVEfmt no0",
    "_background_noise_/white_noise.wav": b"RIFF....WAVEfmt noise",
    "_background_noise_/README.md": b"background noise\n",
    "validation_list.txt": b"yes/0a9f9af7_nohash_1.wav\n",
    "testing_list.txt": b"no/0b09edd3_nohash_0.wav\n",
}


def file_entry(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def dir_entry(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def link_entry(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def special_entry(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def make_tar(path: Path, entries, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def speech_entries(prefix: str = ""):
    dirs = sorted({f"{prefix}{name.split('/')[0]}" for name in SPEECH_FILES if "/" in name})
    return [dir_entry(d) for d in dirs] + [
        file_entry(prefix + name, data) for name, data in SPEECH_FILES.items()
    ]


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def work(tmp_path):
    """A scratch area: archives/ for inputs, data/ as the parent of dest, outside/ as a canary."""
    for name in ("archives", "data", "outside"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "canary.txt").write_text("untouched")
    return tmp_path


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w"), (".tar.bz2", "w:bz2")],
)
def test_happy_path(work, suffix, mode):
    archive = make_tar(work / "archives" / f"sc{suffix}", speech_entries(), mode)
    dest = work / "data" / "speech"
    assert safe_extract_tar(archive, dest, progress=True) == dest
    for name, data in SPEECH_FILES.items():
        assert (dest / name).read_bytes() == data
    assert listing(work / "data") == {"speech"} | {f"speech/{p}" for p in listing(dest)}
    assert {p.name for p in (work / "data").iterdir()} == {"speech"}  # no temp dirs left


def test_single_top_level_folder_is_kept_as_is(work):
    archive = make_tar(work / "archives" / "sc.tar.gz", speech_entries("speech_commands_v0.02/"))
    dest = work / "data" / "speech"
    safe_extract_tar(archive, dest, progress=False)
    assert [p.name for p in dest.iterdir()] == ["speech_commands_v0.02"]
    assert (dest / "speech_commands_v0.02" / "yes" / "0a7c2a8d_nohash_0.wav").is_file()
    assert not (dest / "yes").exists()


def test_dot_slash_names_and_internal_links_are_allowed(work):
    entries = [
        dir_entry("./"),
        *speech_entries("./"),
        link_entry("./yes/alias.wav", "0a7c2a8d_nohash_0.wav", tarfile.SYMTYPE),
        link_entry("./no/hard.wav", "./yes/0a7c2a8d_nohash_0.wav", tarfile.LNKTYPE),
        link_entry("./no/up.wav", "../yes/0a9f9af7_nohash_1.wav", tarfile.SYMTYPE),
    ]
    archive = make_tar(work / "archives" / "sc.tar.gz", entries)
    dest = work / "data" / "speech"
    safe_extract_tar(archive, dest, progress=False)
    assert (dest / "yes" / "alias.wav").is_symlink()
    assert (dest / "yes" / "alias.wav").read_bytes() == SPEECH_FILES["yes/0a7c2a8d_nohash_0.wav"]
    assert (dest / "no" / "hard.wav").read_bytes() == SPEECH_FILES["yes/0a7c2a8d_nohash_0.wav"]
    assert (dest / "no" / "up.wav").read_bytes() == SPEECH_FILES["yes/0a9f9af7_nohash_1.wav"]


def test_extraction_uses_data_filter(work, monkeypatch):
    seen = []
    real = tarfile.TarFile.extractall

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("filter"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", spy)
    archive = make_tar(work / "archives" / "sc.tar.gz", speech_entries())
    safe_extract_tar(archive, work / "data" / "speech", progress=False)
    assert seen == ["data"]


HOSTILE = {
    "absolute-path": ([file_entry("/tmp/kws_evil_abs.txt")], "/tmp/kws_evil_abs.txt"),
    "dotdot": ([file_entry("../outside/evil.txt")], "../outside/evil.txt"),
    "nested-dotdot": ([file_entry("yes/../../outside/evil.txt")], "yes/../../outside/evil.txt"),
    "symlink-etc-passwd": (
        [link_entry("yes/passwd", "/etc/passwd", tarfile.SYMTYPE)],
        "yes/passwd",
    ),
    "symlink-relative-outside": (
        [link_entry("yes/out", "../../outside/canary.txt", tarfile.SYMTYPE)],
        "yes/out",
    ),
    "symlink-chain-outside": (
        [
            link_entry("b", ".", tarfile.SYMTYPE),
            link_entry("a", "b/../outside/canary.txt", tarfile.SYMTYPE),
        ],
        "'a'",
    ),
    # deep/s -> .. is the root (inside); deep/s/t -> ../x looks like deep/x but is really ../x.
    "symlink-below-symlinked-dir": (
        [
            dir_entry("deep"),
            link_entry("deep/s", "..", tarfile.SYMTYPE),
            link_entry("deep/s/t", "../outside/canary.txt", tarfile.SYMTYPE),
        ],
        "deep/s/t",
    ),
    "file-below-symlinked-dir": (
        [link_entry("deep", "yes", tarfile.SYMTYPE), file_entry("deep/evil.txt")],
        "deep/evil.txt",
    ),
    "hardlink-outside": (
        [link_entry("yes/hard", "../outside/canary.txt", tarfile.LNKTYPE)],
        "yes/hard",
    ),
    "hardlink-absolute": (
        [link_entry("yes/hard", "/etc/passwd", tarfile.LNKTYPE)],
        "yes/hard",
    ),
    "character-device": ([special_entry("yes/null", tarfile.CHRTYPE)], "yes/null"),
    "block-device": ([special_entry("yes/disk", tarfile.BLKTYPE)], "yes/disk"),
    "fifo": ([special_entry("yes/pipe", tarfile.FIFOTYPE)], "yes/pipe"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_archive_is_refused_before_writing(work, monkeypatch, case):
    bad_entries, offender = HOSTILE[case]
    # Benign members come first: a checker that extracted as it went would write them.
    archive = make_tar(work / "archives" / "evil.tar.gz", speech_entries() + bad_entries)
    extract_calls = []
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: extract_calls.append(a))
    monkeypatch.setattr(tarfile.TarFile, "extract", lambda *a, **k: extract_calls.append(a))
    dest = work / "data" / "speech"
    before = listing(work)

    with pytest.raises(DataError) as info:
        safe_extract_tar(archive, dest, progress=False)

    assert "evil.tar.gz" in str(info.value) and offender in str(info.value)
    assert extract_calls == []
    assert not dest.exists()
    assert listing(work) == before
    assert (work / "outside" / "canary.txt").read_text() == "untouched"
    assert not Path("/tmp/kws_evil_abs.txt").exists()


def test_data_filter_is_a_second_layer(work, monkeypatch):
    """With the member check switched off, tarfile's data filter still refuses the archive."""
    monkeypatch.setattr(extract_mod, "check_members", lambda archive, members: None)
    entries = speech_entries() + [link_entry("yes/passwd", "/etc/passwd", tarfile.SYMTYPE)]
    archive = make_tar(work / "archives" / "evil.tar.gz", entries)
    dest = work / "data" / "speech"
    with pytest.raises(DataError, match="yes/passwd"):
        safe_extract_tar(archive, dest, progress=False)
    assert not dest.exists()
    assert list((work / "data").iterdir()) == []


def _valid_tgz_bytes(tmp: Path) -> bytes:
    big = [file_entry(f"yes/{i}.wav", os.urandom(20_000)) for i in range(5)]
    return make_tar(tmp / "valid.tar.gz", speech_entries() + big).read_bytes()


@pytest.mark.parametrize("kind", ["random-bytes", "truncated-gzip", "empty", "text"])
def test_corrupt_archive_is_data_error(work, kind):
    archive = work / "archives" / "bad.tar.gz"
    content = {
        "random-bytes": lambda: os.urandom(4096),
        "truncated-gzip": lambda: _valid_tgz_bytes(work)[:30_000],
        "empty": lambda: b"",
        "text": lambda: b"<html>404 Not Found</html>\n",
    }[kind]()
    archive.write_bytes(content)
    dest = work / "data" / "speech"
    with pytest.raises(DataError, match="bad.tar.gz"):
        safe_extract_tar(archive, dest, progress=False)
    assert not dest.exists()
    assert list((work / "data").iterdir()) == []


def test_missing_archive_is_data_error(work):
    with pytest.raises(DataError, match="does not exist"):
        safe_extract_tar(work / "archives" / "nope.tar.gz", work / "data" / "x", progress=False)


def _interrupt_after(monkeypatch, n_files: int) -> list[str]:
    written: list[str] = []
    real = tarfile.TarFile.makefile

    def makefile(self, tarinfo, targetpath):
        if len(written) == n_files:
            raise KeyboardInterrupt
        written.append(tarinfo.name)
        return real(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", makefile)
    return written


def test_interrupted_extraction_leaves_nothing(work, monkeypatch):
    archive = make_tar(work / "archives" / "sc.tar.gz", speech_entries())
    written = _interrupt_after(monkeypatch, 2)
    dest = work / "data" / "speech"
    with pytest.raises(KeyboardInterrupt):
        safe_extract_tar(archive, dest, progress=False)
    assert len(written) == 2  # it really was interrupted mid-way
    assert not dest.exists()
    assert list((work / "data").iterdir()) == []


def test_interrupted_extraction_keeps_previous_folder(work, monkeypatch):
    archive = make_tar(work / "archives" / "sc.tar.gz", speech_entries())
    dest = work / "data" / "speech"
    dest.mkdir()
    (dest / "old.txt").write_text("previous complete set")
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        safe_extract_tar(archive, dest, progress=False)
    assert listing(dest) == {"old.txt"}
    assert [p.name for p in (work / "data").iterdir()] == ["speech"]


def test_before_commit_runs_inside_temp_dir(work):
    archive = make_tar(work / "archives" / "sc.tar.gz", speech_entries())
    dest = work / "data" / "speech"
    seen = []

    def hook(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp != dest and tmp.parent == dest.parent and not dest.exists()
        assert (tmp / "yes" / "0a7c2a8d_nohash_0.wav").is_file()
        (tmp / "marker").write_text("done")

    safe_extract_tar(archive, dest, progress=False, before_commit=hook)
    assert len(seen) == 1
    assert (dest / "marker").read_text() == "done"
