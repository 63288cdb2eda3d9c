"""The player's side: sample K moves per prompt from one prefilled prompt, keeping the distributions they were drawn
from, and the player's distributions over given moves (for the loss and for moves that were not sampled).

Every function takes the B prompts of a step at once. The prompts are left-padded into one batch (an attention mask
hides the padding and position ids restart at each prompt's first token, so every row computes what it would alone),
prefilled in one forward, and their KV cache repeated K times; the L decode steps then run all B*K rows together.
The per-position log-distributions that were actually sampled from (after masking the forbidden tokens and applying
the temperature) are returned, so Frost's probability gate needs no second player pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from frost.decode import cache_length, give_up_static, resolve_decode, static_decoder
from frost.errors import ConfigError
from frost.models import cache_io, check_fits_context, model_device, no_grad
from frost.padding import Ids, PromptBatch


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


def _row_masks(
    forbidden: Sequence[torch.Tensor | None] | torch.Tensor | None, n_prompts: int, length: int, device: torch.device
) -> torch.Tensor | None:
    """[B, L, V] per-prompt, per-slot masks from a [V] or [L, V] mask per prompt (or one shared mask)."""
    if forbidden is None:
        return None
    masks = [forbidden] * n_prompts if isinstance(forbidden, torch.Tensor) else list(forbidden)
    if len(masks) != n_prompts:
        raise ConfigError(f"forbidden: {len(masks)} masks for {n_prompts} prompts")
    if all(m is None for m in masks):
        return None
    vocab = next(m for m in masks if m is not None).shape[-1]
    out = []
    for m in masks:
        if m is None:
            m = torch.zeros(vocab, dtype=torch.bool)
        m = m.to(device)
        if m.dim() == 2 and m.shape[0] != length:
            raise ConfigError(f"forbidden: per-slot mask has {m.shape[0]} slots for moves of {length}")
        out.append(m.expand(length, -1) if m.dim() == 1 else m)
    return torch.stack(out)


def _draw(probs: torch.Tensor, k: int, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """One token per row of `probs` [B*K, V]: with one generator per prompt, each prompt's K rows use their own."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator)
    gens = list(generator)
    if len(gens) * k != probs.shape[0]:
        raise ConfigError(f"generator: {len(gens)} generators for {probs.shape[0] // k} prompts")
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs.split(k), gens, strict=True)])


def _check_sampling(num_moves: int, move_length: int, temperature: float) -> None:
    if num_moves < 1:
        raise ConfigError(f"K (moves per prompt) must be >= 1, got {num_moves}")
    if move_length < 1:
        raise ConfigError(f"L (move length) must be >= 1, got {move_length}")
    if not temperature > 0:
        raise ConfigError(f"sampling.temperature must be > 0, got {temperature}")


def sample_moves_batch(
    model: Any,
    prompts: Sequence[Ids],
    num_moves: int,
    move_length: int,
    *,
    temperature: float = 1.0,
    forbidden: Sequence[torch.Tensor | None] | torch.Tensor | None = None,
    stop_ids: Sequence[int | None] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    decode: str = "auto",
) -> list[SampledMoves]:
    """`num_moves` (K) move rows of `move_length` (L) slots after each of the B `prompts`: one prefill of all
    prompts, their KV cache repeated K times, L decode steps over all B*K rows (`decode`: how they run,
    `frost.decode`; a static path that fails warns once and decodes eagerly with the same draws).

    `forbidden` gives each prompt's tokens that can never be sampled: [V] at every slot, or [L, V] per slot
    (`frost.moves.move_masks`); one tensor applies to every prompt. Without a stop id (`stop_ids[b]` None) every move
    has exactly L tokens. With one, a row that samples its stop token has ended: its remaining slots are filled with
    the stop (they are not sampled, and the distributions kept there mean nothing). `generator` makes the draw
    reproducible: one for all prompts, or one per prompt (then each prompt's moves depend only on its own generator,
    not on which prompts share the batch).
    """
    _check_sampling(num_moves, move_length, temperature)
    device = model_device(model)
    mode = resolve_decode(decode, model, device)
    if mode != "eager":
        gens = [generator] if isinstance(generator, torch.Generator) else list(generator or [])
        states = [g.get_state() for g in gens]
        try:
            return _sample(model, prompts, num_moves, move_length, temperature, forbidden, stop_ids, generator, mode)
        except ConfigError:
            raise
        except Exception as exc:  # an architecture or transformers version the static path does not support
            give_up_static(model, mode, exc)
            for g, state in zip(gens, states, strict=True):
                g.set_state(state)
    return _sample(model, prompts, num_moves, move_length, temperature, forbidden, stop_ids, generator, "eager")


