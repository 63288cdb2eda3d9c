"""Sample K moves of exactly L tokens from one prefilled prompt, keeping the distributions they were drawn from.

The prompt is run once; its KV cache is repeated for the K samples and L batched decode steps follow. The
per-position log-distributions that were actually sampled from (after masking the forbidden tokens and applying the
temperature) are returned, so Frost's probability gate needs no second player pass.
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

    def move_logprobs(self) -> torch.Tensor:
        """[K] log pi(y_k | prompt): the sum of the sampled tokens' log-probabilities."""
        return self.logprobs.gather(-1, self.moves.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        """[K, L] entropy (nats) of each sampled position's distribution."""
        p = self.logprobs.exp()
        return -(p * torch.where(p > 0, self.logprobs, torch.zeros_like(self.logprobs))).sum(-1)


def sampling_distribution(logits: torch.Tensor, forbidden: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """log-softmax of `logits / temperature` in float32 with the forbidden tokens at -inf (probability zero)."""
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
    generator: torch.Generator | None = None,
) -> SampledMoves:
    """Sample `num_moves` (K) moves of exactly `move_length` (L) tokens after `prompt_ids`.

    `forbidden` is a boolean mask over the vocabulary (special and end-of-text tokens) that can never be sampled, so
    every move has exactly L tokens. `generator` makes the draw reproducible.
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
    moves = torch.empty(num_moves, move_length, dtype=torch.long, device=device)
    logprob_steps: list[torch.Tensor] = []
    cache_kw, cache_attr = cache_io(model)
    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = getattr(out, cache_attr)
        logits = out.logits[:, -1].expand(num_moves, -1)
        if num_moves > 1:
            cache.batch_repeat_interleave(num_moves)
        for j in range(move_length):
            logprobs = sampling_distribution(logits, forbidden, temperature)
            logprob_steps.append(logprobs)
            token = torch.multinomial(logprobs.exp(), 1, generator=generator)
            moves[:, j] = token.squeeze(1)
            if j + 1 < move_length:
                out = model(input_ids=token, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
                logits = out.logits[:, -1]
    return SampledMoves(moves=moves.clone(), logprobs=torch.stack(logprob_steps, dim=1).clone())


def player_logprobs(
    model: Any,
    prompt_ids: Sequence[int] | torch.Tensor,
    moves: torch.Tensor,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
) -> torch.Tensor:
    """[N, L, V] the distributions a player samples each move position from, by one forward over prompt + move.

    This is what `sample_moves` saves while sampling; use it for moves that were not sampled (e.g. given by hand).
    """
    device = model.get_input_embeddings().weight.device
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).view(1, -1)
    moves = torch.as_tensor(moves, dtype=torch.long, device=device)
    n, length = moves.shape
    ids = torch.cat([prompt.expand(n, -1), moves], dim=1)
    with torch.inference_mode():
        logits = model(input_ids=ids, logits_to_keep=length + 1, use_cache=False).logits[:, :-1]
        forb = forbidden.to(device) if forbidden is not None else None
        return sampling_distribution(logits, forb, temperature).clone()
