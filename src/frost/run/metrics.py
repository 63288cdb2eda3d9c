"""The names and values of a training step's metrics (what `metrics.jsonl` and the other backends hold), in one
place: `group_summary` turns one group into a typed `GroupSummary` of plain numbers (gathered from every rank),
`step_metrics` turns the step's summaries and counts into its metrics, `phase_metrics` the phase timer's `time/*`.

Names are TRL's where the meaning is TRL's: `reward`, `reward_std`, `frac_reward_zero_std`, `kl`, `entropy`, `loss`,
`grad_norm`, `learning_rate`, `num_tokens` (since the run began), `completions/{mean,min,max}_length`,
`clip_ratio/region_mean`. `read_metrics` reads the names older runs used (`RENAMED`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frost.games import GameInstance
from frost.moves import content_lengths
from frost.phases import PhaseTimer
from frost.run import runlog
from frost.step import GroupRecord, RoundStats, pooled_rounds

PHASES = (
    "time/sample_s",
    "time/judge_s",
    "time/judge_pass_s",
    "time/select_s",
    "time/children_s",
    "time/loss_s",
    "time/policy_s",
    "time/reference_s",
    "time/optim_s",
)
"""Per-step wall time by phase: sampling; judge_s = judge_pass (rewards, with the backward when the rule uses the
gradient) + select (grid and top-D) + children (exact scoring, replacement); loss_s = policy (forward + backward of
the loss) + reference (adapter off); optimizer."""
FROST_KEYS = ("hit_rate", "mean_lift", "frac_replaced")
"""Frost's per-group metrics averaged over a step's groups (`frost/...`; `frost/rounds` too with several rounds)."""


RENAMED = {
    "reward_mean": "reward",
    "lr": "learning_rate",
    "move_tokens_mean": "completions/mean_length",
    "clip_frac": "clip_ratio/region_mean",
}
"""Training metrics renamed to TRL's names (2026-12): old name -> new name, for run folders written before."""


