"""Selection rules, top-D, the gate, and strict-improvement replacement."""

from __future__ import annotations

import math

import pytest
import torch

import frost.proposal as frost_module
from conftest import TINY_VOCAB, random_moves
from frost.errors import ConfigError
from frost.judge import Judge
from frost.proposal import RULES, Candidates, frost_step, replace, replace_with_scores, select_candidates
from frost.sampling import player_logprobs

FORBIDDEN = torch.zeros(TINY_VOCAB, dtype=torch.bool)
FORBIDDEN[:3] = True


@pytest.fixture
def pool(tiny_model, instance):
    moves = random_moves(4, instance.move_length)
    judge = Judge(tiny_model)
    taylor = judge.taylor(instance, moves)
    prior = player_logprobs(tiny_model, instance.prompt_ids, moves, forbidden=FORBIDDEN)
    return judge, taylor, prior


def brute_force_scores(rule: str, taylor, prior, tau: float, rank_by: str = "reward") -> torch.Tensor:
    """Full [K, L, V] ranking score of a rule, with inadmissible entries at -inf, computed naively: rules that
    estimate rewards rank by a(k, j, v) = R(y_k) + the estimated change (Algorithm 1), or by the change alone."""
    k, length, vocab = taylor.shape
    emb = taylor.embedding
    score = torch.zeros(k, length, vocab)
    for kk in range(k):
        for j in range(length):
            y = int(taylor.moves[kk, j])
            t_term = (emb - emb[y]) @ taylor.grad[kk, j]
            o_term = taylor.judge_logprobs[kk, j] - taylor.judge_logprobs[kk, j, y]
            p_term = prior[kk, j]
            spec = RULES[rule]
            s = torch.zeros(vocab)
            if "T" in spec.signals:
                s += t_term
            if "O" in spec.signals:
                s += o_term
            if "P" in spec.signals:
                s += p_term
            if rank_by == "reward" and spec.signals and "P" not in spec.signals:
                s += taylor.rewards[kk]
            s[y] = -math.inf
            s[FORBIDDEN] = -math.inf
            if spec.gated:
                s[~(prior[kk, j] > math.log(tau))] = -math.inf
            score[kk, j] = s
    return score


@pytest.mark.parametrize("rule", [r for r in RULES if r != "random"])
@pytest.mark.parametrize("budget", [1, 7, 40])
@pytest.mark.parametrize("gate_path", ["dense", "sparse"])
@pytest.mark.parametrize("rank_by", ["reward", "lift"])
def test_top_d_equals_brute_force_sort(pool, rule, budget, gate_path, rank_by, monkeypatch):
    """Both ways of applying the gate (mask the dense grid, or score only the admitted entries) rank like a sort."""
    _, taylor, prior = pool
    tau = 0.02
    monkeypatch.setattr(frost_module, "SPARSE_GATE_FRACTION", 1.0)
    sparse = gate_path == "sparse"
    cands = select_candidates(
        rule, taylor, prior, budget, tau=tau, forbidden=FORBIDDEN, sparse_gate=sparse, rank_by=rank_by
    )
    full = brute_force_scores(rule, taylor, prior, tau, rank_by).view(-1)
    expected = torch.sort(full[torch.isfinite(full)], descending=True).values[:budget]
    assert len(cands) == len(expected)
    assert torch.allclose(cands.score, expected, atol=1e-4)
    # each returned candidate really has the score it claims
    picked = full.view(taylor.shape)[cands.parent, cands.position, cands.token]
    assert torch.allclose(picked, cands.score, atol=1e-4)


@pytest.mark.parametrize("rule", list(RULES))
def test_candidates_never_keep_the_parent_token_nor_use_forbidden_tokens(pool, rule):
    _, taylor, prior = pool
    cands = select_candidates(rule, taylor, prior, 60, forbidden=FORBIDDEN, generator=torch.Generator().manual_seed(0))
    assert 0 < len(cands) <= 60
    if not RULES[rule].gated:
        assert len(cands) == 60
    assert not torch.any(taylor.moves[cands.parent, cands.position] == cands.token)
    assert not torch.any(FORBIDDEN[cands.token])
    flat = cands.parent * 1000 * TINY_VOCAB + cands.position * TINY_VOCAB + cands.token
    assert len(torch.unique(flat)) == len(flat)


