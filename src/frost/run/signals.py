"""Stopping a run cleanly: the first SIGINT or SIGTERM asks the loop to stop after the current step (which then
saves a checkpoint); a second one stops at once (KeyboardInterrupt), saving nothing, so the last checkpoint stays
intact."""

from __future__ import annotations

import signal
from types import TracebackType
from typing import Any


class StopSignals:
    """A context that catches SIGINT and SIGTERM while the loop runs; `received` is the first signal caught."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: stop now, saving nothing (checkpoints are atomic)
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
