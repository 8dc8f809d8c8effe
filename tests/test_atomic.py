import os
import stat

import pytest

from kws_core.infra.atomic import atomic_dir, atomic_write_text


def test_atomic_file_replaces_only_on_success_with_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("half")
            raise RuntimeError("crash")
    assert not (tmp_path / "d").exists()
    assert target.read_text() == "old"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp leftovers


def test_atomic_dir_swaps_whole_folder(tmp_path):
    with atomic_dir(tmp_path / "d") as d:
        (d / "a").write_text("1")
    with atomic_dir(tmp_path / "d") as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["b"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
