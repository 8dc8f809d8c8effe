"""Import TensorFlow without its start-up banners on stderr.

With oneDNN switched on (see kws_core/__init__.py) TensorFlow prints "oneDNN custom operations
are on" twice at import, each after absl's "All log messages before absl::InitializeLog()"
notice, whatever TF_CPP_MIN_LOG_LEVEL says. Entry points (CLI, `pipelines.run`) import it
through here so a one-line error stays one line; anything else TensorFlow prints is kept.
"""

from __future__ import annotations

import os
import sys
import tempfile

BANNERS = ("before absl::InitializeLog() is called", "oneDNN custom operations are on")


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not any(b in line for b in BANNERS):
                    sys.stderr.write(line)
