"""The MLflow UI as a kws user sees it: the runs table with metric columns (the link kws prints),
a run and its confusion matrix, two runs compared side by side."""

from __future__ import annotations

import re
import time

import pytest

from tests.ui.conftest import free_port, venv_bin

ARCH = "low_latency_conv"
OTHER = "tiny_conv"


@pytest.fixture
def tracked_runs(tmp_path, monkeypatch):
    """Two real tracked training runs (a few steps on tones, two architectures), in
    tmp_path/mlflow.db; returns (root, run ids, experiment id)."""
    from kws_core.data.manifest import build_manifest
    from kws_core.training.loop import train
    from tests.conftest import build_tiny_dataset
    from tests.test_train import params_for

    root = tmp_path
    # The experiment's artifact root is `results/mlartifacts` relative to the params' folder,
    # which is the working directory for params built in code: keep it inside tmp_path.
    monkeypatch.chdir(root)
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 30, learnable=True)
    runs = []
    for arch in (ARCH, OTHER):
        params = params_for(
            root,
            mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
            how_many_training_steps="4,2",
            model_architecture=arch,
            train_dir=str(root / "train" / arch),
            reports_dir=str(root / "reports" / arch),
        )
        manifest = build_manifest(params.data, data, progress=False).manifest
        result = train(params, manifest, data, progress=False, log=lambda _: None, track=True)
        assert result.run_id and result.experiment_id
        runs.append(result)
    return root, [r.run_id for r in runs], runs[0].experiment_id


def _mlflow_server(start_server, root):
    port = free_port()
    server = start_server(
        "mlflow",
        [
            venv_bin("mlflow"),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--default-artifact-root",
            str(root / "results" / "mlartifacts"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        port,
        cwd=root,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )
    t0 = time.monotonic()
    server.wait_http("/health", timeout_s=180)
    print(f"mlflow ui answered after {time.monotonic() - t0:.1f}s")
    return server


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mlflow_ui_opens_on_runs_with_metric_columns_and_compares_two(
    tracked_runs, start_server, page, screenshot
):
    from playwright.sync_api import expect

    from kws_core.training.tracking import runs_url

    root, run_ids, experiment_id = tracked_runs
    server = _mlflow_server(start_server, root)

    # The link `kws train` and `make mlflow-ui` print: the runs table, not GenAI traces, with
    # the metrics people compare as columns.
    page.goto(runs_url(server.url, experiment_id))
    run_link = page.get_by_role("link", name=re.compile(rf"^{ARCH}-"))
    expect(run_link.first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("2 matching runs")).to_be_visible()
    for column in ("best_validation_accuracy", "test_accuracy"):
        expect(page.get_by_role("columnheader", name=re.compile(column)).first).to_be_visible()
    expect(page).to_have_url(re.compile(rf"#/experiments/{experiment_id}/runs"))  # not traces
    expect(page.get_by_text("Sort: best_validation_accuracy")).to_be_visible()
    screenshot(page, "runs_table")

    # Compare: tick both runs, press Compare: their metrics side by side.
    page.get_by_role("checkbox").first.check()  # the header's box ticks every run
    page.get_by_role("button", name=re.compile("^Compare")).first.click()
    expect(page).to_have_url(re.compile(r"compare-runs"))
    expect(page.get_by_text("best_validation_accuracy").first).to_be_visible(timeout=60_000)
    for arch in (ARCH, OTHER):
        expect(page.get_by_text(re.compile(rf"^{arch}-")).first).to_be_visible()
    metrics = page.get_by_text("Metrics", exact=True).last
    metrics.scroll_into_view_if_needed()
    expect(page.get_by_text("best_validation_accuracy", exact=True).last).to_be_visible()
    screenshot(page, "compare_runs")

    # ... and their confusion matrices side by side: the runs page's chart view
    page.goto(runs_url(server.url, experiment_id))
    page.locator("label:has(input[value=CHART])").click()  # the view switch: table, chart, ...
    page.get_by_placeholder("Search metric charts").fill("confusion_matrix")
    # the image chart holds each run's confusion matrix (logged as an MLflow image)
    for run_id in run_ids:
        picture = page.locator(f"img[src*='confusion_matrix'][src*='{run_id}']").first
        expect(picture).to_be_attached(timeout=60_000)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 100", arg=picture.element_handle()
        )
    screenshot(page, "compare_confusion_matrices")

    run_id = run_ids[0]
    page.goto(runs_url(server.url, experiment_id))
    run_link = page.get_by_role("link", name=re.compile(rf"^{ARCH}-"))
    run_link.first.click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}"))
    expect(page.get_by_role("tab", name="Artifacts")).to_be_visible()
    expect(page.get_by_text("test_accuracy", exact=True).first).to_be_visible()
    screenshot(page, "run")

    page.get_by_role("tab", name="Artifacts").click()
    expect(page).to_have_url(re.compile(r"/artifacts"))
    plots = page.get_by_text("plots", exact=True).first
    expect(plots).to_be_visible()
    plots.click()  # kws logs the picture under plots/ (kws_core/training/loop.py)
    png = page.get_by_text("confusion_matrix.png", exact=True).first
    expect(png).to_be_visible()
    png.click()
    # the preview pane shows the picture itself (a blob: URL with the artifact path as alt text)
    expect(page.get_by_text("plots/confusion_matrix.png").first).to_be_visible()
    picture = page.get_by_alt_text("plots/confusion_matrix.png").first
    expect(picture).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 100", arg=picture.element_handle()
    )
    screenshot(page, "artifacts")
