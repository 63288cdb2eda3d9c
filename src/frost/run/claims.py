"""Claims: which of several worker processes on one experiment does a piece of its work (a run, a diagnostic)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def claim(path: Path) -> IO[str] | None:
    """Claim a piece of work for this process, so that several `frost experiment` processes on one file (one per GPU,
    say) share it out: an exclusive `flock` on the claim file `path` (`OUT/claims/ARM-seedS` for a run), held while the
    file stays open and released by the system when the process ends, however it ends. The file is kept (deleting it
    could let two workers lock two different files of one name); it names the last holder. Returns the open claim
    (close it to release), or None when a live worker holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    held = path.open("a+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another open claim holds it
        held.close()
        return None
    held.seek(0)
    held.truncate()
    held.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}) + "\n")
    held.flush()
    return held


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` while the block runs, waiting for another process's turn (a shared
    record that several workers read, change and write, e.g. an experiment's `choices.json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield
