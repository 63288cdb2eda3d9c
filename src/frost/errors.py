"""User-facing errors: every message is one line that names the field and the fix."""

from __future__ import annotations


class FrostError(Exception):
    """An error caused by the user's input or environment; the CLI prints it on one line and exits with code 2."""


class ConfigError(FrostError):
    """A configuration field has an invalid value."""


class ModelLoadError(FrostError):
    """A model or tokenizer could not be loaded."""


class DataError(FrostError):
    """Documents could not be read or turned into game instances."""
