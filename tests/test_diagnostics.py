"""The selection experiment: one shared pool per prompt, per-rule replacement, resume, aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_VOCAB, make_instance
from frost.diagnostics import mean_se, run_selection, summarize
from frost.judge import Judge

FORBIDDEN = torch.zeros(TINY_VOCAB, dtype=torch.bool)
FORBIDDEN[:3] = True
RULES = ["random", "topprob", "taylor-gated", "full-gated", "judge-gated"]


def run(tiny_model, done=()):
    instances = [make_instance(seed=s) for s in range(3)]
    return run_selection(
        Judge(tiny_model), tiny_model, instances, rules=RULES, K=4, budgets=[1, 3, 6], tau=1e-3, forbidden=FORBIDDEN,
        done=done,
    )  # fmt: skip


def test_rows_cover_every_prompt_rule_and_budget_and_never_lose_reward(tiny_model):
    rows = run(tiny_model)
    assert len(rows) == 3 * len(RULES) * 3
    for row in rows:
        assert row.best_after >= row.best_before
        assert 0.0 <= row.frac_replaced <= 1.0
    # within a rule and prompt, a larger budget never does worse (its picks extend the smaller budget's)
    for p in range(3):
        for rule in RULES:
            best = [r.best_after for r in rows if r.prompt == p and r.rule == rule]
            assert best == sorted(best)
    # all rules share one pool: the same parents, hence the same baseline, per prompt
    for p in range(3):
        assert len({r.best_before for r in rows if r.prompt == p}) == 1


def test_resume_gives_the_rows_of_an_uninterrupted_run(tiny_model):
    full = run(tiny_model)
    partial = [r for r in full if r.prompt < 2]
    resumed = run(tiny_model, done=partial)
    assert repr(resumed) == repr(full)  # repr: NaN mean lifts compare equal


def test_mean_se_and_summary():
    mean, se = mean_se([1.0, 2.0, 3.0, float("nan")])
    assert mean == pytest.approx(2.0) and se == pytest.approx(math.sqrt(1.0 / 3))
    assert all(math.isnan(v) for v in mean_se([float("nan")]))


def test_summary_lift_is_after_minus_before(tiny_model):
    rows = run(tiny_model)
    for entry in summarize(rows):
        mine = [r for r in rows if r.rule == entry["rule"] and entry["D"] == r.D]
        assert entry["lift"] == pytest.approx(sum(r.best_after - r.best_before for r in mine) / len(mine))
        assert entry["prompts"] == 3
