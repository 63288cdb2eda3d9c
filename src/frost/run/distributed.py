"""Data parallelism over texts on torch.distributed: which texts a rank plays, the LoRA gradients all-reduced, the
step's records gathered, rank 0 alone writing files.

A text's whole group (sampling, Frost's proposal and replacement, its loss) stays on one rank, so only the LoRA
gradients cross devices. `frost train` under `torchrun` or `accelerate launch` (they set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT) joins the process group itself: NCCL on GPUs, gloo on CPUs. The B texts of
a step are split into contiguous shards whose sizes differ by at most one; every rank scales its groups' losses by
1/B (the global B), so the summed gradient is exactly the single-process one. The sampling stream of each text is
derived from (seed, step, text index), so a run's moves do not depend on the number of ranks, nor on how texts are
batched, and a resume needs no per-rank random state.

With `model.fsdp_shards: N` (FSDP2, `frost.run.fsdp`) the ranks form groups of N that hold one copy of the frozen base
between them: every rank of a group plays the same texts with the same random streams (their calls into the sharded
layers must match one for one), texts are split over the groups (the replicas), records are gathered once per group
and checked to agree, and the LoRA gradients are averaged within a group and summed over the groups.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from frost.agreement import ALONE, Agreement
from frost.errors import ConfigError, FrostError

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
    shard_size: int = 1
    """Ranks that share one copy of the frozen base (FSDP2); 1: each rank holds the whole base."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes logs, samples and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one rank."""
        return self.size > 1

    @property
    def replicas(self) -> int:
        """Groups of `shard_size` ranks; the step's texts are split over them."""
        return self.size // self.shard_size

    @property
    def replica(self) -> int:
        """This rank's group."""
        return self.rank // self.shard_size


def world_from_env(shard_size: int = 1) -> World:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and accelerate set them (one process without them)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return World(rank=rank, size=size, local_rank=local, shard_size=shard_size)


def init_world(device: str, shard_size: int = 1) -> World:
    """Join the process group when launched with several ranks (NCCL when `device` resolves to CUDA, else gloo);
    returns the world. A single process returns World() and starts nothing. `shard_size` > 1 (FSDP groups) must
    divide the number of ranks."""
    world = world_from_env(shard_size)
    if shard_size > 1 and world.size % shard_size:
        raise ConfigError(
            f"model.fsdp_shards: {shard_size} ranks per copy of the base does not divide the {world.size} rank(s) "
            f"launched; start a multiple of {shard_size} (torchrun --nproc_per_node {shard_size}) or set it to 1"
        )
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
    """This rank's contiguous share of n items: its group's (every rank of an FSDP group gets the same share);
    shares differ by at most one (the first n % replicas groups get one more)."""
    base, extra = divmod(n, world.replicas)
    group = world.replica
    lo = group * base + min(group, extra)
    return slice(lo, lo + base + (1 if group < extra else 0))


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
    """Sum the gradients of `params` over the ranks' groups, in place (one flat buffer, one collective; the ranks of
    an FSDP group computed the same gradient, so the sum is divided by the group's size)."""
    if not world.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    with _collective(world, "the gradient all-reduce"):
        torch.distributed.all_reduce(flat)
    if world.shard_size > 1:
        flat /= world.shard_size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n


def gather(obj: Any, world: World, agree: Callable[[Any, Any], bool] | None = None) -> list[Any]:
    """Every group's `obj` (each rank's without FSDP groups), in rank order (picklable objects; on one process
    [obj]). The ranks of an FSDP group played the same texts: their objects must `agree` with the group's first
    rank's, or the run stops naming the ranks (kernels that are not deterministic make the ranks' moves differ)."""
    if not world.active:
        return [obj]
    out: list[Any] = [None] * world.size
    with _collective(world, "gathering the step's records"):
        torch.distributed.all_gather_object(out, obj)
    if world.shard_size == 1:
        return out
    leaders = out[:: world.shard_size]
    check = agree or (lambda a, b: a == b)
    for rank, item in enumerate(out):
        leader = rank - rank % world.shard_size
        if not check(leaders[leader // world.shard_size], item):
            raise DistributedError(
                f"rank {rank} and rank {leader} share one copy of the base (model.fsdp_shards) but played their texts "
                "differently; make the kernels deterministic (torch.use_deterministic_algorithms, "
                "CUBLAS_WORKSPACE_CONFIG=:4096:8) or set model.fsdp_shards: 1"
            )
    return leaders


class ShardGroupAgreement(Agreement):
    """The ranks of one FSDP group agreeing on pass sizes and out-of-memory back-off (`frost.agreement`): one
    all-reduce (MIN or MAX) over the group's process group per question."""

    shared = True

    def __init__(self, world: World, group: Any, device: torch.device | str = "cpu") -> None:
        self.world, self.group, self.device = world, group, device

    def _reduce(self, value: int, op: Any, what: str) -> int:
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        with _collective(self.world, what):
            torch.distributed.all_reduce(tensor, op=op, group=self.group)
        return int(tensor.item())

    def smallest(self, n: int) -> int:
        """The smallest `n` over the ranks of the group."""
        return self._reduce(n, torch.distributed.ReduceOp.MIN, "agreeing on a pass size")

    def any(self, flag: bool) -> bool:
        """Whether any rank of the group raised `flag`."""
        return self._reduce(int(flag), torch.distributed.ReduceOp.MAX, "agreeing on an out-of-memory back-off") > 0


def agreement(world: World, group: Any, device: torch.device | str) -> Agreement:
    """How this rank agrees with the ranks that share its base: `ALONE` without an FSDP group (or with a group of
    one), else a `ShardGroupAgreement` over `group` (the shard dimension's process group)."""
    if not world.active or world.shard_size == 1 or group is None:
        return ALONE
    return ShardGroupAgreement(world, group, device)


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