def _sample(
    model: Any,
    prompts: Sequence[Ids],
    num_moves: int,
    move_length: int,
    temperature: float,
    forbidden: Sequence[torch.Tensor | None] | torch.Tensor | None,
    stop_ids: Sequence[int | None] | None,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    mode: str,
) -> list[SampledMoves]:
    device = model_device(model)
    batch = PromptBatch.build(prompts, device)
    check_fits_context(model, batch.ids.shape[1] + move_length, "the player's prompt and move")
    n_prompts, k, rows = len(prompts), num_moves, len(prompts) * num_moves
    masks = _row_masks(forbidden, n_prompts, move_length, device)
    stops = list(stop_ids) if stop_ids is not None else [None] * n_prompts
    if len(stops) != n_prompts:
        raise ConfigError(f"stop_ids: {len(stops)} stop ids for {n_prompts} prompts")
    stop_row = torch.tensor([-1 if s is None else s for s in stops], device=device).repeat_interleave(k).view(-1, 1)
    moves = torch.empty(rows, move_length, dtype=torch.long, device=device)
    ended = torch.zeros(rows, 1, dtype=torch.bool, device=device)
    logprob_steps: list[torch.Tensor] = []
    cache_kw, cache_attr = cache_io(model)
    with no_grad(model):
        out = model(**batch.forward_kwargs(), use_cache=True, logits_to_keep=1)
        cache = getattr(out, cache_attr)
        logits = out.logits[:, -1].repeat_interleave(k, 0)
        if k > 1:
            cache.batch_repeat_interleave(k)
        static = None
        if mode != "eager" and move_length > 1:
            static = static_decoder(model, rows, cache_length(batch.ids.shape[1], move_length), mode == "graphs")
            mask = None if batch.mask is None else batch.mask.repeat_interleave(k, 0)
            static.load(cache, mask, torch.tensor(batch.lengths, device=device).repeat_interleave(k))
            del cache, out  # the static cache holds the prompt now
        for j in range(move_length):
            slot_mask = None if masks is None else masks[:, j].repeat_interleave(k, 0)
            logprobs = sampling_distribution(logits, slot_mask, temperature)
            logprob_steps.append(logprobs)
            token = _draw(logprobs.exp(), k, generator)
            token = torch.where(ended, stop_row, token)
            ended |= (token == stop_row) & (stop_row >= 0)
            moves[:, j] = token.squeeze(1)
            if j + 1 < move_length and static is not None:
                logits = static.step(token, j)
            elif j + 1 < move_length:
                step = batch.continuation(k, j + 1)
                if step:
                    step["position_ids"] = step["position_ids"][:, -1:]
                out = model(input_ids=token, use_cache=True, logits_to_keep=1, **{cache_kw: cache}, **step)
                logits = out.logits[:, -1]
    dists = torch.stack(logprob_steps, dim=1)
    return [
        SampledMoves(moves=moves[b * k : (b + 1) * k].clone(), logprobs=dists[b * k : (b + 1) * k].clone())
        for b in range(n_prompts)
    ]


