"""The Dagster UI: the kws asset graph, "Materialize all" on a tiny config, the model's metadata.

`dagster dev -w workspace.yaml` runs from the repo root, as `make ui` does; `KWS_PARAMS` points
the assets at a tiny params.yaml next to a tiny tone data set in tmp_path, so nothing is
written into the repo's data/ or results/.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_pipelines import ASSETS as ASSET_KEYS
from tests.ui.conftest import REPO, free_port, venv_bin

# The seven asset keys, in pipeline order (tests/test_pipelines.py checks the same set).
ASSETS = sorted(ASSET_KEYS)
TINY_PARAMS = """\
data: {data_url: "", data_dir: data, wanted_words: "yes,no", manifest_dir: results/manifest}
features: {preprocess: mfcc}
train:
  {how_many_training_steps: "6,2", batch_size: 16, eval_step_interval: 4, save_step_interval: 4,
   model_architecture: low_latency_conv, feature_source: on_the_fly}
export: {representative_examples: 20}
stream: {stream_duration_s: 20, negative_duration_s: 30, word_gap_ms: 2000, clip_stride_ms: 30}
"""  # the fast model of tests/conftest.py's FAST_MODEL
RUN_TIMEOUT_S = 8 * 60
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        url + "/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.load(r)
    if out.get("errors"):
        raise AssertionError(f"GraphQL errors: {out['errors']}")
    return out["data"]


def wait_code_location(url: str, timeout_s: float = 240) -> None:
    """Wait until workspace.yaml's code location is loaded; fail with its error if it broke."""
    q = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout_s
    entries: list = []
    while time.monotonic() < deadline:
        entries = graphql(url, q)["workspaceOrError"].get("locationEntries") or []
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [
                f"{e['name']}: {e['locationOrLoadError'].get('message', '')}"
                for e in entries
                if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"
            ]
            assert not errors, "the code location failed to load:\n" + "\n".join(errors)
            return
        time.sleep(1)
    raise TimeoutError(f"code location not loaded after {timeout_s}s: {entries}")


def run_ids(url: str) -> list[str]:
    q = "{ runsOrError(limit: 20) { ... on Runs { results { runId } } } }"
    return [r["runId"] for r in graphql(url, q)["runsOrError"]["results"]]


def run_status(url: str, run_id: str) -> str:
    q = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
    return graphql(url, q, {"id": run_id})["runOrError"]["status"]


def run_failures(url: str, run_id: str) -> str:
    q = """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { ... on EventConnection {
      events { __typename ... on MessageEvent { message stepKey }
               ... on ExecutionStepFailureEvent { error { message } }
               ... on RunFailureEvent { error { message } } } } } }"""
    events = graphql(url, q, {"id": run_id})["logsForRun"].get("events") or []
    bad = [e for e in events if "Failure" in e["__typename"] or "Error" in e["__typename"]]
    return "\n".join(
        f"{e['__typename']} {e.get('stepKey')}: {e.get('message')}\n"
        + ((e.get("error") or {}).get("message") or "")
        for e in bad
    )


