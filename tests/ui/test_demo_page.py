"""`kws demo` in a real Chromium: a fake microphone (a generated WAV of tone "words") and a chosen
WAV file both reach the model and the page shows their words in order; tiles, log, chart and
errors update; a screenshot is saved.

`KWS_UPDATE_DOCS=1` also copies the screenshot to docs/demo.png (the README's picture), so an
ordinary test run leaves the repository untouched.
"""

from __future__ import annotations

import os
import shutil

import pytest

from kws_core.config import StreamConfig
from kws_core.demo.server import DemoServer
from kws_core.export.loader import ExportedModel
from kws_core.infra.wav import write_wav
from tests.test_demo import heard, tiny_export, word_stream
from tests.ui.conftest import CHROMIUM, DEFAULT_TIMEOUT_MS, REPO

WAIT_MS = 30_000
SAID = ["yes", "no", "cat", "no", "yes"]  # the stream's words (cat: an unknown word)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_page")
    model = ExportedModel.load(tiny_export(root))
    wav = root / "words.wav"
    write_wav(wav, word_stream(SAID), 16000)
    srv = DemoServer(model, StreamConfig(clip_stride_ms=30), port=0)
    srv.start_thread()
    yield srv, wav
    srv.stop()


@pytest.fixture
def live_page(browser, demo):
    """A page in a Chromium whose microphone plays the generated WAV (permission granted)."""
    _, wav = demo
    b = browser.browser_type.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    # bypass_csp: Playwright evaluates its wait predicates as strings, which the page's CSP
    # (no eval) rightly refuses
    ctx = b.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page, errors
    finally:
        ctx.close()
        b.close()


def count(page, what: str) -> int:
    return page.evaluate(f"window.kwsDemo.{what}")


def test_microphone_and_wav_file_reach_the_model(live_page, demo, screenshot):
    page, errors = live_page
    srv, wav = demo
    page.goto(srv.url)
    page.wait_for_selector("#status[data-state=idle]")
    labels = srv.cfg.model.labels
    assert page.locator(".tile").all_inner_texts() == labels
    assert str(srv.cfg.model.path) in page.inner_text("#model")

    # an invalid decoder setting: a one-line error on the page, the stream goes on
    page.fill("input[name=minimum_count]", "0")
    page.click("#settings button")
    page.wait_for_selector("#error:not([hidden])")
    assert "minimum_count" in page.inner_text("#error")
    page.fill("input[name=minimum_count]", "3")
    page.fill("input[name=detection_threshold]", "0.3")
    page.click("#settings button")
    page.wait_for_function("window.kwsDemo.settings.detection_threshold === 0.3")
    assert page.locator("#error").is_hidden()  # taken: the complaint is gone

    # the fake microphone: results flow, a detection lights its tile and enters the log
    page.click("#mic")
    page.wait_for_selector("#status[data-state=live]")
    page.wait_for_function("document.querySelector('.tile.lit') !== null", timeout=WAIT_MS)
    page.wait_for_function("window.kwsDemo.windows >= 200", timeout=WAIT_MS)  # a full chart
    page.wait_for_function("window.kwsDemo.detections.length >= 3", timeout=WAIT_MS)
    got = page.evaluate("window.kwsDemo.detections.map(d => d.label)")
    assert got[:3] == heard(SAID)[:3], got  # the stream's words, in order
    entries, detections = page.evaluate(
        "[document.querySelectorAll('#log li').length, window.kwsDemo.detections.length]"
    )
    assert entries == detections  # one log entry per detection
    assert got[0] in page.inner_text("#log")
    latencies = page.evaluate("window.kwsDemo.latencies")
    median = sorted(latencies)[len(latencies) // 2]
    print(f"\nbrowser: median {median:.0f} ms from a 40 ms chunk sent to its results back")
    assert median < 500, latencies
    shot = screenshot(page, "microphone")
    if os.environ.get("KWS_UPDATE_DOCS"):
        shutil.copyfile(shot, REPO / "docs" / "demo.png")

    # the WAV path: a chosen file replays in real time through the same socket
    page.click("#stop")
    before = count(page, "detections.length"), count(page, "windows")
    page.set_input_files("#file", str(wav))
    page.wait_for_selector("#status[data-state=live]")
    n = len(SAID)
    page.wait_for_function(f"window.kwsDemo.detections.length >= {before[0] + n}", timeout=WAIT_MS)
    assert "words.wav" in page.inner_text("#status")
    got = page.evaluate("window.kwsDemo.detections.map(d => d.label)")[before[0] :]
    assert got[:n] == heard(SAID), got  # every word of the file, in order
    assert count(page, "windows") > before[1]
    screenshot(page, "wav-file")
    assert errors == []