def sample_moves(
    model: Any,
    prompt_ids: Ids,
    num_moves: int,
    move_length: int,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> SampledMoves:
    """K moves after one prompt (`sample_moves_batch` with B = 1)."""
    return sample_moves_batch(
        model, [prompt_ids], num_moves, move_length, temperature=temperature, forbidden=[forbidden],
        stop_ids=[stop_id], generator=generator,
    )[0]  # fmt: skip


def policy_distributions_batch(
    model: Any,
    prompts: Sequence[Ids],
    moves: Sequence[torch.Tensor],
    *,
    temperature: float = 1.0,
    forbidden: Sequence[torch.Tensor | None] | torch.Tensor | None = None,
    shared_prompt: bool = True,
) -> list[torch.Tensor]:
    """[K, L, V] log pi(. | P_b, y_k<j) at each move slot of each prompt's moves (differentiable when grad is
    enabled); every prompt has the same K and L.

    The distribution is the one moves are sampled from (`forbidden` per prompt, [V] or [L, V], temperature). With
    `shared_prompt` the B prompts are encoded once and their KV cache (with its autograd history) repeated for the K
    moves, so a step runs sum(P_b) + B*K*L tokens through the player instead of K*sum(P_b + L): the same values and
    gradients as B*K full sequences (without LoRA dropout, which would then share one mask across a group).
    """
    from frost.models import causal_lm_logits

    device = model_device(model)
    if len(moves) != len(prompts):
        raise ConfigError(f"{len(moves)} move groups for {len(prompts)} prompts")
    groups = [torch.as_tensor(m, dtype=torch.long, device=device) for m in moves]
    shapes = {tuple(g.shape) for g in groups}
    if len(shapes) != 1:
        raise ConfigError(f"every prompt needs moves of one shape [K, L]; got {sorted(shapes)}")
    k, length = groups[0].shape
    all_moves = torch.cat(groups)
    masks = _row_masks(forbidden, len(prompts), length, device)
    row_masks = None if masks is None else masks.repeat_interleave(k, 0)
    if not shared_prompt:
        rows = [torch.cat([torch.as_tensor(p, dtype=torch.long, device=device).view(-1), m]) for p, g in
                zip(prompts, groups, strict=True) for m in g]  # fmt: skip
        full = PromptBatch.build(rows, device)
        logits = causal_lm_logits(model, **full.forward_kwargs(), keep=length + 1)[:, :-1]
    else:
        batch = PromptBatch.build(prompts, device)
        cache_kw, cache_attr = cache_io(model)
        out = model(**batch.forward_kwargs(), use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1:].repeat_interleave(k, 0)
        if length == 1:
            logits = first
        else:
            cache = getattr(out, cache_attr)
            if k > 1:
                cache.batch_repeat_interleave(k)
            step = batch.continuation(k, length - 1)
            rest = model(input_ids=all_moves[:, :-1], use_cache=True, **{cache_kw: cache}, **step).logits
            logits = torch.cat([first, rest], dim=1)
    dists = sampling_distribution(logits, row_masks, temperature)
    return list(dists.split(k))


def policy_distributions(
    model: Any,
    prompt_ids: Ids,
    moves: torch.Tensor,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
    shared_prompt: bool = True,
) -> torch.Tensor:
    """[K, L, V] log pi(. | P, y_k<j) for one prompt (`policy_distributions_batch` with B = 1)."""
    return policy_distributions_batch(
        model, [prompt_ids], [moves], temperature=temperature, forbidden=[forbidden], shared_prompt=shared_prompt
    )[0]


def player_logprobs(
    model: Any,
    prompt_ids: Ids,
    moves: torch.Tensor,
    *,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
) -> torch.Tensor:
    """[N, L, V] the distributions a player samples each move slot from, by one forward over prompt + move
    (`forbidden`: [V] or [L, V], as in `sample_moves`). This is what `sample_moves` saves while sampling; use it for
    moves that were not sampled (e.g. given by hand, or mutated by Frost)."""
    with no_grad(model):
        return policy_distributions(
            model, prompt_ids, moves, temperature=temperature, forbidden=forbidden, shared_prompt=False
        ).clone()
