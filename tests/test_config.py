from pathlib import Path

import pytest
import yaml

from kws_core.config import LEAF_KEYS, Params, load_params
from kws_core.infra.errors import ConfigError
from kws_core.params_doc import iter_fields, render_params_table, render_params_yaml

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_holds_every_key_with_defaults():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) == {"data", "features", "augment", "train", "export", "stream", "checks"}
    assert load_params(REPO / "params.yaml").model_dump() == Params().model_dump()
    assert (REPO / "params.yaml").read_text() == render_params_yaml()


def test_tutorial_defaults():
    # The tutorial's numbers, with its MFCC front end from the tutorial profile (the default
    # front end is the speech embedding: test_default_model_is_the_speech_embedding).
    p = load_params(REPO / "params.yaml", profile=REPO / "profiles/tutorial.yaml")
    assert p.data.wanted_word_list == "yes no up down left right on off stop go".split()
    assert (p.data.silence_percentage, p.data.unknown_percentage) == (10, 10)
    assert (p.data.validation_percentage, p.data.testing_percentage) == (10, 10)
    assert (p.data.sample_rate, p.data.clip_duration_ms) == (16000, 1000)
    assert (p.features.window_size_ms, p.features.window_stride_ms) == (30, 10)
    assert (p.features.feature_bin_count, p.features.preprocess) == (40, "mfcc")
    assert (p.augment.background_volume, p.augment.background_frequency) == (0.1, 0.8)
    assert p.augment.time_shift_ms == 100
    assert (p.train.batch_size, p.train.eval_step_interval, p.train.save_step_interval) == (
        100,
        400,
        100,
    )


def test_default_model_is_the_speech_embedding():
    p = Params()
    assert (p.features.preprocess, p.train.model_architecture) == ("embedding", "embedding_mlp")
    assert p.train.feature_source == "cache" and p.train.balance_classes
    # streams score every embedding hop, so each embedding is computed once
    assert p.stream.clip_stride_ms % p.features.embedding_hop_ms == 0
    mfcc = load_params(REPO / "params.yaml", profile=REPO / "profiles/mfcc_cpu.yaml")
    assert (mfcc.features.preprocess, mfcc.train.model_architecture) == ("mfcc", "low_latency_conv")
    cnn = load_params(REPO / "params.yaml", profile=REPO / "profiles/cnn_cpu.yaml")
    assert (cnn.features.preprocess, cnn.train.model_architecture) == ("logmel", "low_latency_conv")
    assert cnn.train.specaugment_probability == 0.5 and cnn.train.feature_source == "cache"


def test_tutorial_profile_reproduces_the_tutorial():
    p = load_params(REPO / "params.yaml", profile=REPO / "profiles/tutorial.yaml")
    assert p.train.model_architecture == "conv" and p.train.optimizer == "gradient_descent"
    assert (p.train.steps, p.train.rates) == ([15000, 3000], [0.001, 0.0001])
    assert p.train.batch_size == 100 and p.train.dropout_rate == 0.5
    # everything outside train stays as in params.yaml
    assert p.data == load_params(REPO / "params.yaml").data


def test_profile_keys_are_checked(tmp_path):
    bad = tmp_path / "prof.yaml"
    bad.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="prof.yaml: unknown key 'train.learning_rat'"):
        load_params(REPO / "params.yaml", profile=bad)


def test_readme_table_lists_every_key():
    readme = (REPO / "README.md").read_text()
    assert render_params_table() in readme
    for key, _, _ in iter_fields():
        assert f"`{key}`" in readme


def test_flag_overrides_by_tutorial_names_and_dotted_paths():
    p = load_params(None, ["--wanted_words=yes,no", "--batch_size=7", "--check_nans=true"])
    assert p.data.wanted_word_list == ["yes", "no"]
    assert p.train.batch_size == 7 and p.train.check_nans is True
    p = load_params(None, ["--data.synthetic.speakers=3", "--how_many_training_steps=10,20"])
    assert p.data.synthetic.speakers == 3 and p.train.steps == [10, 20]
    assert load_params(None, ["--wanted_words=yes"]).data.wanted_word_list == ["yes"]


def test_yaml_yes_is_the_word(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("data:\n  wanted_words: yes\n")
    assert load_params(f).data.wanted_word_list == ["yes"]
    f.write_text("data:\n  wanted_words: [yes, no, up]\n")
    assert load_params(f).data.wanted_word_list == ["yes", "no", "up"]


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            "data:\n  wanted_wordz: yes\n",
            "unknown key 'data.wanted_wordz'; did you mean 'wanted_words'",
        ),
        ("colour: red\n", "unknown key 'colour'"),
        ("train:\n  batch_size: lots\n", "train.batch_size"),
        ("data:\n  validation_percentage: 120\n", "data.validation_percentage"),
        ("data:\n  testing_percentage: -1\n", "data.testing_percentage"),
        ("data:\n  validation_percentage: 60\n  testing_percentage: 50\n", "over 100"),
        ("train:\n  learning_rate: '0.1'\n", "how_many_training_steps has 2 entries"),
        ("train:\n  how_many_training_steps: 'ten'\n", "train.how_many_training_steps"),
        ("data: [1, 2]\n", "data must be a section"),
        ("data:\n  wanted_words: 'yes,_silence_'\n", "data.wanted_words"),
        ("features:\n  preprocess: fft\n", "features.preprocess"),
        ("data: {\n", "not valid YAML"),
    ],
)
def test_bad_params_file_is_one_line_naming_file_and_key(tmp_path, text, needle):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_params(f)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg and needle in msg


@pytest.mark.parametrize(
    "flag, needle",
    [
        ("--wanted_word=yes", "did you mean --wanted_words"),
        ("--batch_size=abc", "train.batch_size"),
        ("--learning_rate=0.1", "learning_rate has 1"),
        ("--silence_percentage=101", "silence_percentage"),
        ("--batch_size", "use --key=value"),
    ],
)
def test_bad_overrides(flag, needle):
    with pytest.raises(ConfigError, match=needle):
        load_params(None, [flag])


def test_leaf_names_are_unique_flags():
    flat = [k for k in LEAF_KEYS if "." not in k]
    assert len(flat) == len({LEAF_KEYS[k] for k in flat})
    assert "wanted_words" in flat and "how_many_training_steps" in flat


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_paths_resolve_relative_to_params_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data:\n  data_dir: d\n")
    p = load_params(f)
    assert p.resolve(p.data.data_dir) == tmp_path / "d"


def test_layout_resolves_every_output_from_the_params_folder(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "data:\n  manifest_dir: m\ntrain:\n  reports_dir: /abs/reports\nstream:\n  stream_dir: s\n"
    )
    p = load_params(tmp_path / "params.yaml")
    layout = p.layout
    assert layout.manifest == tmp_path / "m" / "manifest.parquet"
    assert layout.metrics == Path("/abs/reports/metrics.json")  # absolute stays as it is
    assert layout.stream_report == tmp_path / "s" / "report.json"
    assert layout.data_dir == tmp_path / "data" / "speech_commands"
    assert layout.export_dir == tmp_path / "results" / "frozen" / "model"
    p.train.reports_dir = "r2"  # params may change (overrides, comparisons): layout follows
    assert p.layout.metrics == tmp_path / "r2" / "metrics.json"
