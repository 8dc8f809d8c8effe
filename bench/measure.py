"""Run a command and measure it: wall time, peak RSS, peak anonymous RSS.

Peak RSS is the kernel's high-water mark from wait4() (the process and the children it reaped,
the largest one, not a sum). Anonymous RSS (heap, not memory-mapped files such as the feature
cache) is sampled from /proc every 50 ms: it is what cannot be reclaimed under memory pressure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KWS = [PYTHON, "-m", "kws_core.cli"]


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    peak_anon_mb: float
    output: str

    def row(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
            "peak_anon_mb": round(self.peak_anon_mb),
        }


def _anon_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd: list[str], cwd: Path = ROOT, cpus: set[int] | None = None, **env: str) -> Measured:
    """Run `cmd`; raise with its output if it fails. `cpus` pins it (and its threads) to cores."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
    )
    peak_anon = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_anon
        while not done.is_set():
            peak_anon = max(peak_anon, _anon_kb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    chunks = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = "".join(chunks)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{output}")
    return Measured(seconds, usage.ru_maxrss / 1024, peak_anon / 1024, output)


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    """Median and min-max of repeated measurements."""
    return {
        "median": round(float(np.median(values)), digits),
        "min": round(float(np.min(values)), digits),
        "max": round(float(np.max(values)), digits),
        "n": len(values),
    }


def default_processor(params):
    """(model, spec, AudioProcessor) for `params` on the manifest of `make run`: the training
    input pipeline the benchmarks time."""
    from kws_core.data.manifest import load_manifest
    from kws_core.features.augmented_audio import AudioProcessor
    from kws_core.steps import manifest_path
    from kws_core.training.models import build_model

    model, labels, spec = build_model(params)
    data_dir = params.resolve(params.data.data_dir)
    manifest = load_manifest(manifest_path(params))
    return (
        model,
        spec,
        AudioProcessor(manifest, data_dir, labels, spec, params.augment, progress=False),
    )
