"""The pipeline's stages in one table: one row per step, named the same way everywhere.

Each row says what the step is called as a `kws` verb, a DVC stage and a Dagster asset (or asset
check), which `kws_core.steps` function runs it, which stages it reads, which params sections
and code decide its outputs, and where its tests are. `kws run-all` runs the table in order; tests
check that `dvc.yaml`, the CLI and the Dagster definitions agree with it; the README's code map
is rendered from it (`python -m kws_core.stages readme`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # the DVC stage
    verb: str  # the `kws` verb (the tutorial's names where it has one)
    dagster: str  # the Dagster asset, or "asset:check" for an asset check
    step: str  # the kws_core.steps function
    summary: str
    upstream: tuple[str, ...]  # stages whose outputs it reads (DVC deps)
    params: tuple[str, ...]  # params.yaml sections / keys that decide its outputs
    code: tuple[str, ...]  # the kws_core code it runs (DVC deps: editing it re-runs the stage)
    tests: tuple[str, ...]

    @property
    def asset(self) -> str:
        """The Dagster asset the stage materialises (or checks)."""
        return self.dagster.split(":")[0]

    @property
    def is_check(self) -> bool:
        return ":" in self.dagster


STAGES: tuple[Stage, ...] = (
    Stage(
        "dataset",
        "dataset",
        "raw_dataset",
        "dataset_step",
        "clips in the Speech Commands layout: synthesised, downloaded and extracted, or as is",
        (),
        (
            "data.data_url",
            "data.data_sha256",
            "data.sample_rate",
            "data.clip_duration_ms",
            "data.synthetic",
        ),
        (
            "kws_core/data/prepare.py",
            "kws_core/data/synth",
            "kws_core/data/fetch.py",
            "kws_core/data/download.py",
            "kws_core/data/extract.py",
        ),
        (
            "tests/test_raw_dataset.py",
            "tests/test_synth.py",
            "tests/test_fetch.py",
            "tests/test_extract.py",
        ),
    ),
    Stage(
        "manifest",
        "manifest",
        "partition_manifest",
        "manifest_step",
        "every clip with its label and partition, the rejected clips, the summary",
        ("dataset",),
        (
            "data.wanted_words",
            "data.silence_percentage",
            "data.unknown_percentage",
            "data.validation_percentage",
            "data.testing_percentage",
            "data.sample_rate",
            "data.clip_duration_ms",
            "data.duration_tolerance_ms",
            "data.sources",
        ),
        ("kws_core/data/manifest.py", "kws_core/data/partition.py", "kws_core/data/labels.py"),
        ("tests/test_manifest.py", "tests/test_sources.py"),
    ),
    Stage(
        "validate",
        "validate",
        "partition_manifest:manifest_expectations",
        "validate_step",
        "the Great Expectations suite on the manifest",
        ("manifest",),
        (
            "data.wanted_words",
            "data.duration_tolerance_ms",
            "data.duration_mostly",
            "data.partition_tolerance",
        ),
        ("kws_core/data/validate.py",),
        ("tests/test_quality.py",),
    ),
    Stage(
        "features",
        "features",
        "augmented_features",
        "features_step",
        "the augmented feature cache training reads",
        ("dataset", "manifest"),
        ("data.wanted_words", "features", "augment", "train.seed"),
        ("kws_core/features",),
        (
            "tests/test_features.py",
            "tests/test_feature_cache.py",
            "tests/test_recording.py",
            "tests/test_speech_embedding.py",
        ),
    ),
    Stage(
        "train",
        "train",
        "trained_model",
        "train_step",
        "checkpoints, logs, metrics and the confusion matrix of each architecture",
        ("dataset", "manifest", "features"),
        ("data.wanted_words", "features", "augment", "train"),
        ("kws_core/training",),
        ("tests/test_train.py", "tests/test_models.py", "tests/test_compare.py"),
    ),
    Stage(
        "freeze",
        "freeze",
        "frozen_graph",
        "freeze_step",
        "the champion as SavedModel, TFLite float and int8",
        ("train", "manifest"),
        ("export", "train.model_architecture", "train.architectures"),
        ("kws_core/export",),
        ("tests/test_export.py", "tests/test_label_wav.py"),
    ),
    Stage(
        "streams",
        "generate-streaming-test-wav",
        "test_streams",
        "streams_step",
        "a keyword stream and a negative-only stream with their labels",
        ("dataset", "manifest"),
        (
            "data.wanted_words",
            "augment.background_volume",
            "stream.stream_duration_s",
            "stream.negative_duration_s",
            "stream.word_gap_ms",
            "stream.stream_unknown_fraction",
            "stream.stream_seed",
            "stream.words_dir",
            "stream.noise_dir",
        ),
        ("kws_core/streaming/generate.py",),
        ("tests/test_stream_generate.py",),
    ),
    Stage(
        "stream_eval",
        "stream-eval",
        "streaming_eval_report",
        "stream_eval_step",
        "accuracy, false accepts per hour and the DET curve on both streams",
        ("freeze", "streams"),
        ("stream",),
        ("kws_core/streaming",),
        ("tests/test_stream_report.py", "tests/test_stream_score.py", "tests/test_recognize.py"),
    ),
)


def direct_upstream(s: Stage) -> set[str]:
    """`s.upstream` without the stages another of them already depends on (Dagster's deps)."""

    def ancestors(name: str) -> set[str]:
        ups = set(stage(name).upstream)
        return ups.union(*(ancestors(u) for u in ups)) if ups else set()

    return {u for u in s.upstream if not any(u in ancestors(o) for o in s.upstream if o != u)}


def stage(name: str) -> Stage:
    """The row of stage `name` (KeyError naming the known ones)."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def render_code_map() -> str:
    """The README's code map: stage -> code -> CLI verb -> DVC stage -> Dagster -> tests."""

    def code(paths: tuple[str, ...]) -> str:
        return ", ".join(f"`{p.removeprefix('kws_core/')}`" for p in paths)

    rows = [
        "| stage | what it makes | code (`kws_core/`) | CLI | DVC stage | Dagster | tests |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in STAGES:
        check = s.dagster.partition(":")[2]
        dagster = f"check `{check}` on `{s.asset}`" if check else f"asset `{s.asset}`"
        tests = ", ".join(f"`{t.removeprefix('tests/')}`" for t in s.tests)
        rows.append(
            f"| {s.name} | {s.summary} | {code(s.code)} | `kws {s.verb}` | `{s.name}` | "
            f"{dagster} | {tests} |"
        )
    return "\n".join(rows) + "\n"


START, END = "<!-- code-map:start -->", "<!-- code-map:end -->"


def update_readme(text: str) -> str:
    """Replace the README's code map (between the markers) with the current one."""
    from kws_core.params_doc import replace_between

    return replace_between(text, START, END, render_code_map())


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:2] == ["readme"]:
        readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        readme.write_text(update_readme(readme.read_text()))
    else:
        sys.stdout.write(render_code_map())
