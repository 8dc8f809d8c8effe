"""Real speech through `kws demo` in Chromium: accuracy and word-to-page latency of an export.

    PYTHONPATH=.:bench .venv/bin/python bench/demo_browser.py \
        --real_dir ../shared/realdata/speech_commands_test_v0.02_dev \
        --noise_dir ../shared/realdata/_background_noise_ --seconds 180

A test stream of real Speech Commands words over real background noise
(`kws generate-streaming-test-wav` with `stream.words_dir` and `stream.noise_dir`) plays into
Chromium's fake microphone; the demo page streams it to a `kws demo` server running `--graph`
(default: what `kws demo` runs, the export's `model_streaming.tflite`). Reported, for the
stream's first pass:

* the page's detections scored against the ground truth (`score_detections`, as
  `kws test-streaming-accuracy` scores), beside the same model over the same file offline
  (the same scorer object fed the whole file, then the same decoder);
* word-to-page latency: per detection, when the page showed it minus when the audio completing
  its window was captured (`window.kwsDemo.detectionLatencies`, see the README's demo section).

`--screenshot F` saves the page at the end (docs/demo.png is made this way). Needs Debian
`chromium` and the Playwright package (the `dev` extra); nothing here is in `make test`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import append_run

import kws_core  # noqa: F401  (before TensorFlow: sets its oneDNN default)
from kws_core.config import load_params
from kws_core.demo.fake_mic import capture_offset_ms, fake_microphone_args
from kws_core.demo.models import default_graph, live_scorer, load_demo_model
from kws_core.demo.server import DemoServer, Session
from kws_core.infra.wav import read_wav
from kws_core.streaming.recognize import recognize_settings, recognize_stream
from kws_core.streaming.report import generate_test_stream
from kws_core.streaming.score import read_ground_truth, score_detections

CHROMIUM = Path("/usr/bin/chromium")


def offline(model, samples: np.ndarray, params) -> list:
    """The model's detections over the whole file: one scorer, the demo's decoder settings."""
    scorer = live_scorer(model, params.stream.clip_stride_ms)
    windows = scorer.push(samples)
    times = np.array([t for t, _ in windows], np.int64)
    scores = np.stack([s for _, s in windows])
    return recognize_stream(scores, times, model.labels, **recognize_settings(params.stream))


def browser_run(url: str, wav: Path, stream_ms: float, screenshot: Path | None) -> dict:
    """The page's detections, latencies and what it heard, with the fake microphone on `wav`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=fake_microphone_args(wav),
        )
        # bypass_csp: Playwright's wait predicates are strings the page's CSP refuses to eval
        page = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page = page.new_page()
        page.goto(url)
        page.wait_for_selector("#status[data-state=idle]")
        page.click("#mic")
        page.wait_for_selector("#status[data-state=live]")
        page.wait_for_function(
            f"window.kwsDemo.audioMs >= {stream_ms + 1500}", timeout=stream_ms + 60_000
        )
        out = {
            "found": page.evaluate("window.kwsDemo.detections.map(d => [d.label, d.t, d.score])"),
            "latencies": page.evaluate("window.kwsDemo.detectionLatencies"),
            "results_ms": page.evaluate("window.kwsDemo.latencies"),
        }
        if screenshot:
            page.screenshot(path=str(screenshot))
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--graph", default="", help="default: what `kws demo` runs")
    ap.add_argument("--real_dir", required=True, help="Speech Commands layout: label folders")
    ap.add_argument("--noise_dir", required=True, help="a folder of background noise WAVs")
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--screenshot", default="")
    ap.add_argument("--out", default="bench/results/demo_browser.json")
    args = ap.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    stream = {"words_dir": args.real_dir, "noise_dir": args.noise_dir}
    p = load_params(args.params, stream | {"stream_duration_s": args.seconds})
    graph = (
        Path(args.graph)
        if args.graph
        else default_graph(p.layout.export_dir, p.stream.clip_stride_ms)
    )
    model = load_demo_model(graph)
    rate = model.spec.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        stream = generate_test_stream(p, wav=Path(tmp) / "real.wav", truth=Path(tmp) / "real.txt")
        samples = read_wav(stream.wav, rate)
        stream_ms = 1000 * len(samples) / rate
        truth = read_ground_truth(stream.truth, model.labels)
        want = score_detections(
            offline(model, samples, p), truth, stream_ms / 1000, p.stream.time_tolerance_ms
        )
        received: list[np.ndarray] = []  # what the server scored, to find the page's time 0
        feed = Session.feed
        Session.feed = lambda s, pcm, seq: received.append(pcm) or feed(s, pcm, seq)
        srv = DemoServer(model, p.stream, port=0)
        srv.start_thread()
        t0 = time.perf_counter()
        try:
            shot = Path(args.screenshot) if args.screenshot else None
            got = browser_run(srv.url, stream.wav, stream_ms, shot)
        finally:
            srv.stop()
            Session.feed = feed
        wall = time.perf_counter() - t0
    if not received:
        raise SystemExit("demo_browser: the page sent no audio (see the browser's console)")
    offset = capture_offset_ms(np.concatenate(received), samples, rate)
    first = [(lab, t + offset, s) for lab, t, s in got["found"] if t + offset < stream_ms]
    page = score_detections(first, truth, stream_ms / 1000, p.stream.time_tolerance_ms)
    lat = np.array(got["latencies"][: len(first)], float)  # detections come in time order
    row = {
        "graph": str(graph),
        "real_dir": args.real_dir,
        "seconds": round(stream_ms / 1000, 1),
        "words": len(truth),
        "keywords": page.keyword_words,
        "page_correct_pct": round(page.correct_pct, 1),
        "page_false_positives": page.false_positives,
        "offline_correct_pct": round(want.correct_pct, 1),
        "offline_false_positives": want.false_positives,
        "latency_ms_median": round(float(np.median(lat)), 1) if len(lat) else None,
        "latency_ms_max": round(float(lat.max()), 1) if len(lat) else None,
        "results_ms_median": round(float(np.median(got["results_ms"])), 1),
        "heard_from_ms": offset,
        "wall_s": round(wall, 1),
    }
    append_run(args.out, **row)
    print(
        f"demo_browser: {row['words']} real words ({row['keywords']} keywords) in "
        f"{row['seconds']} s through {graph.name}: page {row['page_correct_pct']}% correct "
        f"({row['page_false_positives']} false positives), offline {row['offline_correct_pct']}% "
        f"({row['offline_false_positives']}); detection on the page {row['latency_ms_median']} ms "
        f"(median), {row['latency_ms_max']} ms (max) after its window's audio was captured",
        flush=True,
    )


if __name__ == "__main__":
    main()
