"""Exact rewards and Taylor scores against independent computations."""

from __future__ import annotations

import pytest
import torch

from conftest import make_instance, random_moves
from frost.errors import ConfigError
from frost.games import GameInstance
from frost.judge import Judge, gradient_term


def naive_reward(model, inst: GameInstance, move: list[int]) -> float:
    """Sum of log P(token | all before) over the scored tokens, one plain forward, token by token."""
    ids = torch.tensor([inst.judge_ids(move)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(logp[t - 1, ids[0, t]]) for t in inst.scored_positions())


def test_rewards_equal_naive_recomputation(tiny_model, instance):
    moves = random_moves(5, instance.move_length)
    rewards = Judge(tiny_model, batch_size=2).rewards(instance, moves)
    for k in range(5):
        assert rewards[k].item() == pytest.approx(naive_reward(tiny_model, instance, moves[k].tolist()), abs=1e-4)


def test_rewards_deduplicate_identical_moves(tiny_model, instance):
    moves = random_moves(3, instance.move_length)
    moves = torch.cat([moves, moves[:2]])
    judge = Judge(tiny_model)
    rewards = judge.rewards(instance, moves)
    assert judge.forward_sequences == 3
    assert torch.equal(rewards[3:], rewards[:2])


def test_scored_suffix_span_only(tiny_model):
    inst = make_instance()
    inst = GameInstance(
        inst.prompt_ids, inst.judge_prefix, inst.judge_suffix, 4, score_move=False, suffix_scored=(2, 5)
    )
    move = random_moves(1, 4)[0].tolist()
    got = Judge(tiny_model).rewards(inst, torch.tensor([move]))[0].item()
    assert got == pytest.approx(naive_reward(tiny_model, inst, move), abs=1e-4)
    assert len(inst.scored_positions()) == 3


def test_taylor_rewards_match_exact_rewards(tiny_model, instance):
    moves = random_moves(4, instance.move_length)
    judge = Judge(tiny_model, batch_size=3)
    taylor = judge.taylor(instance, moves)
    assert torch.allclose(taylor.rewards, judge.rewards(instance, moves), atol=1e-4)
    assert judge.backward_sequences == 4


def test_gradient_matches_finite_differences(tiny_model64):
    """g . (E[v] - E[y_j]) equals the directional derivative of R along that direction (central differences)."""
    inst = make_instance(move_length=3)
    moves = random_moves(2, 3, seed=5)
    judge = Judge(tiny_model64)
    taylor = judge.taylor(inst, moves)
    emb = tiny_model64.get_input_embeddings().weight
    prefix, suffix = torch.tensor(inst.judge_prefix), torch.tensor(inst.judge_suffix)

    def reward_at(k: int, j: int, direction: torch.Tensor, eps: float) -> float:
        e = emb[torch.cat([prefix, moves[k], suffix])].clone().unsqueeze(0)
        e[0, len(prefix) + j] += eps * direction
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model64(inputs_embeds=e).logits[0], -1)
        ids = torch.cat([prefix, moves[k], suffix])
        return sum(float(logp[t - 1, ids[t]]) for t in inst.scored_positions())

    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        k, j = int(torch.randint(2, (1,), generator=g)), int(torch.randint(3, (1,), generator=g))
        v = int(torch.randint(3, emb.shape[0], (1,), generator=g))
        direction = emb[v] - emb[moves[k, j]]
        eps = 1e-5
        fd = (reward_at(k, j, direction, eps) - reward_at(k, j, direction, -eps)) / (2 * eps)
        term = gradient_term(taylor.grad[k, j].view(1, -1).double(), moves[k, j].view(1), emb)[0, v].item()
        assert term == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_taylor_grid_equals_one_hot_gradient(tiny_model64, instance):
    """Independent path: gradient of R with respect to one-hot inputs (the paper's Eq. 1 formulation)."""
    moves = random_moves(2, instance.move_length, seed=9)
    taylor = Judge(tiny_model64).taylor(instance, moves)
    grid = taylor.approx("taylor")
    emb = tiny_model64.get_input_embeddings().weight
    vocab = emb.shape[0]
    for k in range(2):
        ids = torch.tensor(instance.judge_ids(moves[k].tolist()))
        one_hot = torch.nn.functional.one_hot(ids, vocab).double().requires_grad_(True)
        logp = torch.log_softmax(tiny_model64(inputs_embeds=(one_hot @ emb).unsqueeze(0)).logits[0], -1)
        reward = sum(logp[t - 1, ids[t]] for t in instance.scored_positions())
        (grad,) = torch.autograd.grad(reward, one_hot)
        start = instance.move_start
        for j in range(instance.move_length):
            g = grad[start + j]
            expected = reward.item() + g - g[moves[k, j]]
            assert torch.allclose(grid[k, j].double(), expected, rtol=1e-5, atol=1e-3)


def test_taylor_score_of_the_parent_token_is_the_parent_reward(tiny_model, instance):
    moves = random_moves(3, instance.move_length)
    taylor = Judge(tiny_model).taylor(instance, moves)
    for rule in ("taylor", "first-order", "full", "judge-gated"):  # first-order: the older name of taylor
        grid = taylor.approx(rule)
        parent_scores = grid.gather(-1, moves.unsqueeze(-1)).squeeze(-1)
        assert torch.equal(parent_scores, taylor.rewards.view(-1, 1).expand_as(parent_scores))


def test_full_mode_adds_the_exact_position_term(tiny_model, instance):
    """The own-position term equals the exact change of log P_J(y_j | x, y<j) when y_j -> v."""
    moves = random_moves(2, instance.move_length)
    judge = Judge(tiny_model)
    taylor = judge.taylor(instance, moves)
    diff = taylor.approx("full") - taylor.approx("taylor")
    for k, j, v in [(0, 0, 5), (1, 2, 40), (1, 3, 96)]:
        child = moves[k].clone()
        child[j] = v
        lp_child = judge.score(instance, child.view(1, -1)).logprobs[0, j]
        lp_parent = judge.score(instance, moves[k].view(1, -1)).logprobs[0, j]
        assert diff[k, j, v].item() == pytest.approx((lp_child - lp_parent).item(), abs=1e-4)


def test_forward_only_pass_gives_same_rewards_and_position_terms(tiny_model, instance):
    moves = random_moves(3, instance.move_length)
    judge = Judge(tiny_model)
    with_grad, without = judge.taylor(instance, moves), judge.taylor(instance, moves, with_grad=False)
    assert without.grad is None
    assert torch.allclose(with_grad.rewards, without.rewards, atol=1e-5)
    assert torch.allclose(with_grad.judge_logprobs, without.judge_logprobs, atol=1e-5)


def test_judge_weights_receive_no_gradient(tiny_model, instance):
    tiny_model.requires_grad_(True)
    try:
        Judge(tiny_model).taylor(instance, random_moves(2, instance.move_length))
        assert all(p.grad is None for p in tiny_model.parameters())
    finally:
        tiny_model.requires_grad_(False)


def test_bad_moves_are_clear_errors(tiny_model, instance):
    judge = Judge(tiny_model)
    with pytest.raises(ConfigError, match="moves must be"):
        judge.rewards(instance, torch.zeros(2, instance.move_length + 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="token ids must lie"):
        judge.rewards(instance, torch.full((1, instance.move_length), 10_000))
