"""Fault injection for the reliability suite: die with SIGKILL at a named point.

`KWS_CRASH_AT=<point>[:<n>]` kills the process (`kill -9`, no clean-up, no atexit) the n-th
time (default 1st) the code passes `crash_point("<point>")`; `*` counts every point, so
`KWS_CRASH_AT=*:<n>` dies at the n-th point of any kind. `KWS_CRASH_TALLY=<file>` appends each
point passed to that file (how many points a stage has, to pick kills at random). Unset
(always, outside tests/reliability), a crash point costs one environment lookup. Points:

- `atomic.before_rename`: an output is fully written under its temp name, not yet renamed;
- `checkpoint.mid_write`: a checkpoint's data files are in place, its index is not;
- `train.after_step`: a training step is done (checkpoints are written every save interval);
- `synth.after_speaker`: a synthetic speaker's clips are rendered;
- `download.after_chunk`: a chunk of the archive has been appended to the `.part` file;
- `commit.written`, `commit.journaled`, `commit.renamed`: a stage's outputs are all written
  under temp names / the commit journal is written / one more output is renamed into place.
"""

from __future__ import annotations

import os
import signal

ENV = "KWS_CRASH_AT"
TALLY_ENV = "KWS_CRASH_TALLY"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    tally = os.environ.get(TALLY_ENV)
    if tally:
        with open(tally, "a") as f:
            f.write(name + "\n")
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point not in (name, "*"):
        return
    name = point
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
