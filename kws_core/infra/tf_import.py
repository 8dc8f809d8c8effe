"""Import and run TensorFlow without its native banners on stderr.

With oneDNN switched on (see kws_core/__init__.py) TensorFlow prints "oneDNN custom operations
are on" twice at import, each after absl's "All log messages before absl::InitializeLog()"
notice, whatever TF_CPP_MIN_LOG_LEVEL says; TFLite prints "Created TensorFlow Lite XNNPACK
delegate for CPU." when a float model first allocates its tensors. These come from C++ straight
to file descriptor 2, so entry points (CLI, `pipelines.run`) import TensorFlow, and the loader
opens TFLite models, inside `native_stderr_without` so a one-line error stays one line; anything
else written meanwhile is kept.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

BANNERS = ("before absl::InitializeLog() is called", "oneDNN custom operations are on")
XNNPACK_BANNER = "Created TensorFlow Lite XNNPACK delegate"


@contextmanager
def native_stderr_without(banners: tuple[str, ...]) -> Iterator[None]:
    """Hold what is written to fd 2 meanwhile; write it back without lines containing a banner."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not any(b in line for b in banners):
                    sys.stderr.write(line)


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    with native_stderr_without(BANNERS):
        import tensorflow  # noqa: F401


@contextmanager
def quiet_converter() -> Iterator[None]:
    """Hold back the converter's chatter (deprecation notices from Python, absl and C++, all on
    stderr) while exporting; it is shown only if the export fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)
        failed = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                yield
        except BaseException:
            failed = True
            raise
        finally:
            absl.setLevel(level)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace")[-4000:])
