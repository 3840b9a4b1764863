"""User-facing errors.

Every error a user can cause (bad data, bad config, bad model path) is a ``FitUnlearnError``.
The CLI prints ``str(error)`` on one line and exits with ``error.exit_code`` (no traceback unless
``--debug``).  Library users catch the subclasses.
"""

from __future__ import annotations


class FitUnlearnError(Exception):
    """Base class of the errors that are the user's to fix."""

    exit_code = 2


class DataError(FitUnlearnError):
    """A data file or document is missing, malformed or violates a limit."""


class ModelError(FitUnlearnError):
    """A model path does not hold a usable causal language model."""


class ConfigError(FitUnlearnError):
    """A configuration value is missing or invalid."""


class JournalError(FitUnlearnError):
    """A run directory's journal or checkpoint does not match what was asked."""


class RequestError(FitUnlearnError):
    """A deletion request is invalid (empty, too large, duplicate id...)."""
