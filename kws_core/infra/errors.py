"""User-facing errors: one line that names the file or key and says how to fix it."""

from __future__ import annotations


class KwsError(Exception):
    """An error the CLI prints as one line (no traceback) and exits with status 2."""


class ConfigError(KwsError):
    """A bad key or value in params.yaml or on the command line."""


class DataError(KwsError):
    """A data set that cannot be used as it is (missing words, bad layout, failed download)."""
