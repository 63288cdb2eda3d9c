"""The GRPO loss of §3.4, for GRPO and Frost-GRPO alike (Frost applies it to the post-replacement group).

For one text with K moves y_k (Frost: y*_k), rewards r_k, player log-probabilities log pi(y_k | P) and, at each move
position, the player's and the reference's full distributions:

    A_k  = r_k - mean_k' r_k'                                   (no std scaling)
    loss = -(1/K) sum_k A_k log pi(y_k | P)  +  beta * (1/K) sum_k sum_j KL(pi(.|P, y_k<j) || pi_ref(.|P, y_k<j))

REINFORCE without ratio clipping; the KL is over the whole vocabulary, summed over move positions, averaged over the
group. A step averages this loss over its texts. For variable-length moves, the positions are the player's decisions
(the content tokens and the stop token that ended the move; `frost.moves.decision_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_k = r_k - mean(r) over the last dimension (the group)."""
    return rewards - rewards.mean(dim=-1, keepdim=True)


def full_kl(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) over the last (vocabulary) dimension; entries where pi is 0 contribute 0."""
    p = policy_logprobs.exp()
    diff = torch.where(p > 0, policy_logprobs - reference_logprobs, torch.zeros_like(policy_logprobs))
    return (p * diff).sum(-1)


@dataclass
class LossTerms:
    """The loss of one text's group and its parts (the parts detached)."""

    loss: torch.Tensor
    """Scalar, differentiable."""
    policy: float
    """-(1/K) sum_k A_k log pi(y_k)."""
    kl: float
    """(1/K) sum_k sum_j KL_kj (before beta)."""
    entropy: float
    """Mean per-position entropy of the policy at the moves."""


def grpo_loss(
    policy_logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    moves: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    mask: torch.Tensor | None = None,
) -> LossTerms:
    """The loss of one group: `policy_logprobs`, `reference_logprobs` [K, L, V] (log-distributions at each move
    position, the policy's with gradient), `moves` [K, L], `rewards` [K]; `mask` [K, L] keeps the positions that
    count (default: all)."""
    k = moves.shape[0]
    weight = torch.ones(moves.shape, dtype=policy_logprobs.dtype, device=moves.device) if mask is None else mask
    weight = weight.to(policy_logprobs.dtype)
    advantages = group_advantages(rewards.detach().to(policy_logprobs.dtype))
    move_logprob = (policy_logprobs.gather(-1, moves.unsqueeze(-1)).squeeze(-1) * weight).sum(-1)
    policy = -(advantages * move_logprob).sum() / k
    kl = (full_kl(policy_logprobs, reference_logprobs.detach()) * weight).sum() / k
    with torch.no_grad():
        p = policy_logprobs.exp()
        per_position = -(p * torch.where(p > 0, policy_logprobs, torch.zeros_like(p))).sum(-1)
        entropy = (per_position * weight).sum() / weight.sum().clamp_min(1)
    return LossTerms(
        loss=policy + beta * kl, policy=float(policy.detach()), kl=float(kl.detach()), entropy=float(entropy)
    )
