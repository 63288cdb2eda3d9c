"""A run's JSON-lines logs (metrics.jsonl, samples.jsonl): appended a whole line per write, read back tolerating
the one line a kill can tear (the last), trimmed atomically on resume.

A process killed while appending leaves at most one torn line, at the end (a line is written with one `write`
of its text and newline). Readers skip it; `trim` drops it and every record after a checkpoint's step, writing
the kept lines to a temporary file that is renamed over the log, so a kill during the trim loses nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from frost.errors import FrostError


class LogWriteError(FrostError):
    """A log could not be appended to (e.g. the disk is full)."""


def append(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append each record as one JSON line; a failed write (a full disk) is a `LogWriteError` naming the file."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    if not text:
        return
    try:
        with path.open("a") as f:
            f.write(text)
    except OSError as exc:
        raise LogWriteError(
            f"{path}: could not be written ({exc.strerror or exc}); the last checkpoint is intact: free disk space "
            "and resume with --resume (a partly written line is dropped then)"
        ) from None


def read(path: Path) -> list[dict[str, Any]]:
    """The complete records of a log ([] when it does not exist); a torn last line is skipped, a broken line
    anywhere else is an error naming the file and line."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    lines.pop()  # the text after the last newline: "" unless a write was cut short
    records = []
    for number, line in enumerate(lines, 1):  # a cut write keeps a prefix: every line before the last "\n" is whole
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise FrostError(
                f"{path}:{number}: not a JSON record; the log is damaged, restore it or start a new run"
            ) from None
    return records


def trim(path: Path, step: int) -> None:
    """Keep the complete records of steps <= `step` (resuming from that step's checkpoint), atomically."""
    if not path.is_file():
        return
    kept = [r for r in read(path) if r["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
