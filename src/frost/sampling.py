"""The player's side: sample K moves from one prefilled prompt keeping the distributions they were drawn from, and
the player's distributions over given moves (for the loss and for moves that were not sampled).

The prompt is run once; its KV cache is repeated for the K samples and L batched decode steps follow (moves have
exactly L tokens, or end at a stop token). The per-position log-distributions that were actually sampled from (after
masking the forbidden tokens and applying the temperature) are returned, so Frost's probability gate needs no second
player pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from frost.errors import ConfigError


@dataclass
class SampledMoves:
    """K moves for one prompt and the player's distributions at each of their positions."""

    moves: torch.Tensor
    """[K, L] token ids."""
    logprobs: torch.Tensor
    """[K, L, V] float32 log pi(v | prompt, y_k[<j]) of the distribution each token was drawn from."""

    def move_logprobs(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[K] log pi(y_k | prompt): the sum of the sampled tokens' log-probabilities (over `mask` [K, L], the
        player's decisions, when given: `frost.moves.decision_mask`)."""
        lps = self.logprobs.gather(-1, self.moves.unsqueeze(-1)).squeeze(-1)
        return (lps if mask is None else lps * mask).sum(-1)

    def entropy(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Entropy (nats) of each sampled position's distribution: [K, L], or with `mask` [K, L] the flat entries
        where it is true."""
        p = self.logprobs.exp()
        ent = -(p * torch.where(p > 0, self.logprobs, torch.zeros_like(self.logprobs))).sum(-1)
        return ent if mask is None else ent[mask]


def sampling_distribution(logits: torch.Tensor, forbidden: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """log-softmax of `logits / temperature` in float32 with the forbidden tokens at -inf (probability zero).

    `forbidden` is [V] (the same at every slot) or broadcastable to `logits` (e.g. [L, V] per move slot)."""
    logits = logits.float()
    if forbidden is not None:
        logits = logits.masked_fill(forbidden, float("-inf"))
    return torch.log_softmax(logits / temperature, dim=-1)


def cache_io(model: Any) -> tuple[str, str]:
    """(forward keyword, output attribute) of the KV cache: `cache` in recent transformers, else `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return ("cache", "cache") if "cache" in params else ("past_key_values", "past_key_values")


def sample_moves(
    model: Any,
    prompt_ids: Sequence[int] | torch.Tensor,
    num_moves: int,
    move_length: int,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> SampledMoves:
    """Sample `num_moves` (K) move rows of `move_length` (L) slots after `prompt_ids`.

    `forbidden` is a boolean mask of tokens that can never be sampled: [V] at every slot, or [L, V] per slot
    (`frost.moves.move_masks`). Without `stop_id` every move has exactly L tokens. With it, a row that samples the
    stop token has ended: its remaining slots are filled with the stop (they are not sampled, and the distributions
    kept there mean nothing). `generator` makes the draw reproducible.
    """
    if num_moves < 1:
        raise ConfigError(f"K (moves per prompt) must be >= 1, got {num_moves}")
    if move_length < 1:
        raise ConfigError(f"L (move length) must be >= 1, got {move_length}")
    if not temperature > 0:
        raise ConfigError(f"sampling.temperature must be > 0, got {temperature}")
    device = model.get_input_embeddings().weight.device
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).view(1, -1)
    if prompt.shape[1] == 0:
        raise ConfigError("the player's prompt is empty")
    if forbidden is not None:
        forbidden = forbidden.to(device)
        if forbidden.dim() == 2 and forbidden.shape[0] != move_length:
            raise ConfigError(f"forbidden: per-slot mask has {forbidden.shape[0]} slots for moves of {move_length}")
    moves = torch.empty(num_moves, move_length, dtype=torch.long, device=device)
    ended = torch.zeros(num_moves, dtype=torch.bool, device=device)
    logprob_steps: list[torch.Tensor] = []
    cache_kw, cache_attr = cache_io(model)
    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = getattr(out, cache_attr)
        logits = out.logits[:, -1].expand(num_moves, -1)
        if num_moves > 1:
            cache.batch_repeat_interleave(num_moves)
        for j in range(move_length):
            mask = forbidden[j] if forbidden is not None and forbidden.dim() == 2 else forbidden
            logprobs = sampling_distribution(logits, mask, temperature)
            logprob_steps.append(logprobs)
            token = torch.multinomial(logprobs.exp(), 1, generator=generator)
            if stop_id is not None:
                token = torch.where(ended.view(-1, 1), torch.full_like(token, stop_id), token)
                ended |= token.squeeze(1) == stop_id
            moves[:, j] = token.squeeze(1)
            if j + 1 < move_length:
                out = model(input_ids=token, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
                logits = out.logits[:, -1]
    return SampledMoves(moves=moves.clone(), logprobs=torch.stack(logprob_steps, dim=1).clone())


def policy_distributions(
    model: Any,
    prompt_ids: Sequence[int] | torch.Tensor,
    moves: torch.Tensor,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
    shared_prompt: bool = True,
) -> torch.Tensor:
    """[K, L, V] log pi(. | P, y_k<j) at each move slot (differentiable when grad is enabled).

    The distribution is the one moves are sampled from (`forbidden` [V] or [L, V] masked, temperature). With
    `shared_prompt` the prompt is encoded once and its KV cache (with its autograd history) is repeated for the K
    moves, so a step runs P + K*L tokens through the player instead of K*(P + L): the same values and gradients as
    K full sequences (without LoRA dropout, which would then share one mask across the group).
    """
    from frost.models import causal_lm_logits

    device = model.get_input_embeddings().weight.device
    moves = torch.as_tensor(moves, dtype=torch.long, device=device)
    if forbidden is not None:
        forbidden = forbidden.to(device)
    k, length = moves.shape
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).view(1, -1)
    if not shared_prompt:
        ids = torch.cat([prompt.expand(k, -1), moves], dim=1)
        logits = causal_lm_logits(model, input_ids=ids, keep=length + 1)[:, :-1]
        return sampling_distribution(logits, forbidden, temperature)
    cache_kw, cache_attr = cache_io(model)
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1:].expand(k, 1, -1)
    if length == 1:
        return sampling_distribution(first, forbidden, temperature)
    cache = getattr(out, cache_attr)
    if k > 1:
        cache.batch_repeat_interleave(k)
    rest = model(input_ids=moves[:, :-1], use_cache=True, **{cache_kw: cache}).logits
    return sampling_distribution(torch.cat([first, rest], dim=1), forbidden, temperature)


def player_logprobs(
    model: Any,
    prompt_ids: Sequence[int] | torch.Tensor,
    moves: torch.Tensor,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
) -> torch.Tensor:
    """[N, L, V] the distributions a player samples each move slot from, by one forward over prompt + move
    (`forbidden`: [V] or [L, V], as in `sample_moves`). This is what `sample_moves` saves while sampling; use it for
    moves that were not sampled (e.g. given by hand, or mutated by Frost)."""
    with torch.inference_mode():
        return policy_distributions(
            model, prompt_ids, moves, temperature=temperature, forbidden=forbidden, shared_prompt=False
        ).clone()
