"""kill -9 at random points of every multi-output stage, >= 20 kills each: its outputs are all
the old ones or all the new ones afterwards, never a mix (kws_core/infra/commit.py).

Each kill runs the stage in a child forked from a forkserver that imported kws_core once, with
`KWS_CRASH_AT=*:<n>`: SIGKILL at the n-th crash point of any kind (kws_core/infra/faults.py),
n drawn at random from the points a clean run passes (half of the kills among the commit's own
points). A reader (`load_manifest`, `read_metrics`, `await_commit`) then finishes a journaled
commit, and the outputs must be all the old files or all new ones (told apart by inode, mtime
and content: a commit renames a fresh file onto every output). The stages alternate between two
settings, so the content differs too. Random draws are seeded: a failure reproduces.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from kws_core.infra.ownership import MARKER
from tests.conftest import build_tiny_dataset, with_fast_model

pytestmark = pytest.mark.timeout(900)
KILLS = 20


# ------------------------------------------------------------------ the child (forkserver)
def _run_stage(stage: str, params_path: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    from kws_core import steps
    from kws_core.config import load_params

    params = load_params(Path(params_path))
    if stage == "manifest":
        steps.manifest_step(params, progress=False)
    elif stage == "validate":
        steps.validate_step(params)
    elif stage == "train":
        steps.train_step(params, progress=False, track=False, log=lambda _m: None)
    elif stage == "stream-eval":
        steps.stream_eval_step(params, progress=False, track=False)
    os._exit(0)


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["kws_core.steps", "kws_core.data.validate", "kws_core.training.compare",
         "kws_core.streaming.report", "tests.reliability.test_fault_injection"]
    )  # fmt: skip
    return ctx


def run(ctx, stage: str, params: Path, crash: str = "", tally: Path | None = None) -> int:
    env = {"KWS_CRASH_AT": crash, "KWS_CRASH_TALLY": str(tally or ""), "KWS_LOCK_WAIT_S": "60"}
    child = ctx.Process(target=_run_stage, args=(stage, str(params), env))
    child.start()
    child.join(300)
    assert child.exitcode is not None, f"{stage} hung"
    return child.exitcode


# ------------------------------------------------------------------ the parent
def identity(path: Path) -> tuple:
    """Which write of `path` is there: a commit renames a fresh file (or folder) onto every
    output, so each gets a new inode and mtime even where the content is alike."""
    if not path.exists():
        return ("missing",)
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, digest(path))


def digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha1()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(path).as_posix().encode() + p.read_bytes())
        return h.hexdigest()
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else "missing"


def write_params(root: Path, name: str, body: dict) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(with_fast_model(body)))
    return path


def base(**sections) -> dict:
    body = {
        "data": {"data_url": "", "data_dir": "data", "wanted_words": "yes,no"},
        "train": {"how_many_training_steps": "3,1", "batch_size": 16, "eval_step_interval": 2,
                  "save_step_interval": 2},
        "stream": {"stream_duration_s": 20, "negative_duration_s": 10},
        "export": {"representative_examples": 10, "quantize": False},
    }  # fmt: skip
    for section, values in sections.items():
        body[section] = body.get(section, {}) | values
    return body


def kill_at_random_points(ctx, stage, settings, outputs, recover, seed) -> dict:
    """KILLS kills of `stage` alternating between the two `settings` files; returns counts."""
    rng = random.Random(seed)
    tally = settings[0].parent / f".{stage}.tally"
    tally.unlink(missing_ok=True)
    assert run(ctx, stage, settings[1]) == 0  # (a first run makes what later runs reuse)
    one = {p: identity(p) for p in outputs}
    assert run(ctx, stage, settings[0], tally=tally) == 0  # which points a run passes
    assert all(identity(p) != one[p] for p in outputs), f"{stage}: a run left an output as it was"
    points = tally.read_text().split()
    commit_points = [i + 1 for i, p in enumerate(points) if p.startswith("commit.")]
    assert commit_points, f"{stage} passes no commit point: {points}"
    state, kills, committed, runs = 0, 0, 0, 0
    while kills < KILLS and runs < 3 * KILLS:
        runs += 1
        before = {p: identity(p) for p in outputs}
        pick = rng.choice if kills % 2 else (lambda xs: rng.randint(1, len(points)))
        n = pick(commit_points)
        code = run(ctx, stage, settings[1 - state], crash=f"*:{n}")
        # A resumed run (training after a kill) passes fewer points and may finish first.
        assert code in (0, -signal.SIGKILL), f"{stage} at point {n} of {points} exited {code}"
        kills += code != 0
        recover()
        changed = {p for p in outputs if identity(p) != before[p]}
        assert changed in (set(), set(outputs)), (
            f"{stage}: killed at point {n}: mixed outputs, only "
            f"{sorted(p.name for p in changed)} of {sorted(p.name for p in outputs)} were replaced"
        )
        if changed:
            state, committed = 1 - state, committed + 1
    assert kills == KILLS, f"{stage}: only {kills} kills in {runs} runs"
    # The next clean run completes and leaves no temp file or journal behind.
    assert run(ctx, stage, settings[1 - state]) == 0
    folders = {p.parent for p in outputs}
    left = [q for f in folders for q in f.iterdir() if q.name.startswith(".") and q.name != MARKER]
    assert not left, left
    return {"kills": kills, "committed": committed}


def test_the_commit_is_all_or_nothing_on_its_own(tmp_path):
    """The mechanism alone, killed at each of its points in a forked child."""
    from kws_core.infra.commit import atomic_outputs
    from kws_core.infra.locks import await_commit, output_lock

    out = tmp_path / "out"
    names = [out / f"f{i}.txt" for i in range(4)] + [out / "docs"]

    def write(tag: str) -> None:
        with atomic_outputs(out, "t") as staged:
            for f in names[:-1]:
                staged.path(f).write_text(tag)
            d = staged.path(names[-1], folder=True)
            (d / "index.html").write_text(tag)

    write("old")
    for n in range(1, 8):  # written, journaled, 5 renames
        pid = os.fork()
        if pid == 0:
            os.environ["KWS_CRASH_AT"] = f"*:{n}"
            write("new")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        await_commit(out, "test reader")
        seen = {f.read_text() for f in names[:-1]} | {(names[-1] / "index.html").read_text()}
        assert seen in ({"old"}, {"new"}), (n, seen)
        with output_lock(out, "the next writer"):  # sweeps what a kill before the journal left
            assert not [p for p in out.iterdir() if p.name.startswith(".")]
        write("old")


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 24)
    return root


def test_manifest_kills(forkserver, tiny_project):
    from kws_core.data.manifest import load_manifest

    root = tiny_project
    a = write_params(root, "a", base(data={"validation_percentage": 10}))
    b = write_params(root, "b", base(data={"validation_percentage": 30}))
    m = root / "results" / "manifest"
    outputs = [m / n for n in ("manifest.parquet", "rejected.parquet", "rejected.csv",
                               "background.csv", "partition_disagreements.csv",
                               "manifest_summary.json")]  # fmt: skip
    counts = kill_at_random_points(
        forkserver, "manifest", (a, b), outputs, lambda: load_manifest(outputs[0]), seed=17
    )
    assert counts["committed"] >= 1 and counts["kills"] - counts["committed"] >= 1


def test_validate_kills(forkserver, tiny_project):
    from kws_core.infra.locks import await_commit

    root = tiny_project
    a = write_params(root, "va", base(data={"partition_tolerance": 0.05}))
    b = write_params(root, "vb", base(data={"partition_tolerance": 0.5}))
    assert run(forkserver, "manifest", a) == 0
    m = root / "results" / "manifest"
    outputs = [m / "validation.json", m / "quality_metrics.json", m / "data_docs"]
    counts = kill_at_random_points(
        forkserver, "validate", (a, b), outputs, lambda: await_commit(m, "test"), seed=18
    )
    assert counts["committed"] >= 1


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory, forkserver):
    root = tmp_path_factory.mktemp("kills_train")
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 24)
    a = write_params(root, "ta", base())
    assert run(forkserver, "manifest", a) == 0
    return root


def test_train_report_kills(forkserver, trained_project):
    from kws_core.config import load_params
    from kws_core.training.report import read_metrics

    root = trained_project
    a = write_params(root, "ta", base())
    b = write_params(root, "tb", base(train={"learning_rate": "0.01,0.002"}))
    r = root / "results" / "train_reports"
    outputs = [r / "metrics.json", r / "summary.json", r / "confusion_matrix.png",
               r / "confusion_matrix.csv"]  # fmt: skip
    params = load_params(a)
    assert params.layout.reports_dir == r and params.layout.metrics_summary in outputs
    counts = kill_at_random_points(
        forkserver, "train", (a, b), outputs, lambda: read_metrics(params), seed=19
    )
    assert counts["committed"] >= 1


def test_stream_eval_kills(forkserver, trained_project):
    from kws_core import steps
    from kws_core.config import load_params
    from kws_core.infra.locks import await_commit

    root = trained_project
    a = write_params(root, "ta", base())
    assert run(forkserver, "train", a) == 0
    steps.freeze_step(load_params(a), progress=False, track=False)
    b = write_params(root, "sb", base(stream={"detection_threshold": 0.5}))
    s = load_params(a).layout.stream_dir
    outputs = [s / "report.json", s / "report.md", s / "det_curve.png", s / "det_curve.csv",
               s / "summary.json"]  # fmt: skip
    counts = kill_at_random_points(
        forkserver, "stream-eval", (a, b), outputs, lambda: await_commit(s, "test"), seed=20
    )
    assert counts["committed"] >= 1
    shutil.rmtree(s)
