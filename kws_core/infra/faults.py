"""Fault injection for the reliability suite: die with SIGKILL at a named point.

`KWS_CRASH_AT=<point>[:<n>]` kills the process (`kill -9`, no clean-up, no atexit) the n-th
time (default 1st) the code passes `crash_point("<point>")`. Unset (always, outside
tests/reliability), a crash point costs one environment lookup. Points:

- `atomic.before_rename`: an output is fully written under its temp name, not yet renamed;
- `checkpoint.mid_write`: a checkpoint's data files are in place, its index is not;
- `train.after_step`: a training step is done (checkpoints are written every save interval);
- `synth.after_speaker`: a synthetic speaker's clips are rendered;
- `download.after_chunk`: a chunk of the archive has been appended to the `.part` file.
"""

from __future__ import annotations

import os
import signal

ENV = "KWS_CRASH_AT"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
