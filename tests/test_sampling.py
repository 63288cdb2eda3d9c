"""Shared-prefix sampling: exact length, no forbidden tokens, reproducible, and the saved distributions are right."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_VOCAB, make_instance
from frost.errors import ConfigError
from frost.sampling import player_logprobs, sample_moves

FORBIDDEN = torch.zeros(TINY_VOCAB, dtype=torch.bool)
FORBIDDEN[:3] = True


def test_moves_have_exactly_l_tokens_and_no_forbidden_token(tiny_model):
    inst = make_instance()
    s = sample_moves(
        tiny_model, inst.prompt_ids, 16, 9, forbidden=FORBIDDEN, generator=torch.Generator().manual_seed(0)
    )
    assert s.moves.shape == (16, 9)
    assert s.logprobs.shape == (16, 9, TINY_VOCAB)
    assert not torch.any(FORBIDDEN[s.moves])
    assert torch.all(s.logprobs[..., FORBIDDEN] == float("-inf"))


def test_distributions_sum_to_one(tiny_model):
    s = sample_moves(tiny_model, make_instance().prompt_ids, 4, 5, forbidden=FORBIDDEN)
    assert torch.allclose(s.logprobs.exp().sum(-1), torch.ones(4, 5), atol=1e-5)


def test_same_seed_same_moves_and_other_seed_other_moves(tiny_model):
    prompt = make_instance().prompt_ids
    a = sample_moves(tiny_model, prompt, 8, 6, generator=torch.Generator().manual_seed(7))
    b = sample_moves(tiny_model, prompt, 8, 6, generator=torch.Generator().manual_seed(7))
    c = sample_moves(tiny_model, prompt, 8, 6, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.moves, b.moves) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.moves, c.moves)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_saved_distributions_equal_a_plain_forward_over_prompt_and_move(tiny_model, temperature):
    prompt = make_instance().prompt_ids
    s = sample_moves(
        tiny_model,
        prompt,
        5,
        6,
        temperature=temperature,
        forbidden=FORBIDDEN,
        generator=torch.Generator().manual_seed(1),
    )
    # independent: full forward over each prompt + move without a cache, masking and temperature by hand
    for k in range(5):
        ids = torch.tensor([list(prompt) + s.moves[k].tolist()])
        with torch.no_grad():
            logits = tiny_model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
        logits[:, FORBIDDEN] = float("-inf")
        expected = torch.log_softmax(logits / temperature, dim=-1)
        finite = torch.isfinite(expected)
        assert torch.allclose(s.logprobs[k][finite].double(), expected[finite], atol=1e-4)
    assert torch.allclose(
        player_logprobs(tiny_model, prompt, s.moves, temperature=temperature, forbidden=FORBIDDEN),
        s.logprobs,
        atol=1e-4,
    )


def test_sampling_follows_the_distribution(tiny_model):
    """Empirical first-token frequencies over many samples match the saved distribution."""
    prompt = make_instance().prompt_ids
    s = sample_moves(tiny_model, prompt, 4000, 1, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(s.moves[:, 0], minlength=TINY_VOCAB).float() / 4000
    assert torch.allclose(freq, s.logprobs[0, 0].exp(), atol=0.03)


def test_move_logprobs_and_entropy(tiny_model):
    s = sample_moves(tiny_model, make_instance().prompt_ids, 3, 4)
    manual = sum(s.logprobs[:, j].gather(-1, s.moves[:, j : j + 1]).squeeze(-1) for j in range(4))
    assert torch.allclose(s.move_logprobs(), manual)
    p = s.logprobs.exp()
    assert torch.allclose(s.entropy(), -(p * s.logprobs).nan_to_num().sum(-1), atol=1e-5)


def test_bad_arguments_are_clear_errors(tiny_model):
    prompt = make_instance().prompt_ids
    with pytest.raises(ConfigError, match="L"):
        sample_moves(tiny_model, prompt, 2, 0)
    with pytest.raises(ConfigError, match="K"):
        sample_moves(tiny_model, prompt, 0, 2)
    with pytest.raises(ConfigError, match="temperature"):
        sample_moves(tiny_model, prompt, 2, 2, temperature=0.0)
