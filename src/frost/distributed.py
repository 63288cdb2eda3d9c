"""Data parallelism over texts on torch.distributed: which texts a rank plays, the LoRA gradients all-reduced, the
step's records gathered, rank 0 alone writing files.

A text's whole group (sampling, Frost's proposal and replacement, its loss) stays on one rank, so only the LoRA
gradients cross devices. `frost train` under `torchrun` or `accelerate launch` (they set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT) joins the process group itself: NCCL on GPUs, gloo on CPUs. The B texts of
a step are split into contiguous shards whose sizes differ by at most one; every rank scales its groups' losses by
1/B (the global B), so the summed gradient is exactly the single-process one. The sampling stream of each text is
derived from (seed, step, text index), so a run's moves do not depend on the number of ranks, nor on how texts are
batched, and a resume needs no per-rank random state.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from frost.errors import FrostError

TIMEOUT_ENV = "FROST_DIST_TIMEOUT"
"""Seconds a collective waits for the other ranks before failing (default 300)."""


class DistributedError(FrostError):
    """A collective failed: another rank exited or stopped answering."""


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes logs, samples and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one rank."""
        return self.size > 1


def world_from_env() -> World:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and accelerate set them (one process without them)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return World(rank=rank, size=size, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))))


def init_world(device: str) -> World:
    """Join the process group when launched with several ranks (NCCL when `device` resolves to CUDA, else gloo);
    returns the world. A single process returns World() and starts nothing."""
    world = world_from_env()
    if not world.active or not torch.distributed.is_available():
        return world
    if not torch.distributed.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300")))
        if cuda:
            torch.cuda.set_device(world.local_rank)
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return world


def rank_device(device: str, world: World) -> str:
    """The device this rank uses: its own GPU (`cuda:LOCAL_RANK`) when the run is on CUDA and has several ranks."""
    if not world.active:
        return device
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{world.local_rank}"
    return device


def shard(n: int, world: World) -> slice:
    """This rank's contiguous share of n items; shares differ by at most one (the first n % size ranks get one
    more)."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return slice(lo, lo + base + (1 if world.rank < extra else 0))


def text_seed(seed: int, step: int, index: int, stream: str = "train") -> int:
    """The seed of one text's random stream at one step (sampling, the random rule): the same on any rank."""
    digest = hashlib.sha256(f"{stream}:{seed}:{step}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextmanager
def _collective(world: World, what: str) -> Iterator[None]:
    try:
        yield
    except (RuntimeError, ValueError, OSError) as exc:  # gloo/NCCL report a lost peer or a timeout this way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(
            f"rank {world.rank} of {world.size}: {what} failed ({first[:200]}); another rank exited or stopped "
            f"answering (collectives time out after ${TIMEOUT_ENV}, default 300 s)"
        ) from exc


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], world: World) -> None:
    """Sum the gradients of `params` over the ranks, in place (one flat buffer, one collective)."""
    if not world.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    with _collective(world, "the gradient all-reduce"):
        torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order (picklable objects; on one process [obj])."""
    if not world.active:
        return [obj]
    out: list[Any] = [None] * world.size
    with _collective(world, "gathering the step's records"):
        torch.distributed.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, world: World, device: torch.device | str = "cpu") -> bool:
    """Whether `flag` is true on some rank (e.g. a stop signal), agreed by all (`device`: where the backend's
    tensors live, the rank's GPU under NCCL)."""
    if not world.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    with _collective(world, "agreeing on a stop"):
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(world: World) -> None:
    """Wait for every rank."""
    if world.active:
        with _collective(world, "a barrier"):
            torch.distributed.barrier()


def shutdown(world: World) -> None:
    """Leave the process group (when this process joined one)."""
    if world.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
