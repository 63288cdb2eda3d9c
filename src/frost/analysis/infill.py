"""Inference on any game: the best move for one game instance, by sampling K moves and refining them with Frost
rounds (`frost.step.frost_rounds`, the same code that trains with `frost.rounds`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from frost.games import GameInstance
from frost.judge import Judge
from frost.moves import move_masks
from frost.proposal import FrostInput, FrostRecord
from frost.step import GroupSettings, frost_rounds, shared_prefix_sampler


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
    its own. Each round re-reads the player's distributions of the moves the last round replaced (one forward) so the
    gate sees the prefixes the mutated moves now have; rounds stop when one replaces nothing (deterministic rules).
    The group never gets worse: replacement only accepts strict improvements.
    """
    masks = move_masks(inst, forbidden)
    sampled = shared_prefix_sampler(player, [inst], K, [masks], temperature, generator)[0]
    moves, rewards = sampled.moves, judge.rewards(inst, sampled.moves)
    initial_best = float(rewards.max())
    history: list[FrostRecord] = []
    if rounds > 0:
        settings = GroupSettings(
            algorithm="frost", K=K, rule=rule, budget=D, tau=tau, rank_by=rank_by, temperature=temperature,
            rounds=rounds,
        )  # fmt: skip
        text = FrostInput(inst, sampled.moves, sampled.logprobs, masks.content)
        groups, _ = frost_rounds(player, judge, [text], settings, sampling_masks=[masks.sampling], generator=generator)
        history = groups[0]
        moves, rewards = history[-1].moves, history[-1].rewards
    order = torch.argsort(rewards, descending=True)
    return InfillResult(moves=moves[order], rewards=rewards[order], initial_best=initial_best, rounds=history)
