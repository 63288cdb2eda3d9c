"""User-facing errors: every message is one line that names the field and the fix; reading a YAML file with such
errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class FrostError(Exception):
    """An error caused by the user's input or environment; the CLI prints it on one line and exits with code 2."""


class ConfigError(FrostError):
    """A configuration field has an invalid value."""


class ModelLoadError(FrostError):
    """A model or tokenizer could not be loaded."""


class DataError(FrostError):
    """Documents could not be read or turned into game instances."""


def read_yaml_file(path: Path, where: str, *, missing: str) -> Any:
    """The contents of the YAML file `path`; one-line errors: `missing` when it is not a file, and `where: PATH is
    not valid YAML (the parser's first line)` when it does not parse (config files, game files, experiment files)."""
    import yaml

    if not path.is_file():
        raise ConfigError(missing)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {path} is not valid YAML ({str(exc).splitlines()[0]})") from exc