@pytest.mark.parametrize("rule", ["taylor-gated", "full-gated", "judge-gated"])
def test_gate_holds(pool, rule):
    _, taylor, prior = pool
    tau = 0.05
    cands = select_candidates(rule, taylor, prior, 500, tau=tau, forbidden=FORBIDDEN)
    assert len(cands) > 0
    probs = prior[cands.parent, cands.position, cands.token].exp()
    assert torch.all(probs > tau)
    # and the gate is the only reason candidates are missing: every admissible entry was taken
    admissible = ((prior.exp() > tau) & ~FORBIDDEN).sum() - (prior.exp() > tau).gather(
        -1, taylor.moves[..., None]
    ).sum()
    assert len(cands) == int(admissible)


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_chunked_selection_equals_unchunked(pool, rule, fraction, monkeypatch):
    _, taylor, prior = pool
    monkeypatch.setattr(frost_module, "SPARSE_GATE_FRACTION", fraction)
    a = select_candidates(rule, taylor, prior, 13, forbidden=FORBIDDEN, generator=torch.Generator().manual_seed(3))
    b = select_candidates(
        rule, taylor, prior, 13, forbidden=FORBIDDEN, generator=torch.Generator().manual_seed(3), max_chunk_bytes=1
    )
    if rule == "random":  # random draws differ with chunking; only the count and admissibility are comparable
        assert len(a) == len(b) == 13
    else:
        assert torch.allclose(a.score, b.score)
        assert torch.equal(a.children(taylor.moves), b.children(taylor.moves))


@pytest.mark.parametrize("rank_by", ["reward", "lift"])
def test_approx_is_the_taylor_estimate(pool, rank_by):
    _, taylor, prior = pool
    for rule in ("taylor", "full", "judge-gated"):
        cands = select_candidates(rule, taylor, prior, 10, tau=1e-9, forbidden=FORBIDDEN, rank_by=rank_by)
        grid = taylor.approx(rule)
        assert torch.allclose(cands.approx, grid[cands.parent, cands.position, cands.token], atol=1e-4)
    # the paper's ranking takes the D largest a(k, j, v) of the whole grid
    top = select_candidates("taylor", taylor, prior, 10, forbidden=FORBIDDEN, rank_by="reward")
    grid = taylor.approx("taylor").clone()
    grid.scatter_(-1, taylor.moves[..., None], -math.inf)
    grid[..., FORBIDDEN] = -math.inf
    assert torch.allclose(top.approx, torch.sort(grid.view(-1), descending=True).values[:10], atol=1e-4)
    assert torch.isnan(select_candidates("topprob", taylor, prior, 5).approx).all()


def test_children_exact_scores_equal_independent_recomputation(pool, instance):
    judge, taylor, prior = pool
    cands = select_candidates("taylor-gated", taylor, prior, 6, tau=1e-3, forbidden=FORBIDDEN)
    record = replace(judge, instance, taylor.moves, taylor.rewards, cands, rule="taylor-gated")
    for d in range(len(cands)):
        child = taylor.moves[cands.parent[d]].clone()
        child[cands.position[d]] = cands.token[d]
        fresh = Judge(judge.model).rewards(instance, child.view(1, -1))[0]
        assert record.child_rewards[d].item() == pytest.approx(fresh.item(), abs=1e-4)


def test_replacement_keeps_best_strictly_better_child_and_never_accepts_ties():
    parents = torch.tensor([[5, 6], [7, 8], [9, 10]])
    parent_rewards = torch.tensor([-10.0, -20.0, -30.0])
    cands = Candidates(
        parent=torch.tensor([0, 0, 1, 1, 2]),
        position=torch.tensor([0, 1, 0, 1, 0]),
        token=torch.tensor([11, 12, 13, 14, 15]),
        score=torch.zeros(5),
        approx=torch.zeros(5),
    )
    # parent 0: children -12 (worse), -9 (better); parent 1: -20 (tie), -25; parent 2: -29.5 (better)
    child_rewards = torch.tensor([-12.0, -9.0, -20.0, -25.0, -29.5])
    rec = replace_with_scores(parents, parent_rewards, cands, child_rewards)
    assert rec.chosen.tolist() == [1, -1, 4]
    assert rec.moves.tolist() == [[5, 12], [7, 8], [15, 10]]
    assert rec.rewards.tolist() == [-9.0, -20.0, -29.5]
    assert rec.hit_rate == pytest.approx(2 / 5)
    assert rec.mean_lift == pytest.approx((1.0 + 0.5) / 2)
    assert rec.frac_replaced == pytest.approx(2 / 3)


