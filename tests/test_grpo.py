"""The GRPO loss on hand-computed examples, and its gradient against a naive re-implementation."""

from __future__ import annotations

import math

import pytest
import torch

from frost.losses import full_kl, group_advantages, grpo_loss


def test_advantages_are_reward_minus_group_mean_without_std_scaling():
    r = torch.tensor([[1.0, 2.0, 6.0], [-3.0, -3.0, -3.0]])
    assert group_advantages(r).tolist() == [[-2.0, -1.0, 3.0], [0.0, 0.0, 0.0]]


def test_kl_by_hand():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    expected = 0.5 * math.log(2.0) + 0.25 * 0.0 + 0.25 * 0.0
    assert full_kl(p.log(), q.log()).item() == pytest.approx(expected)
    assert full_kl(q.log(), q.log()).item() == pytest.approx(0.0)


def test_loss_on_a_hand_computed_group():
    # K=2 moves of L=1 token over a vocabulary of 2: policy (0.8, 0.2), reference (0.5, 0.5)
    policy = torch.tensor([[[0.8, 0.2]], [[0.8, 0.2]]]).log()
    reference = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]]).log()
    moves = torch.tensor([[0], [1]])
    rewards = torch.tensor([-1.0, -3.0])  # advantages +1, -1
    terms = grpo_loss(policy, reference, moves, rewards, beta=0.1)
    surrogate = -(1.0 * math.log(0.8) + (-1.0) * math.log(0.2)) / 2
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # the same at both moves; averaged over K
    assert terms.policy == pytest.approx(surrogate)
    assert terms.kl == pytest.approx(kl)
    assert terms.loss.item() == pytest.approx(surrogate + 0.1 * kl)
    assert terms.entropy == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))


def test_kl_is_zero_when_policy_equals_reference_and_never_negative():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.log_softmax(torch.randn(3, 4, 11, generator=g), -1)
        b = torch.log_softmax(torch.randn(3, 4, 11, generator=g), -1)
        assert torch.all(full_kl(a, b) >= -1e-6)
        assert torch.allclose(full_kl(a, a), torch.zeros(3, 4), atol=1e-6)


def test_loss_gradient_equals_a_naive_reimplementation():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 7, generator=g, requires_grad=True)
    ref = torch.log_softmax(torch.randn(4, 3, 7, generator=g), -1)
    moves = torch.randint(0, 7, (4, 3), generator=g)
    rewards = torch.randn(4, generator=g)
    beta = 0.3
    grpo_loss(torch.log_softmax(logits, -1), ref, moves, rewards, beta).loss.backward()
    ours = logits.grad.clone()

    logits.grad = None
    total = 0.0
    for k in range(4):  # loops, probabilities, explicit sums
        adv = rewards[k] - rewards.mean()
        logp_move = 0.0
        kl = 0.0
        for j in range(3):
            logp = torch.log_softmax(logits[k, j], -1)
            logp_move = logp_move + logp[moves[k, j]]
            kl = kl + sum(logp[v].exp() * (logp[v] - ref[k, j, v]) for v in range(7))
        total = total + (-adv * logp_move + beta * kl) / 4
    total.backward()
    assert torch.allclose(ours, logits.grad, atol=1e-5)


def test_forbidden_tokens_give_finite_loss_and_gradients():
    logits = torch.randn(2, 2, 5, requires_grad=True)
    mask = torch.tensor([True, False, False, False, False])
    policy = torch.log_softmax(logits.masked_fill(mask, float("-inf")), -1)
    reference = torch.log_softmax(torch.randn(2, 2, 5).masked_fill(mask, float("-inf")), -1)
    terms = grpo_loss(policy, reference, torch.tensor([[1, 2], [3, 4]]), torch.tensor([0.0, 1.0]), 0.1)
    terms.loss.backward()
    assert math.isfinite(terms.loss.item()) and torch.isfinite(logits.grad).all()
