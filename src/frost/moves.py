"""What a move of a game instance may contain, as tensors: the masks sampling, the Taylor grid and the loss share.

A move row has `move_length` slots. Fixed-length games fill every slot with content. Variable-length games end the
content with the stop token, which also fills the rest of the row; the player *chooses* the stop (at the slot right
after the content, unless the content fills the row), so that slot is one of its decisions, and the slots after it
are padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frost.games import GameInstance


@dataclass
class MoveMasks:
    """Token masks of one game instance."""

    content: torch.Tensor
    """[V] bool: tokens that may not be move content (special tokens, the instance's forbidden tokens, tokens outside
    its allowed set, the stop token). The Taylor grid never proposes them."""
    sampling: torch.Tensor
    """[L, V] bool: tokens the player may not sample at each slot (`content`, except the stop from slot 1 on)."""


def move_masks(inst: GameInstance, base_forbidden: torch.Tensor) -> MoveMasks:
    """The masks of an instance, from the model's forbidden tokens `base_forbidden` [V] (special tokens and rows
    beyond the tokenizer)."""
    vocab = base_forbidden.shape[0]
    device = base_forbidden.device
    content = base_forbidden.clone()
    if inst.allowed_ids is not None:
        allowed = torch.zeros(vocab, dtype=torch.bool, device=device)
        ids = [i for i in inst.allowed_ids if 0 <= i < vocab]
        allowed[torch.tensor(ids, dtype=torch.long, device=device)] = True
        content |= ~allowed
    if inst.forbidden_ids:
        ids = [i for i in inst.forbidden_ids if 0 <= i < vocab]
        content[torch.tensor(ids, dtype=torch.long, device=device)] = True
    sampling = content.unsqueeze(0).repeat(inst.move_length, 1)
    if inst.stop_id is not None:
        content[inst.stop_id] = True
        sampling[:, inst.stop_id] = True
        sampling[1:, inst.stop_id] = False  # a move has at least one content token
    return MoveMasks(content=content, sampling=sampling)


def content_lengths(inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
    """[N] the number of content tokens of each move row [N, L] (up to its first stop token)."""
    n, length = moves.shape
    if inst.stop_id is None:
        return torch.full((n,), length, dtype=torch.long, device=moves.device)
    is_stop = moves == inst.stop_id
    first = torch.where(
        is_stop.any(1), is_stop.float().argmax(1), torch.full_like(is_stop[:, 0], length, dtype=torch.long)
    )
    return first.long()


def content_mask(inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
    """[N, L] bool: the slots that hold content (the Taylor grid's rows)."""
    slots = torch.arange(moves.shape[1], device=moves.device)
    return slots.view(1, -1) < content_lengths(inst, moves).view(-1, 1)


def decision_mask(inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
    """[N, L] bool: the slots where the player chose a token (the content, and the stop when it ended the move)."""
    slots = torch.arange(moves.shape[1], device=moves.device)
    return slots.view(1, -1) <= content_lengths(inst, moves).view(-1, 1)
