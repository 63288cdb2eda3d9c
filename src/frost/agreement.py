"""How the ranks that share one copy of the frozen base (an FSDP group, `model.fsdp_shards`) agree on the size of
each pass and on backing off from out-of-memory.

Every rank of such a group must make the same calls into the sharded layers (each call gathers every layer's
weights from all of them), so no rank may chunk a pass on its own: a rank that read more free memory, or that ran out
of memory where the others did not, would wait on a collective its peers never start. The judge and the loss ask an
`Agreement` instead: `smallest(n)` is the smallest n any rank of the group proposed, `any(flag)` whether a rank
raised the flag. Before each pass of a group, `fits` allocates the pass's largest transient buffer (the float32
logits) on every rank and agrees on the outcome, so an out-of-memory error there halves the pass on all the ranks at
once. An out-of-memory error that this probe did not foresee, inside the sharded layers, cannot be undone apart: the
run stops there (torchrun then ends the other ranks). A process that shares its base with no one agrees with itself
(`ALONE`) and backs off alone, as before.
"""

from __future__ import annotations

import torch


class Agreement:
    """One process that shares its base with no other rank: every question is answered by itself."""

    shared = False
    """Whether other ranks must make the same calls into the model (an FSDP group of more than one rank)."""

    def smallest(self, n: int) -> int:
        """The smallest of the values the group's ranks propose."""
        return n

    def any(self, flag: bool) -> bool:
        """Whether any rank of the group raised `flag`."""
        return flag


ALONE = Agreement()
"""The agreement of a process alone."""


def _allocate(nbytes: int, device: torch.device, what: str) -> None:
    """Allocate and free `nbytes` on `device` (raises torch.OutOfMemoryError when they do not fit)."""
    del what  # named for tests that make one rank run out of memory at one kind of pass
    buffer = torch.empty(max(int(nbytes), 1), dtype=torch.uint8, device=device)
    del buffer


def fits(agreement: Agreement, nbytes: int, device: torch.device, what: str) -> bool:
    """Whether every rank of the group can hold a transient buffer of `nbytes` now (True at once for a process
    alone, which backs off where it runs out of memory instead). `what` names the pass (judge, loss)."""
    if not agreement.shared:
        return True
    ok = True
    try:
        _allocate(nbytes, device, what)
    except torch.OutOfMemoryError:
        ok = False
    return not agreement.any(not ok)