def test_replacement_never_lowers_a_reward(tiny_model, instance):
    judge = Judge(tiny_model)
    moves = random_moves(6, instance.move_length, seed=11)
    prior = player_logprobs(tiny_model, instance.prompt_ids, moves, forbidden=FORBIDDEN)
    for rule in RULES:
        rec = frost_step(
            judge,
            instance,
            moves,
            prior,
            rule=rule,
            budget=20,
            tau=1e-3,
            forbidden=FORBIDDEN,
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.all(rec.rewards >= rec.parent_rewards)
        replaced = rec.chosen >= 0
        assert torch.all(rec.rewards[replaced] > rec.parent_rewards[replaced])
        assert torch.equal(rec.moves[~replaced], rec.parents[~replaced])
        # replaced moves really score what the record says
        assert torch.allclose(judge.rewards(instance, rec.moves), rec.rewards, atol=1e-4)


def test_rules_without_gradient_skip_the_backward(tiny_model, instance):
    moves = random_moves(3, instance.move_length)
    prior = player_logprobs(tiny_model, instance.prompt_ids, moves, forbidden=FORBIDDEN)
    for rule, backward in (("judge-gated", 0), ("topprob", 0), ("taylor-gated", 3)):
        judge = Judge(tiny_model)
        frost_step(judge, instance, moves, prior, rule=rule, budget=4, forbidden=FORBIDDEN)
        assert judge.backward_sequences == backward


def test_zero_budget_changes_nothing(pool, instance):
    judge, taylor, prior = pool
    cands = select_candidates("taylor-gated", taylor, prior, 0)
    rec = replace(judge, instance, taylor.moves, taylor.rewards, cands)
    assert len(cands) == 0 and math.isnan(rec.hit_rate) and rec.frac_replaced == 0.0
    assert torch.equal(rec.moves, taylor.moves)


def test_bad_rule_and_tau_are_clear_errors(pool):
    _, taylor, prior = pool
    with pytest.raises(ConfigError, match=r"frost\.rule"):
        select_candidates("nope", taylor, prior, 3)
    for tau in (0.0, 1.0, -1.0, 2.0):
        with pytest.raises(ConfigError, match=r"frost\.tau"):
            select_candidates("taylor-gated", taylor, prior, 3, tau=tau)
    with pytest.raises(ConfigError, match=r"frost\.D"):
        select_candidates("taylor", taylor, prior, -1)


@pytest.mark.parametrize("rule", ["taylor", "taylor-gated", "full-gated"])
def test_bounded_memory_top_d_at_qwen3_vocabulary(rule):
    """Qwen3's |V| = 151,936 at K=16, L=12: the dense grid would be 117 MB of float32; chunks of at most 8 MiB of
    scores give the same candidates."""
    from frost.judge import JudgeScores, TaylorResult

    k, length, vocab, hidden = 16, 12, 151_936, 8
    g = torch.Generator().manual_seed(0)
    moves = torch.randint(0, vocab, (k, length), generator=g)
    taylor = TaylorResult(
        moves=moves,
        scores=JudgeScores(
            (torch.randn(k, generator=g) * 5).view(k, 1),
            torch.ones(k, 1, dtype=torch.bool),
            torch.zeros(k, 1, dtype=torch.bool),
            1,
        ),
        valid=torch.ones(k, length, dtype=torch.bool),
        grad=torch.randn(k, length, hidden, generator=g),
        judge_logprobs=torch.log_softmax(torch.randn(k, length, vocab, generator=g), -1),
        embedding=torch.randn(vocab, hidden, generator=g),
        move_scored=True,
    )
    prior = torch.log_softmax(torch.randn(k, length, vocab, generator=g) * 4, -1)
    whole = select_candidates(rule, taylor, prior, 32, tau=1e-3, max_chunk_bytes=2**40)
    chunked = select_candidates(rule, taylor, prior, 32, tau=1e-3, max_chunk_bytes=8 * 2**20)
    assert len(whole) == 32
    assert torch.equal(whole.children(moves), chunked.children(moves))
    assert torch.allclose(whole.score, chunked.score)
