"""The Taylor grid on a low-precision (bf16) judge is computed in float32 from the float32 gradient."""

from __future__ import annotations

import torch

import frost.judge as judge_module
from frost.judge import gradient_term


def test_grid_on_a_bf16_embedding_is_float32_exact_in_chunks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    embedding = (torch.randn(1000, 64, generator=g) * 0.05).to(torch.bfloat16)
    grad = torch.randn(12, 64, generator=g) * 3.0
    tokens = torch.randint(0, 1000, (12,), generator=g)
    monkeypatch.setattr(judge_module, "GRID_CHUNK_BYTES", 64 * 4 * 37)  # 37 vocabulary rows per chunk
    grid = gradient_term(grad, tokens, embedding)
    exact = grad.double() @ embedding.double().T
    exact = exact - exact.gather(1, tokens.view(-1, 1))
    assert grid.dtype == torch.float32
    assert bool((grid.gather(1, tokens.view(-1, 1)) == 0).all())
    error = (grid.double() - exact).abs().max().item()
    assert error < 1e-5 * exact.abs().max().item()
    # what rounding the gradient to bf16 first would cost: a hundred times more, enough to reorder close candidates
    rounded = (grad.to(torch.bfloat16) @ embedding.T).double()
    rounded = rounded - rounded.gather(1, tokens.view(-1, 1))
    assert (rounded - exact).abs().max().item() > 100 * error
    assert torch.equal(torch.topk(grid, 4).indices, torch.topk(exact, 4).indices)
