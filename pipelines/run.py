"""`make run`: launch the `kws_pipeline` job through Dagster, then say where results are.

    python -m pipelines.run [--params params.yaml]

The run is recorded in the Dagster instance at $DAGSTER_HOME (the Makefile uses
`results/dagster_home`), so `make ui` shows it afterwards. Each asset `dvc commit`s its stage,
so `dvc status` is clean at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.execution.api import execute_run

from kws_core.infra.errors import KwsError

REPO_ROOT = Path(__file__).resolve().parents[1]

INSTANCE_CONFIG = """\
telemetry:
  enabled: false
# Step stdout/stderr are not captured to files: `make run` shows its progress bars in the
# terminal as they happen. Structured event logs (what `make ui` shows) are kept.
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def instance_for(home: Path) -> dg.DagsterInstance:
    """A persistent instance in `home` (telemetry off, no onboarding dialog)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)
    nux = home / ".nux" / "nux.yaml"
    if not nux.exists():
        nux.parent.mkdir(parents=True, exist_ok=True)
        nux.write_text("seen: 1\n")
    return dg.DagsterInstance.from_config(str(home))


def kws_pipeline_job():
    """The whole pipeline as a job (module level, so other processes can reconstruct it)."""
    from pipelines.definitions import defs

    return defs.resolve_job_def("kws_pipeline")


def run_pipeline(
    params_path: Path,
    instance: dg.DagsterInstance,
    progress: bool = True,
    multiprocess: bool = False,
) -> dg.JobExecutionResult:
    """Run the `kws_pipeline` job of workspace.yaml's code location, as the UI, the schedule
    and the sensor do: the run carries that origin, so the UI can re-execute it, and it shows on
    the job's page and the timeline. It executes here (one TensorFlow, progress bars in the
    terminal); `multiprocess` runs independent assets in parallel, one process per step."""
    run_config = {
        "resources": {"kws": {"config": {"params_path": str(params_path), "progress": progress}}},
        # The console shows progress bars and warnings; every event is in the instance (make ui).
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "execution": {"config": {"multiprocess" if multiprocess else "in_process": {}}},
    }
    run = _create_workspace_run(instance, run_config)
    return execute_run(dg.reconstructable(kws_pipeline_job), run, instance)


def _create_workspace_run(instance: dg.DagsterInstance, run_config: dict):
    """A run record of `kws_pipeline` with workspace.yaml's code location as its origin (what
    `dagster job launch` creates; executing it here keeps the terminal's progress bars)."""
    # dagster's own `job launch` helper: private, but the version is pinned (constraints.txt)
    from dagster._cli.job import _create_run
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    target = WorkspaceFileTarget(paths=[str(REPO_ROOT / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target, code_server_log_level="WARNING") as process:
        workspace = process.create_request_context()
        (location_name,) = workspace.code_location_names
        location = workspace.get_code_location(location_name)
        (repo,) = location.get_repositories().values()
        remote_job = repo.get_full_job("kws_pipeline")
        return _create_run(
            instance=instance,
            code_location=location,
            remote_repo=repo,
            remote_job=remote_job,
            run_config=run_config,
            tags=None,
            op_selection=None,
            run_id=None,
        )


def summary(result: dg.JobExecutionResult) -> list[str]:
    lines = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta = mat.metadata
        shown = []
        for key in (
            "path",
            "data_dir",
            "clips",
            "dagster/row_count",
            "champion",
            "best_validation_accuracy",
            "test_accuracy",
            "mlflow_model",
            "correct_pct",
            "false_reject_rate",
            "false_accepts_per_hour",
            "dvc_data_version",
        ):
            if key in meta:
                value = meta[key].value
                shown.append(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")
        lines.append(f"{mat.asset_key.to_user_string():<22} " + ", ".join(shown))
    times = [
        f"{e.step_key} {e.event_specific_data.duration_ms / 1000:.0f} s"
        for e in result.all_events
        if e.is_step_success
    ]
    lines.append("step times: " + ", ".join(times))
    for check in result.get_asset_check_evaluations():
        verdict = "passed" if check.passed else f"FAILED ({check.severity.value})"
        lines.append(f"check {check.check_name:<28} {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dagster_home", default="results/dagster_home")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--multiprocess",
        action="store_true",
        help="one process per step, independent assets in parallel (default: in-process)",
    )
    args = ap.parse_args(argv)
    from kws_core.infra.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    params_path = Path(args.params).resolve()
    t0 = time.perf_counter()
    instance = instance_for(Path(args.dagster_home).resolve())
    try:
        result = run_pipeline(
            params_path,
            instance,
            progress=not args.no_progress and not args.multiprocess,
            multiprocess=args.multiprocess,
        )
    except KwsError as e:
        print(f"make run: error: {e}", file=sys.stderr)
        return 2
    print("\n== kws pipeline (Dagster) ==")
    print("\n".join(summary(result)))
    if not result.success:
        failed = [e for e in result.all_events if e.is_step_failure]
        for e in failed:
            err = e.step_failure_data.error
            msg = err.message.strip().splitlines()[-1] if err else "failed"
            print(f"step {e.step_key} failed: {msg}", file=sys.stderr)
        return 1
    print(f"\nDagster run {result.run_id} in {time.perf_counter() - t0:.0f} s")
    print(f"  dagster UI:   make ui  (DAGSTER_HOME={instance.root_directory})")
    print("  mlflow UI:    make mlflow-ui")
    print("  results:      results/ (manifest, train_reports, frozen/model, streaming/report.md)")
    print("  dvc:          dvc status (clean: every stage is committed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
