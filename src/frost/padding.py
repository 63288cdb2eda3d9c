"""Token sequences of different lengths left-padded into one batch, with the attention mask and the position ids
that restart at each row's first real token: the player's prompts (sampling, the loss) and the judge's prefixes
(its prefix KV cache) are batched this way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from frost.errors import ConfigError

Ids = Sequence[int] | torch.Tensor
"""Token ids: a list or a 1-D tensor."""


@dataclass
class PromptBatch:
    """Sequences of different lengths, left-padded into one batch."""

    ids: torch.Tensor
    """[B, P] token ids (padding: 0)."""
    mask: torch.Tensor | None
    """[B, P] 1 on real tokens, 0 on padding; None when no row is padded (the model then needs no mask)."""
    positions: torch.Tensor | None
    """[B, P] position ids counted from each row's first real token; None when no row is padded."""
    lengths: list[int]

    @classmethod
    def build(cls, rows: Sequence[Ids], device: torch.device) -> PromptBatch:
        """Left-pad `rows` (each non-empty) onto `device`."""
        tensors = [torch.as_tensor(r, dtype=torch.long).view(-1) for r in rows]
        if any(t.numel() == 0 for t in tensors):
            raise ConfigError("the player's prompt is empty")
        lengths = [t.numel() for t in tensors]
        width = max(lengths)
        ids = torch.zeros(len(tensors), width, dtype=torch.long)
        for i, t in enumerate(tensors):
            ids[i, width - t.numel() :] = t
        ids = ids.to(device)
        if min(lengths) == width:
            return cls(ids, None, None, lengths)
        mask = (torch.arange(width).view(1, -1) >= (width - torch.tensor(lengths)).view(-1, 1)).long().to(device)
        return cls(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), lengths)

    def forward_kwargs(self) -> dict[str, torch.Tensor]:
        """`input_ids`, and the mask and positions when rows are padded."""
        kwargs = {"input_ids": self.ids}
        if self.mask is not None and self.positions is not None:
            kwargs |= {"attention_mask": self.mask, "position_ids": self.positions}
        return kwargs

    def continuation(self, repeats: int, new: int) -> dict[str, torch.Tensor]:
        """Mask and positions for `new` tokens appended to every row repeated `repeats` times (rows of prompt b
        adjacent: b*repeats .. b*repeats + repeats - 1), continuing from the prefilled cache; empty when unpadded."""
        if self.mask is None:
            return {}
        device = self.ids.device
        mask = torch.cat(
            [self.mask.repeat_interleave(repeats, 0), torch.ones(len(self.lengths) * repeats, new, device=device)], 1
        ).long()
        start = torch.tensor(self.lengths, device=device).repeat_interleave(repeats).view(-1, 1)
        return {"attention_mask": mask, "position_ids": start + torch.arange(new, device=device).view(1, -1)}