def expand_all_groups(page) -> None:
    """Open every asset group: in the graph (settings menu) and in the sidebar tree."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="settings", exact=True).last.click()  # the graph's gear
    expand = page.get_by_role("menuitem", name="Expand all groups")
    menu = page.get_by_role("menuitem").first
    expect(menu).to_be_visible()
    if expand.count():
        expand.click()
    else:  # one group only, or already expanded
        page.keyboard.press("Escape")
    # Sidebar: group rows have a caret button ("arrow_drop_down") next to the group's name; the
    # "Materialize all" menu button has the same name but no text around it. Click from the
    # bottom up so the rows that open do not shift the carets still to click.
    carets = page.get_by_role("button", name="arrow_drop_down", exact=True)
    for i in reversed(range(carets.count())):
        caret = carets.nth(i)
        if caret.evaluate("e => (e.parentElement.textContent || '').trim()"):
            caret.click()


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    from tests.conftest import build_tiny_dataset

    root = tmp_path / "project"
    build_tiny_dataset(root / "data", ["yes", "no", "cat"], 40, learnable=True)
    (root / "params.yaml").write_text(TINY_PARAMS)
    return root


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dagster_ui_materializes_all_assets(tiny_project, tmp_path, start_server, page, screenshot):
    from playwright.sync_api import expect

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    port = free_port()
    server = start_server(
        "dagster",
        [
            venv_bin("dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        port,
        cwd=REPO,
        env={"DAGSTER_HOME": str(home), "KWS_PARAMS": str(tiny_project / "params.yaml")},
    )
    t0 = time.monotonic()
    server.wait_http("/server_info", timeout_s=240)
    wait_code_location(server.url)
    print(f"dagster dev ready after {time.monotonic() - t0:.1f}s")

    # The "Join the Dagster community" dialog: mark it dismissed, and click Skip if it shows.
    page.context.add_init_script("window.localStorage.setItem('communityNux', 'true')")
    page.add_locator_handler(
        page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click()
    )

    page.goto(server.url + "/asset-groups")  # "Global asset lineage"
    expect(page.get_by_text("Global asset lineage").first).to_be_visible()
    expect(page.get_by_role("button", name="Materialize all")).to_be_enabled()
    expand_all_groups(page)
    for name in ASSETS:
        # the sidebar tree carries each full name as a title (graph nodes may middle-truncate)
        expect(page.get_by_title(name, exact=True).first).to_be_visible()
    # let the nodes fetch their status before the picture
    expect(page.get_by_text("Loading...", exact=True)).to_have_count(0)
    screenshot(page, "asset-graph")

    before = set(run_ids(server.url))
    page.get_by_role("button", name="Materialize all").click()
    # The "Launched run …" toast is short-lived: ask the GraphQL API for the new run instead.
    deadline = time.monotonic() + 60
    new: list[str] = []
    while not new and time.monotonic() < deadline:
        new = [r for r in run_ids(server.url) if r not in before]
        time.sleep(0.5)
    assert len(new) == 1, f"expected one new run after 'Materialize all', got {new}"
    run_id = new[0]

    t1 = time.monotonic()
    page.goto(f"{server.url}/runs/{run_id}")
    status = run_status(server.url, run_id)
    while status not in DONE and time.monotonic() - t1 < RUN_TIMEOUT_S:
        time.sleep(5)
        status = run_status(server.url, run_id)
    print(f"run {run_id} {status} after {time.monotonic() - t1:.0f}s")
    if status != "SUCCESS":
        screenshot(page, "run-not-successful")
    assert status == "SUCCESS", (
        f"run {run_id} ended {status} (or timed out after {RUN_TIMEOUT_S}s):\n"
        + run_failures(server.url, run_id)
    )
    page.reload()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{len(ASSETS)} assets").first).to_be_visible()
    screenshot(page, "run")

    page.goto(server.url + "/assets/trained_model")
    expect(page.get_by_role("tab", name="Overview")).to_be_visible()
    expect(page.get_by_text("trained_model", exact=True).first).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"\bMetadata\b")).first).to_be_visible()
    expect(page.get_by_text("test_accuracy", exact=True).first).to_be_visible()
    expect(page.get_by_text("best_validation_accuracy", exact=True).first).to_be_visible()
    screenshot(page, "trained_model-metadata")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_make_run_job_can_be_re_executed_from_the_ui(
    tiny_project, tmp_path, start_server, page, screenshot
):
    """`make run` launches the real `kws_pipeline` job: its run page offers Re-execute, and
    re-executing it from the UI runs the whole pipeline again."""
    import subprocess
    import sys

    from playwright.sync_api import expect

    home = tmp_path / "dagster_home"
    made = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "--no-progress"]
        + ["--params", str(tiny_project / "params.yaml"), "--dagster_home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    port = free_port()
    server = start_server(
        "dagster",
        [venv_bin("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        port,
        cwd=REPO,
        env={"DAGSTER_HOME": str(home), "KWS_PARAMS": str(tiny_project / "params.yaml")},
    )
    server.wait_http("/server_info", timeout_s=240)
    wait_code_location(server.url)
    page.context.add_init_script("window.localStorage.setItem('communityNux', 'true')")
    page.add_locator_handler(
        page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click()
    )
    (first,) = run_ids(server.url)
    page.goto(f"{server.url}/runs/{first}")
    expect(page.get_by_text("kws_pipeline").first).to_be_visible(timeout=60_000)
    again = page.get_by_role("button", name=re.compile(r"Re-execute all"))
    expect(again).to_be_enabled()
    # a check's verdict is in words in the event log, no click needed
    expect(page.get_by_text(re.compile(r"^false-reject rate ")).first).to_be_visible()
    screenshot(page, "make-run-job")
    again.click()
    deadline = time.monotonic() + 60
    new: list[str] = []
    while not new and time.monotonic() < deadline:
        new = [r for r in run_ids(server.url) if r != first]
        time.sleep(0.5)
    assert len(new) == 1, f"expected one re-executed run, got {new}"
    t1 = time.monotonic()
    status = run_status(server.url, new[0])
    while status not in DONE and time.monotonic() - t1 < RUN_TIMEOUT_S:
        time.sleep(5)
        status = run_status(server.url, new[0])
    assert status == "SUCCESS", run_failures(server.url, new[0])
    page.goto(f"{server.url}/runs/{new[0]}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    screenshot(page, "re-executed")
