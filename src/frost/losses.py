"""The GRPO loss of §3.4, for GRPO and Frost-GRPO alike (Frost applies it to the post-replacement group), with the
advantage estimators and the clipped-ratio loss that researchers compare against.

For one text with K moves y_k (Frost: y*_k), rewards r_k, player log-probabilities log pi(y_k[j] | P, y_k<j) and, at
each move position, the player's and the reference's full distributions:

    A_k  = advantage(r)_k                                       (`ADVANTAGES`; the paper: r_k - mean(r))
    reinforce:  policy = -(1/K) sum_k A_k sum_j log pi(y_k[j])
    ppo-clip:   policy = -(1/K) sum_k sum_j min(rho_kj A_k, clip(rho_kj, 1 - clip_low, 1 + clip_high) A_k),
                rho_kj = pi(y_k[j]) / pi_old(y_k[j])
    loss = policy + beta * (1/K) sum_k sum_j KL(pi(.|P, y_k<j) || pi_ref(.|P, y_k<j))

REINFORCE (the paper) has no ratio; the KL is over the whole vocabulary, summed over move positions, averaged over
the group. Both losses sum over a move's positions (no length normalisation), so at rho = 1 (the first update of a
step) the clipped loss has exactly REINFORCE's gradient. A step averages this loss over its texts. For
variable-length moves, the positions are the player's decisions (`frost.moves.decision_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frost.config import ADVANTAGES, LOSSES
from frost.errors import ConfigError

STD_EPS = 1e-6
"""The `std` advantage's epsilon (verl's `grpo` estimator with its std normalisation)."""


def group_advantages(rewards: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """Advantages over the last dimension (the group of K moves):

    * `mean`: A_k = r_k - mean(r) (the paper's Frost-GRPO; Dr. GRPO);
    * `std`: A_k = (r_k - mean(r)) / (std(r) + 1e-6), std with Bessel's correction (the original GRPO of
      DeepSeekMath, verl's `grpo`);
    * `rloo`: A_k = r_k - mean of the other K-1 rewards = K/(K-1) (r_k - mean(r)) (RLOO, Ahmadian et al. 2024);
    * `passk`: the group's best move gets r_max - r_second_max, every other move 0 (verl's `grpo_passk`, after
      arXiv:2503.19595, without its optional std normalisation); the first of tied best moves is the best.

    `std`, `rloo` and `passk` need K >= 2."""
    if kind == "mean":
        return rewards - rewards.mean(dim=-1, keepdim=True)
    k = rewards.shape[-1]
    if kind not in ADVANTAGES:
        raise ConfigError(f"train.advantage must be one of {', '.join(ADVANTAGES)}; got {kind!r}")
    if k < 2:
        raise ConfigError(f"train.advantage {kind} needs at least 2 moves per group (train.K >= 2); got {k}")
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    if kind == "std":
        return centred / (rewards.std(dim=-1, keepdim=True) + STD_EPS)
    if kind == "rloo":
        return centred * (k / (k - 1))
    top2 = torch.topk(rewards, 2, dim=-1)
    best = torch.argmax(rewards, dim=-1, keepdim=True)  # the first maximum
    margin = (top2.values[..., :1] - top2.values[..., 1:2]).to(rewards.dtype)
    return torch.zeros_like(rewards).scatter(-1, best, margin)


def full_kl(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) over the last (vocabulary) dimension; entries where pi is 0 contribute 0."""
    p = policy_logprobs.exp()
    diff = torch.where(p > 0, policy_logprobs - reference_logprobs, torch.zeros_like(policy_logprobs))
    return (p * diff).sum(-1)


@dataclass(frozen=True)
class LossSettings:
    """Which policy term and advantage a loss uses (`train.loss`, `train.advantage`, `train.clip_*`)."""

    advantage: str = "mean"
    loss: str = "reinforce"
    clip_low: float = 0.2
    """ppo-clip: the ratio's lower bound is 1 - clip_low."""
    clip_high: float = 0.2
    """ppo-clip: the ratio's upper bound is 1 + clip_high (DAPO's clip-higher: 0.28)."""


@dataclass
class LossTerms:
    """The loss of one text's group and its parts (the parts detached)."""

    loss: torch.Tensor
    """Scalar, differentiable."""
    policy: float
    """The policy term (REINFORCE: -(1/K) sum_k A_k log pi(y_k))."""
    kl: float
    """(1/K) sum_k sum_j KL_kj (before beta)."""
    entropy: float
    """Mean per-position entropy of the policy at the moves."""
    move_logprobs: torch.Tensor | None = None
    """[K, L] log pi(y_k[j] | P, y_k<j) of this pass, detached (ppo-clip keeps the first update's as pi_old)."""
    clip_frac: float = 0.0
    """ppo-clip: the fraction of counted positions whose clipped term is the active one (0 for REINFORCE)."""


def grpo_loss(
    policy_logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    moves: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    mask: torch.Tensor | None = None,
    *,
    settings: LossSettings | None = None,
    old_logprobs: torch.Tensor | None = None,
) -> LossTerms:
    """The loss of one group: `policy_logprobs`, `reference_logprobs` [K, L, V] (log-distributions at each move
    position, the policy's with gradient), `moves` [K, L], `rewards` [K]; `mask` [K, L] keeps the positions that
    count (default: all). `settings`: the advantage and policy term (default: the paper's). `old_logprobs` [K, L]:
    ppo-clip's log pi_old(y_k[j]); None means this pass's own values (the first update of a step, rho = 1)."""
    settings = settings or LossSettings()
    k = moves.shape[0]
    weight = torch.ones(moves.shape, dtype=policy_logprobs.dtype, device=moves.device) if mask is None else mask
    weight = weight.to(policy_logprobs.dtype)
    advantages = group_advantages(rewards.detach().to(policy_logprobs.dtype), settings.advantage)
    token_logprob = policy_logprobs.gather(-1, moves.unsqueeze(-1)).squeeze(-1)
    clip_frac = 0.0
    if settings.loss == "reinforce":
        move_logprob = (token_logprob * weight).sum(-1)
        policy = -(advantages * move_logprob).sum() / k
    elif settings.loss == "ppo-clip":
        old = token_logprob.detach() if old_logprobs is None else old_logprobs.to(token_logprob)
        ratio = torch.exp(token_logprob - old)
        adv = advantages.unsqueeze(-1)
        clipped = torch.clamp(ratio, 1 - settings.clip_low, 1 + settings.clip_high)
        surrogate = torch.minimum(ratio * adv, clipped * adv)
        policy = -(surrogate * weight).sum() / k
        with torch.no_grad():
            active = ((ratio < 1 - settings.clip_low) & (adv < 0)) | ((ratio > 1 + settings.clip_high) & (adv > 0))
            clip_frac = float((active.to(weight.dtype) * weight).sum() / weight.sum().clamp_min(1))
    else:
        raise ConfigError(f"train.loss must be one of {', '.join(LOSSES)}; got {settings.loss!r}")
    kl = (full_kl(policy_logprobs, reference_logprobs.detach()) * weight).sum() / k
    with torch.no_grad():
        p = policy_logprobs.exp()
        per_position = -(p * torch.where(p > 0, policy_logprobs, torch.zeros_like(p))).sum(-1)
        entropy = (per_position * weight).sum() / weight.sum().clamp_min(1)
    return LossTerms(
        loss=policy + beta * kl,
        policy=float(policy.detach()),
        kl=float(kl.detach()),
        entropy=float(entropy),
        move_logprobs=token_logprob.detach(),
        clip_frac=clip_frac,
    )
