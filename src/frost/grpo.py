"""The GRPO loss of §3.4, for GRPO and Frost-GRPO alike (Frost applies it to the post-replacement group).

For one text with K moves y_k (Frost: y*_k), rewards r_k, player log-probabilities log pi(y_k | P) and, at each move
position, the player's and the reference's full distributions:

    A_k  = r_k - mean_k' r_k'                                   (no std scaling)
    loss = -(1/K) sum_k A_k log pi(y_k | P)  +  beta * (1/K) sum_k sum_j KL(pi(.|P, y_k<j) || pi_ref(.|P, y_k<j))

REINFORCE without ratio clipping; the KL is over the whole vocabulary, summed over move positions, averaged over the
group. A step averages this loss over its texts.
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
) -> LossTerms:
    """The loss of one group: `policy_logprobs`, `reference_logprobs` [K, L, V] (log-distributions at each move
    position, the policy's with gradient), `moves` [K, L], `rewards` [K]."""
    k = moves.shape[0]
    advantages = group_advantages(rewards.detach().to(policy_logprobs.dtype))
    move_logprob = policy_logprobs.gather(-1, moves.unsqueeze(-1)).squeeze(-1).sum(-1)
    policy = -(advantages * move_logprob).sum() / k
    kl = full_kl(policy_logprobs, reference_logprobs.detach()).sum(-1).sum() / k
    with torch.no_grad():
        p = policy_logprobs.exp()
        entropy = -(p * torch.where(p > 0, policy_logprobs, torch.zeros_like(p))).sum(-1).mean()
    return LossTerms(
        loss=policy + beta * kl, policy=float(policy.detach()), kl=float(kl.detach()), entropy=float(entropy)
    )