def upgrade_names(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record with today's names (records of older runs use the names of `RENAMED`)."""
    return {RENAMED.get(k, k): v for k, v in record.items()}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl with today's names (`upgrade_names`)."""
    return [upgrade_names(r) for r in runlog.read(path)]


def phase_metrics(timer: PhaseTimer, step_s: float) -> dict[str, float]:
    """The trainer's `time/*` keys: the step's wall seconds `step_s` and each phase's from the step's phase timer."""
    t = timer.totals
    out = {f"time/{name}_s": t.get(name, 0.0) for name in ("sample", "judge_pass", "select", "children", "policy")}
    out |= {"time/reference_s": t.get("reference", 0.0), "time/optim_s": t.get("optim", 0.0)}
    out["time/judge_s"] = out["time/judge_pass_s"] + out["time/select_s"] + out["time/children_s"]
    out["time/loss_s"] = out["time/policy_s"] + out["time/reference_s"]
    return {"time/step_s": step_s} | {k: out[k] for k in PHASES}


@dataclass
class GroupSummary:
    """What the step's metrics need of one group, as plain numbers (gathered from every rank)."""

    rewards: list[float]
    """The rewards of the group trained on (Frost: after replacement)."""
    parent_mean: float
    """Mean reward of the sampled moves."""
    loss: float
    kl: float
    entropy: float
    player_fwd_seqs: int
    player_bwd_seqs: int
    tokens: int
    lengths: list[int]
    """Content tokens of each move."""
    frost: RoundStats | None = None
    """Frost's statistics over this text's rounds (None for GRPO)."""

    @property
    def finite(self) -> bool:
        """Whether the rewards, loss and KL are finite."""
        return all(math.isfinite(v) for v in [*self.rewards, self.loss, self.kl])


def group_summary(g: GroupRecord) -> GroupSummary:
    """One group's summary (its loss filled by the step's first update; NaN before it)."""
    nan = float("nan")
    return GroupSummary(
        rewards=g.rewards.tolist(),
        parent_mean=float(g.parent_rewards.mean()),
        loss=float(g.loss.loss.detach()) if g.loss is not None else nan,
        kl=g.loss.kl if g.loss is not None else nan,
        entropy=g.loss.entropy if g.loss is not None else nan,
        player_fwd_seqs=g.player_fwd_seqs,
        player_bwd_seqs=g.player_bwd_seqs,
        tokens=g.tokens,
        lengths=_content_lengths(g.inst, g.moves),
        frost=pooled_rounds(g.frost_rounds) if g.frost is not None else None,
    )


@dataclass
class StepCounts:
    """What a step ran and how its update went, over every rank."""

    judge_fwd_seqs: int
    judge_bwd_seqs: int
    grad_norm: float
    lr: float
    skipped_steps: int
    clip_fracs: list[list[float]] | None = None
    """ppo-clip: each group's clipped fraction per update."""
    player_passes: tuple[int, int, int] | None = None
    """(player forward sequences, backward sequences, tokens) counted again over several updates (`train.epochs`)."""
    world_size: int | None = None
    fsdp: tuple[int, int, int] | None = None
    """(ranks per copy of the base, this rank's decoder-layer bytes, the layers' whole bytes) under FSDP."""
    tokens_before: int = 0
    """Tokens through any model in the run's earlier steps (for the cumulative `num_tokens`)."""


def step_metrics(
    step: int, summaries: list[GroupSummary], counts: StepCounts, *, frost: bool, rounds: int
) -> dict[str, Any]:
    """A training step's metrics from its groups' summaries (`group_summary`, every rank's) and its counts."""
    rewards = [g.rewards for g in summaries]
    stds = [_pstdev(r) for r in rewards]
    metrics: dict[str, Any] = {
        "step": step,
        "reward": statistics.fmean(r for rs in rewards for r in rs),
        "reward_std": statistics.fmean(stds),
        "reward_best": statistics.fmean(max(r) for r in rewards),
        "reward_parents_mean": statistics.fmean(g.parent_mean for g in summaries),
        "frac_reward_zero_std": statistics.fmean(s == 0 for s in stds),
        "kl": statistics.fmean(g.kl for g in summaries),
        "entropy": statistics.fmean(g.entropy for g in summaries),
        "loss": statistics.fmean(g.loss for g in summaries),
        "grad_norm": counts.grad_norm,
        "learning_rate": counts.lr,
        "judge_fwd_seqs": counts.judge_fwd_seqs,
        "judge_bwd_seqs": counts.judge_bwd_seqs,
        "player_fwd_seqs": sum(g.player_fwd_seqs for g in summaries),
        "player_bwd_seqs": sum(g.player_bwd_seqs for g in summaries),
        "tokens": sum(g.tokens for g in summaries),
        "completions/mean_length": statistics.fmean(float(n) for g in summaries for n in g.lengths),
        "completions/min_length": min(n for g in summaries for n in g.lengths),
        "completions/max_length": max(n for g in summaries for n in g.lengths),
    }
    if frost:
        for key in FROST_KEYS + (("rounds",) if rounds > 1 else ()):
            found = [float(getattr(g.frost, key)) for g in summaries if g.frost is not None]
            vals = [v for v in found if math.isfinite(v)]
            metrics[f"frost/{key}"] = statistics.fmean(vals) if vals else float("nan")
        rescored = sum(g.frost.rescored for g in summaries if g.frost is not None)
        if rescored:  # low-precision judges: parents re-scored beside their children, counted in judge_fwd_seqs
            metrics["frost/rescored_seqs"] = rescored
    if counts.clip_fracs is not None:
        metrics["clip_ratio/region_mean"] = statistics.fmean(x for f in counts.clip_fracs for x in f)
        metrics["updates"] = min(len(f) for f in counts.clip_fracs)
    if counts.player_passes is not None:
        metrics["player_fwd_seqs"], metrics["player_bwd_seqs"], metrics["tokens"] = counts.player_passes
    metrics["num_tokens"] = counts.tokens_before + metrics["tokens"]
    metrics["train/skipped_steps"] = counts.skipped_steps
    if counts.world_size is not None:
        metrics["world_size"] = counts.world_size
    if counts.fsdp is not None:
        metrics["fsdp/shards"], metrics["fsdp/layer_bytes_per_rank"], metrics["fsdp/layer_bytes"] = counts.fsdp
    return metrics


def _pstdev(values: list[float]) -> float:
    """Population standard deviation; NaN when a value is not finite (statistics.pstdev fails on NaN)."""
    if not all(math.isfinite(v) for v in values):
        return float("nan")
    return statistics.pstdev(values)


def _content_lengths(inst: GameInstance, moves: torch.Tensor) -> list[int]:
    return [int(n) for n in content_lengths(inst, moves).tolist()]
