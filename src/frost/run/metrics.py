"""The names and values of a training step's metrics (what `metrics.jsonl` and TensorBoard hold), in one place:
`group_summary` turns one group into plain numbers (gathered from every rank), `step_metrics` turns the step's
summaries and counts into its metrics (TRL's names where TRL has one: `reward`, `reward_std`, `frac_reward_zero_std`,
`kl`, `entropy`), `phase_metrics` the phase timer's `time/*`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from frost.games import GameInstance
from frost.moves import content_lengths
from frost.phases import PhaseTimer
from frost.step import GroupRecord

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


def phase_metrics(timer: PhaseTimer) -> dict[str, float]:
    """The trainer's `time/*` keys from a step's phase timer."""
    t = timer.totals
    out = {f"time/{name}_s": t.get(name, 0.0) for name in ("sample", "judge_pass", "select", "children", "policy")}
    out |= {"time/reference_s": t.get("reference", 0.0), "time/optim_s": t.get("optim", 0.0)}
    out["time/judge_s"] = out["time/judge_pass_s"] + out["time/select_s"] + out["time/children_s"]
    out["time/loss_s"] = out["time/policy_s"] + out["time/reference_s"]
    return {k: out[k] for k in PHASES}


def group_summary(g: GroupRecord) -> dict[str, Any]:
    """What the step's metrics need of one group, as plain numbers (gathered from every rank)."""
    return {
        "rewards": g.rewards.tolist(),
        **g.metrics(),
        "player_fwd_seqs": g.player_fwd_seqs,
        "player_bwd_seqs": g.player_bwd_seqs,
        "tokens": g.tokens,
        "lengths": _content_lengths(g.inst, g.moves),
    }


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


def step_metrics(
    step: int, summaries: list[dict[str, Any]], counts: StepCounts, *, frost: bool, rounds: int
) -> dict[str, Any]:
    """A training step's metrics from its groups' summaries (`group_summary`, every rank's) and its counts."""
    rewards = [g["rewards"] for g in summaries]
    stds = [_pstdev(r) for r in rewards]
    metrics: dict[str, Any] = {
        "step": step,
        "reward_mean": statistics.fmean(r for rs in rewards for r in rs),
        "reward_std": statistics.fmean(stds),
        "reward_best": statistics.fmean(max(r) for r in rewards),
        "reward_parents_mean": statistics.fmean(g["parent_mean"] for g in summaries),
        "frac_reward_zero_std": statistics.fmean(s == 0 for s in stds),
        "kl": statistics.fmean(g["kl"] for g in summaries),
        "entropy": statistics.fmean(g["entropy"] for g in summaries),
        "loss": statistics.fmean(g["loss"] for g in summaries),
        "grad_norm": counts.grad_norm,
        "lr": counts.lr,
        "judge_fwd_seqs": counts.judge_fwd_seqs,
        "judge_bwd_seqs": counts.judge_bwd_seqs,
        "player_fwd_seqs": sum(g["player_fwd_seqs"] for g in summaries),
        "player_bwd_seqs": sum(g["player_bwd_seqs"] for g in summaries),
        "tokens": sum(g["tokens"] for g in summaries),
        "move_tokens_mean": statistics.fmean(float(n) for g in summaries for n in g["lengths"]),
    }
    if frost:
        for key in FROST_KEYS + (("rounds",) if rounds > 1 else ()):
            vals = [g[f"frost/{key}"] for g in summaries if math.isfinite(g[f"frost/{key}"])]
            metrics[f"frost/{key}"] = statistics.fmean(vals) if vals else float("nan")
        rescored = sum(g.get("frost/rescored", 0) for g in summaries)
        if rescored:  # low-precision judges: parents re-scored beside their children, counted in judge_fwd_seqs
            metrics["frost/rescored_seqs"] = rescored
    if counts.clip_fracs is not None:
        metrics["clip_frac"] = statistics.fmean(x for f in counts.clip_fracs for x in f)
        metrics["updates"] = min(len(f) for f in counts.clip_fracs)
    if counts.player_passes is not None:
        metrics["player_fwd_seqs"], metrics["player_bwd_seqs"], metrics["tokens"] = counts.player_passes
    metrics["train/skipped_steps"] = counts.skipped_steps
    if counts.world_size is not None:
        metrics["world_size"] = counts.world_size
    if counts.fsdp is not None:
        metrics["fsdp/shards"], metrics["fsdp/layer_bytes_per_rank"], metrics["fsdp/layer_bytes"] = counts.fsdp
    return metrics


def finite_summary(summary: dict[str, Any]) -> bool:
    """Whether a group's rewards, loss and KL are finite."""
    values = [*summary["rewards"], summary["loss"], summary["kl"]]
    return all(math.isfinite(v) for v in values)


def _pstdev(values: list[float]) -> float:
    """Population standard deviation; NaN when a value is not finite (statistics.pstdev fails on NaN)."""
    if not all(math.isfinite(v) for v in values):
        return float("nan")
    return statistics.pstdev(values)


def _content_lengths(inst: GameInstance, moves: torch.Tensor) -> list[int]:
    return [int(n) for n in content_lengths(inst, moves).tolist()]
