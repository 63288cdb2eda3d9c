"""Inference on any game: the best move for one game instance, by sampling K moves and refining them with Frost
rounds (each round is `frost.frost_step`, the same code that trains)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from frost.frost import FrostRecord, frost_step
from frost.games import GameInstance
from frost.judge import Judge
from frost.moves import move_masks
from frost.sampling import player_logprobs
from frost.step import shared_prefix_sampler


@dataclass
class InfillResult:
    """The refined group and the history of each Frost round."""

    moves: torch.Tensor
    """[K, L] the final group, best first."""
    rewards: torch.Tensor
    """[K] their exact rewards, descending."""
    initial_best: float
    """Best reward of the sampled group before any refinement."""
    rounds: list[FrostRecord] = field(default_factory=list)


def infill(
    judge: Judge,
    player: Any,
    inst: GameInstance,
    *,
    K: int = 8,
    rounds: int = 3,
    rule: str = "full-gated",
    D: int = 16,
    tau: float = 1e-4,
    temperature: float = 1.0,
    forbidden: torch.Tensor,
    generator: torch.Generator | None = None,
    rank_by: str = "reward",
) -> InfillResult:
    """Sample K moves, then run `rounds` Frost proposal+replacement rounds on the group.

    `forbidden` [V] are the model's forbidden tokens (`frost.models.forbidden_token_mask`); the game instance adds
    its own. Each round re-reads the player's distributions for the current group (one forward) so the gate sees the
    prefixes the mutated moves now have. The group never gets worse: replacement only accepts strict improvements.
    """
    masks = move_masks(inst, forbidden)
    sampled = shared_prefix_sampler(player, [inst], K, [masks], temperature, generator)[0]
    moves, dists = sampled.moves, sampled.logprobs
    history: list[FrostRecord] = []
    rewards = judge.rewards(inst, moves)
    initial_best = float(rewards.max())
    for _ in range(rounds):
        rec = frost_step(
            judge, inst, moves, dists, rule=rule, budget=D, tau=tau, forbidden=masks.content, generator=generator,
            rank_by=rank_by,
        )  # fmt: skip
        history.append(rec)
        moves, rewards = rec.moves, rec.rewards
        if rec.frac_replaced == 0.0:
            break
        dists = player_logprobs(player, inst.prompt_ids, moves, temperature=temperature, forbidden=masks.sampling)
    order = torch.argsort(rewards, descending=True)
    return InfillResult(moves=moves[order], rewards=rewards[order], initial_best=initial_best, rounds=history)
