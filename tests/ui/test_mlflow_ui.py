"""The MLflow UI shows a kws training run: experiment `kws`, the run, its confusion matrix."""

from __future__ import annotations

import re
import time

import pytest

from tests.ui.conftest import free_port, venv_bin

ARCH = "low_latency_conv"


@pytest.fixture
def tracked_run(tmp_path, monkeypatch):
    """One real tracked training run (a few steps on tones), in tmp_path/mlflow.db."""
    from kws_core.data.manifest import build_manifest
    from kws_core.training.loop import train
    from tests.conftest import build_tiny_dataset
    from tests.test_train import params_for

    root = tmp_path
    # The experiment's artifact root is `results/mlartifacts` relative to the params' folder,
    # which is the working directory for params built in code: keep it inside tmp_path.
    monkeypatch.chdir(root)
    data = build_tiny_dataset(root / "data", ["yes", "no", "cat"], 30, learnable=True)
    params = params_for(
        root,
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        how_many_training_steps="4,2",
        model_architecture=ARCH,
    )
    manifest = build_manifest(params.data, data, progress=False).manifest
    result = train(params, manifest, data, progress=False, log=lambda _: None, track=True)
    assert result.run_id
    return root, result.run_id


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_ui_shows_the_run_and_its_confusion_matrix(
    tracked_run, start_server, page, screenshot
):
    from playwright.sync_api import expect

    root, run_id = tracked_run
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

    page.goto(server.url + "/")
    # MLflow 3 opens in GenAI mode; kws runs live under "Model training".
    page.get_by_text("Model training", exact=True).first.click()
    page.get_by_role("link", name="kws", exact=True).first.click()
    run_link = page.get_by_role("link", name=re.compile(rf"^{ARCH}-"))
    expect(run_link.first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("1 matching run")).to_be_visible()
    screenshot(page, "experiment")

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
