"""Bad params: every key with a wrong type and an out-of-range value, and broken params files.

Each must be one ConfigError line naming the key (or the file), before any work starts; through
the CLI, exit 2 with that one line on stderr and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kws_core.cli import main
from kws_core.config import LEAF_KEYS, Params, load_params
from kws_core.infra.errors import ConfigError


def _leaves(model: type[BaseModel] = Params, prefix: tuple[str, ...] = ()):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, (*prefix, name))
        else:
            yield (*prefix, name), field


LEAVES: dict[str, tuple[tuple[str, ...], FieldInfo]] = {
    ".".join(loc): (loc, field) for loc, field in _leaves()
}
NUMERIC = {k for k, (_, f) in LEAVES.items() if f.annotation in (int, float)}
FLOATS = sorted(k for k, (_, f) in LEAVES.items() if f.annotation is float)


def _nested(loc: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(loc):
        out = {part: out}
    return out


def _wrong_type(field: FieldInfo) -> Any:
    """A value of the wrong type for the field."""
    ann = field.annotation
    if ann in (int, float):
        return "not-a-number"
    if ann is bool:
        return "maybe"
    if typing.get_origin(ann) is typing.Literal:
        return 12345
    assert ann is str, ann
    return {"a": "mapping"}  # any scalar is a fine string in YAML, a mapping is not


def _out_of_range(field: FieldInfo) -> list[Any]:
    """One value past each numeric bound of the field."""
    values = []
    for bound in field.metadata:
        if isinstance(bound, at.Ge):
            values.append(bound.ge - 1)
        elif isinstance(bound, at.Gt):
            values.append(bound.gt)
        elif isinstance(bound, at.Le):
            values.append(bound.le + 1)
        elif isinstance(bound, at.Lt):
            values.append(bound.lt)
    return values


RANGE_CASES = [(k, v) for k, (_, f) in LEAVES.items() for v in _out_of_range(f)]


def _load_file(tmp_path: Path, body: Any) -> str:
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as info:
        load_params(f)
    msg = str(info.value)
    assert "\n" not in msg and str(f) in msg, msg
    return msg


@pytest.mark.timeout(120)
def test_every_leaf_key_is_covered():
    flags = {k for k in LEAF_KEYS if "." not in k}
    assert {loc[-1] for loc, _ in LEAVES.values()} == flags
    assert len(LEAVES) == len(flags) > 60
    # every bounded key gets an out-of-range case
    assert {k for k, _ in RANGE_CASES} == {k for k, (_, f) in LEAVES.items() if f.metadata}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", list(LEAVES))
def test_wrong_type_in_params_file_names_the_key(tmp_path, key):
    loc, field = LEAVES[key]
    msg = _load_file(tmp_path, _nested(loc, _wrong_type(field)))
    assert f"{key}: " in msg


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", [k for k, (_, f) in LEAVES.items() if f.annotation is not str])
def test_wrong_type_as_flag_names_the_key(key):
    # str keys are left out: a flag's text is always a valid string (their content is checked by
    # the key's own validator, e.g. how_many_training_steps, or where it is used).
    loc, field = LEAVES[key]
    value = _wrong_type(field)
    text = "not-a-choice" if isinstance(value, int) else value  # Literal: a word not allowed
    with pytest.raises(ConfigError) as info:
        load_params(None, [f"--{loc[-1]}={text}"])
    assert f"{key}: " in str(info.value) and "\n" not in str(info.value)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("key", "value"), RANGE_CASES, ids=[f"{k}={v}" for k, v in RANGE_CASES])
def test_out_of_range_names_the_key_and_value(tmp_path, key, value):
    loc, _ = LEAVES[key]
    msg = _load_file(tmp_path, _nested(loc, value))
    assert f"{key}: " in msg and f"(got {value!r})" in msg
    with pytest.raises(ConfigError, match=f"{key}: .*got {value!r}"):
        load_params(None, [f"--{loc[-1]}={value}"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_are_refused(key, text):
    # `stream_duration_s: .inf` passes `gt=0` and would then never finish.
    loc, _ = LEAVES[key]
    with pytest.raises(ConfigError, match=f"{key}: Input should be a finite number"):
        load_params(None, [f"--{loc[-1]}={text}"])


# Keys whose numbers need no lower bound: a seed that is only hashed may be any integer.
UNBOUNDED_OK = {"data.synthetic.synthetic_seed"}
# Shares in percent and in [0, 1]: above 100 % or 1 they mean nothing.
PERCENT = {k for k in NUMERIC if k.endswith("_percentage") or k == "data.partition_tolerance"}
UNIT = {
    "data.duration_mostly",
    "augment.background_volume",
    "augment.background_frequency",
    "train.dropout_rate",
    "stream.detection_threshold",
    "stream.stream_unknown_fraction",
    "checks.warn_test_accuracy",
    "checks.fail_test_accuracy",
    "checks.warn_false_reject_rate",
    "checks.fail_false_reject_rate",
}


def _bounds(key: str) -> tuple[float | None, float | None]:
    lower = upper = None
    for b in LEAVES[key][1].metadata:
        lower = getattr(b, "ge", getattr(b, "gt", lower))
        upper = getattr(b, "le", getattr(b, "lt", upper))
    return lower, upper


@pytest.mark.timeout(120)
def test_every_count_size_and_share_is_bounded():
    """A new numeric key without bounds fails here until it gets them (or a reason above)."""
    unbounded = sorted(k for k in NUMERIC - UNBOUNDED_OK if _bounds(k)[0] is None)
    assert unbounded == []
    assert len(PERCENT) == 5 and UNIT <= NUMERIC
    assert {k: _bounds(k) for k in PERCENT} == {k: (0, 100) for k in PERCENT}
    assert {k: _bounds(k) for k in UNIT} == {k: (0, 1) for k in UNIT}
    # seeds reach np.random.seed / default_rng, which refuse negative (or 33-bit) seeds
    assert _bounds("train.seed") == (0, 2**32 - 1) and _bounds("stream.stream_seed")[0] == 0


# ------------------------------------------------------------------------- broken params files
def _laughs() -> str:
    """A YAML "billion laughs": 10**9 strings through nested aliases, a few hundred bytes."""
    levels = ["&a [" + ", ".join(['"lol"'] * 10) + "]"]
    names = "abcdefghi"
    for prev, name in zip(names, names[1:], strict=False):
        levels.append(f"&{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "[" + ", ".join(levels) + "]"


BROKEN_FILES: dict[str, tuple[bytes, str]] = {
    "yaml-syntax-error": (b"data: {\n  wanted_words: yes\n", "line 3 is not valid YAML"),
    "tab-indent": (b"data:\n\twanted_words: yes\n", "line 2 is not valid YAML"),
    "unknown-key": (
        b"train:\n  batch_sise: 10\n",
        "unknown key 'train.batch_sise'; did you mean 'batch_size'?",
    ),
    "unknown-section": (
        b"trian:\n  batch_size: 10\n",
        "unknown key 'trian'; did you mean 'train'?",
    ),
    "top-level-list": (b"- data\n- train\n", "top level must be a mapping of sections"),
    "top-level-scalar": (b"just some text\n", "top level must be a mapping of sections"),
    "section-is-scalar": (b"train: 5\n", "train must be a section"),
    "python-tag": (b"train: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    "binary": (bytes(range(256)) * 4, "not UTF-8 text"),
    "deep-nesting": (b"data: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
    "laughs-in-int-key": (
        f"train:\n  batch_size: {_laughs()}\n".encode(),
        "train.batch_size: Input should be a valid integer",
    ),
    "laughs-in-str-key": (
        f"data:\n  data_dir: {_laughs()}\n".encode(),
        "data.data_dir: Input should be a valid string",
    ),
    "laughs-in-word-list": (
        f"data:\n  wanted_words: {_laughs()}\n".encode(),
        "data.wanted_words: must be a list of words",
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_params_file_is_one_line_naming_the_file(tmp_path, case):
    text, needle = BROKEN_FILES[case]
    f = tmp_path / "params.yaml"
    f.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        load_params(f)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(f)) and needle in msg, msg
    assert len(msg) < 400  # a bad value is shown in short, never expanded


@pytest.mark.timeout(120)
def test_params_path_that_is_a_folder_or_a_broken_profile(tmp_path):
    folder = tmp_path / "params.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"params.yaml: cannot read the params file \(Is a dir"):
        load_params(folder)
    profile = tmp_path / "profile.yaml"
    profile.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="profile.yaml: top level must be a mapping"):
        load_params(None, profile=profile)


@pytest.mark.timeout(120)
def test_deeply_nested_flag_value_is_a_config_error():
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_params(None, ["--batch_size=" + "[" * 20000 + "]" * 20000])


# ------------------------------------------------------------------------- through the CLI
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["validate", "--speakers=-3"], "data.synthetic.speakers"),
        (["train", "--check_nans=maybe"], "train.check_nans"),
        (["dataset", "--max_extract_mb=0"], "data.max_extract_mb"),
    ],
)
def test_cli_bad_flag_exits_2_with_one_line(tmp_path, argv, needle):
    (tmp_path / "params.yaml").write_text("{}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kws_core.cli", *argv, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=100,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"kws {argv[0]}: error: "), lines
    assert needle in lines[0] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no work started


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["yaml-syntax-error", "unknown-key", "top-level-list", "binary"])
def test_cli_broken_params_file_exits_2_with_one_line(tmp_path, capsys, case):
    text, needle = BROKEN_FILES[case]
    params = tmp_path / "params.yaml"
    params.write_bytes(text)
    capsys.readouterr()
    assert main(["manifest", "--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kws manifest: error: ") and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
