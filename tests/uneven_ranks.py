"""`torchrun ... tests/uneven_ranks.py frost-args...`: run the frost CLI on each rank, with rank 1 made unlike the
others as a GPU rank can be: it proposes a smaller automatic micro-batch (as if it had read less free memory), and
it runs out of memory at its first judge pass and its first loss pass (the allocation `frost.agreement.fits` makes
before each pass of an FSDP group). The ranks of a group must still make the same calls into the sharded layers."""

from __future__ import annotations

import os
import sys

import torch

import frost.agreement
import frost.run.build
from frost.cli import main

if os.environ.get("RANK") == "1":
    real_micro_batch = frost.run.build.auto_micro_batch
    real_allocate = frost.agreement._allocate
    failed: set[str] = set()

    def less_free_memory(config, *args, **kwargs):  # type: ignore[no-untyped-def]
        return max(1, real_micro_batch(config, *args, **kwargs) // 2)

    def out_of_memory_once(nbytes, device, what):  # type: ignore[no-untyped-def]
        if what not in failed:
            failed.add(what)
            raise torch.OutOfMemoryError(f"out of memory (made by tests/uneven_ranks.py at the first {what} pass)")
        real_allocate(nbytes, device, what)

    frost.run.build.auto_micro_batch = less_free_memory
    frost.agreement._allocate = out_of_memory_once

sys.exit(main(sys.argv[1:]))
