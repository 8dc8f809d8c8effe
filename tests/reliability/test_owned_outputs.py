"""Outputs are owned: every output folder of every command, pointed at a user's folder, at the
data or inside it, at a folder holding the data, or at another stage's output, is refused in
one line naming the key, and no byte of the user's files changes.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
import yaml

from kws_core.cli import main
from kws_core.infra.errors import ConfigError
from kws_core.infra.ownership import MARKER, claim_folder
from tests.conftest import build_tiny_dataset, with_fast_model

# key -> the command that writes it (the flag is the key's leaf name)
WRITERS = {
    "data.manifest_dir": "manifest",
    "features.cache_dir": "features",
    "train.train_dir": "train",
    "train.summaries_dir": "train",
    "train.reports_dir": "train",
    "export.output_file": "freeze",
    "stream.stream_dir": "stream-eval",
}
TARGETS = {
    "a-user-folder": "precious",
    "the-data": "data",
    "inside-the-data": "data/yes",
    "a-folder-holding-the-data": ".",
    "another-stage-output": "OTHER",
}


@pytest.fixture(scope="module")
def area(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("owned")
    build_tiny_dataset(root / "data", ["yes", "no"], 4)
    (root / "precious").mkdir()
    (root / "precious" / "thesis.txt").write_text("do not delete")
    (root / "precious" / ".notes.tmp").write_text("a hidden file a sweep would take")
    body = {"data": {"data_url": "", "data_dir": "data", "wanted_words": "yes,no"}}
    (root / "params.yaml").write_text(yaml.safe_dump(with_fast_model(body)))
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "results" not in p.parts and p.name != "params.yaml"
    }


@pytest.mark.parametrize(("key", "target"), list(itertools.product(WRITERS, TARGETS)))
def test_every_output_folder_refuses_what_kws_did_not_make(area, capsys, key, target):
    value = TARGETS[target]
    if value == "OTHER":  # the train_dir of the default layout, or for train_dir the manifest
        value = "results/manifest" if key == "train.train_dir" else "results/speech_commands_train"
    before = snapshot(area)
    capsys.readouterr()
    flag = f"--{key.split('.')[1]}={area / value}"
    rc = main([WRITERS[key], "--params", str(area / "params.yaml"), "--no-progress", flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith(f"kws {WRITERS[key]}: error: "), err
    assert key in err[0] or (target == "another-stage-output"), err[0]
    assert snapshot(area) == before


def test_a_new_folder_is_marked_and_an_earlier_kws_folder_is_accepted(tmp_path):
    claim_folder(tmp_path / "new", "train.train_dir")
    assert (tmp_path / "new" / MARKER).is_file()
    claim_folder(tmp_path / "new", "train.train_dir")  # marked: accepted again
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint_state.json").write_text("{}")
    claim_folder(tmp_path / "old", "train.train_dir", ("checkpoint_state.json",))
    assert (tmp_path / "old" / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    claim_folder(tmp_path / "empty", "train.train_dir")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"train.train_dir: .*mine holds files kws did not"):
        claim_folder(tmp_path / "mine", "train.train_dir", ("checkpoint_state.json",))
    assert not (tmp_path / "mine" / MARKER).exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        claim_folder(tmp_path / "afile", "train.train_dir")
