"""One group of a training step, the same code for GRPO and Frost-GRPO, for training, the bench and the analyses.

`play_group` samples K moves for one game instance and scores them: GRPO keeps them (one judge forward), Frost runs
`frost.frost_step` (Algorithm 1 lines 3-7: one judge pass, proposal, exact scoring, strict-improvement replacement).
`group_loss` back-propagates the GRPO loss of the (replaced) group into the player's adapter. Both charge their
phases to a `PhaseTimer` passed in (sample, judge_pass, select, children, policy, reference) and return typed
records; the trainer only adds the optimiser, logging and checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from frost.frost import FrostRecord, frost_step
from frost.games import GameInstance
from frost.grpo import LossTerms, grpo_loss
from frost.judge import Judge
from frost.moves import MoveMasks, decision_mask, move_masks
from frost.phases import NoTimer, PhaseTimer
from frost.sampling import SampledMoves, policy_distributions, sample_moves

ALGORITHMS = ("grpo", "frost")


@dataclass(frozen=True)
class GroupSettings:
    """What one group needs to know (from the run's config)."""

    algorithm: str = "frost"
    """grpo or frost."""
    K: int = 4
    """Moves sampled per text."""
    rule: str = "taylor-gated"
    """Frost's selection rule."""
    budget: int = 4
    """D, candidates scored exactly."""
    tau: float = 1e-4
    """Frost's probability gate."""
    rank_by: str = "reward"
    """Frost's ranking target."""
    temperature: float = 1.0
    """Sampling temperature."""
    beta: float = 0.1
    """KL coefficient."""
    shared_prompt: bool = True
    """Encode the prompt once for the group in the loss (False: K full sequences, the naive path)."""


class Sampler(Protocol):
    """How a group's moves are drawn: (player, instance, K, masks, temperature, generator) -> SampledMoves."""

    def __call__(
        self,
        player: Any,
        inst: GameInstance,
        k: int,
        masks: MoveMasks,
        temperature: float,
        generator: torch.Generator | None,
    ) -> SampledMoves: ...


def shared_prefix_sampler(
    player: Any,
    inst: GameInstance,
    k: int,
    masks: MoveMasks,
    temperature: float,
    generator: torch.Generator | None,
) -> SampledMoves:
    """K moves from one prefilled prompt (`frost.sampling.sample_moves`)."""
    return sample_moves(
        player,
        inst.prompt_ids,
        k,
        inst.move_length,
        temperature=temperature,
        forbidden=masks.sampling,
        stop_id=inst.stop_id,
        generator=generator,
    )


@dataclass
class GroupRecord:
    """Everything one text's group did."""

    inst: GameInstance
    sampled: SampledMoves
    """The on-policy moves and the distributions they were drawn from."""
    moves: torch.Tensor
    """[K, L] the group trained on (Frost: after replacement)."""
    rewards: torch.Tensor
    """[K] its exact rewards."""
    parent_rewards: torch.Tensor
    """[K] the exact rewards of the sampled moves."""
    masks: MoveMasks
    frost: FrostRecord | None = None
    """Frost's proposal and replacement (None for GRPO)."""
    loss: LossTerms | None = None
    """Filled by `group_loss`."""
    player_fwd_seqs: int = 0
    player_bwd_seqs: int = 0
    tokens: int = 0
    """Tokens through the player and the judge (padding excluded)."""

    def metrics(self) -> dict[str, float]:
        """Scalars of this group (Frost's under `frost/`)."""
        out = {"parent_mean": float(self.parent_rewards.mean())}
        if self.frost is not None:
            out |= {
                "frost/hit_rate": self.frost.hit_rate,
                "frost/mean_lift": self.frost.mean_lift,
                "frost/frac_replaced": self.frost.frac_replaced,
            }
        if self.loss is not None:
            out |= {"loss": float(self.loss.loss.detach()), "kl": self.loss.kl, "entropy": self.loss.entropy}
        return out


def play_group(
    player: Any,
    judge: Judge,
    inst: GameInstance,
    settings: GroupSettings,
    *,
    base_forbidden: torch.Tensor,
    generator: torch.Generator | None = None,
    timer: PhaseTimer | None = None,
    sampler: Sampler = shared_prefix_sampler,
) -> GroupRecord:
    """Sample K moves and score them: GRPO keeps them, Frost proposes and replaces (`frost_step`)."""
    timer = timer or NoTimer()
    masks = move_masks(inst, base_forbidden)
    judge_tokens = judge.forward_tokens
    with timer.phase("sample"):
        sampled = sampler(player, inst, settings.K, masks, settings.temperature, generator)
    record: FrostRecord | None = None
    if settings.algorithm == "frost":
        record = frost_step(
            judge, inst, sampled.moves, sampled.logprobs, rule=settings.rule, budget=settings.budget,
            tau=settings.tau, forbidden=masks.content, generator=generator, rank_by=settings.rank_by, timer=timer,
        )  # fmt: skip
        moves, rewards, parent_rewards = record.moves, record.rewards, record.parent_rewards
    else:
        with timer.phase("judge_pass"):
            rewards = judge.rewards(inst, sampled.moves)
        moves, parent_rewards = sampled.moves, rewards
    return GroupRecord(
        inst=inst,
        sampled=sampled,
        moves=moves,
        rewards=rewards,
        parent_rewards=parent_rewards,
        masks=masks,
        frost=record,
        player_fwd_seqs=settings.K,
        tokens=len(inst.prompt_ids) + settings.K * inst.move_length + judge.forward_tokens - judge_tokens,
    )


def group_loss(
    player: Any,
    record: GroupRecord,
    settings: GroupSettings,
    *,
    reference: Callable[[], contextlib.AbstractContextManager[Any]],
    scale: float = 1.0,
    timer: PhaseTimer | None = None,
) -> LossTerms:
    """The GRPO loss of a group (policy forward with gradient, reference forward under `reference`, e.g. the
    adapter switched off), back-propagated times `scale` (1/B for a step's mean). Fills `record.loss`."""
    timer = timer or NoTimer()
    inst, moves = record.inst, record.moves
    kwargs = {
        "temperature": settings.temperature,
        "forbidden": record.masks.sampling,
        "shared_prompt": settings.shared_prompt,
    }
    with timer.phase("policy"):
        player.train()
        try:
            policy = policy_distributions(player, inst.prompt_ids, moves, **kwargs)  # type: ignore[arg-type]
        finally:
            player.eval()
    with timer.phase("reference"), torch.no_grad(), reference():
        ref = policy_distributions(player, inst.prompt_ids, moves, **kwargs)  # type: ignore[arg-type]
    with timer.phase("policy"):
        terms = grpo_loss(policy, ref, moves, record.rewards, settings.beta, mask=decision_mask(inst, moves))
        (terms.loss * scale).backward()
    k = moves.shape[0]
    record.loss = terms
    record.player_fwd_seqs += 2 * k
    record.player_bwd_seqs += k
    prompt_tokens = len(inst.prompt_ids) * (1 if settings.shared_prompt else k)
    record.tokens += 2 * (prompt_tokens + k * inst.move_length)
    return terms
