"""A phase timer: wall time per named phase of a step, summed over calls, passed into the code it times.

On CUDA the clock synchronises the device first, so a phase is charged for the kernels it queued.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class PhaseTimer:
    """Sums wall time per phase: `with timer.phase("sample"): ...`."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.totals: defaultdict[str, float] = defaultdict(float)

    def clock(self) -> float:
        """Wall time in seconds after the device's queued work has finished."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the enclosed work to `name`."""
        start = self.clock()
        try:
            yield
        finally:
            self.totals[name] += self.clock() - start


class NoTimer(PhaseTimer):
    """A timer that measures nothing (no device synchronisation): the default where nobody reads the phases."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Run the block untimed."""
        yield
