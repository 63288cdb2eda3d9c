"""The selection experiment: one shared pool per prompt, per-rule replacement, resume, aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_VOCAB, make_instance
from frost.analysis.selection import markdown_table, read_rows, report_text, run_selection, summarize
from frost.analysis.stats import mean_se
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


def sweep(tiny_model, K, tau, rules=RULES, prompts=2):
    instances = [make_instance(seed=s) for s in range(prompts)]
    return run_selection(
        Judge(tiny_model), tiny_model, instances, rules=rules, K=K, budgets=[1, 4], tau=tau, forbidden=FORBIDDEN
    )


def test_group_size_sweep_nests_the_groups(tiny_model):
    rows = sweep(tiny_model, K=[2, 4, 8], tau=1e-3)
    assert {r.K for r in rows} == {2, 4, 8}
    assert len(rows) == 2 * 3 * len(RULES) * 2
    for p in range(2):
        # each K uses the first K of the same sampled moves, so the no-replacement best can only grow with K
        before = [next(r.best_before for r in rows if r.prompt == p and k == r.K) for k in (2, 4, 8)]
        assert before == sorted(before)
        # all rules share one pool per (prompt, K)
        for k in (2, 4, 8):
            assert len({r.best_before for r in rows if r.prompt == p and k == r.K}) == 1


def test_tau_sweep_rows_match_single_tau_runs(tiny_model):
    rules = ["taylor", "topprob", "taylor-gated", "judge-gated"]
    rows = sweep(tiny_model, K=4, tau=[1e-2, 1e-3], rules=rules)
    gated = [r for r in rows if r.rule.endswith("-gated")]
    assert {r.tau for r in gated} == {1e-2, 1e-3}
    assert all(r.tau is None for r in rows if not r.rule.endswith("-gated"))
    assert len(rows) == 2 * (2 + 2 * 2) * 2
    for tau in (1e-2, 1e-3):
        single = sweep(tiny_model, K=4, tau=tau, rules=rules)
        mine = [r for r in rows if r.tau in (None, tau)]
        key = lambda r: (r.prompt, r.rule, r.D)  # noqa: E731
        assert repr(sorted(mine, key=key)) == repr(sorted(single, key=key))


def test_summary_and_tables_of_a_sweep(tiny_model):
    rows = sweep(tiny_model, K=[2, 4], tau=[1e-2, 1e-3], rules=["topprob", "taylor-gated"])
    summary = summarize(rows)
    assert {(s["rule"], s["K"], s["tau"]) for s in summary} == {
        ("topprob", 2, None), ("topprob", 4, None),
        ("taylor-gated", 2, 1e-2), ("taylor-gated", 2, 1e-3), ("taylor-gated", 4, 1e-2), ("taylor-gated", 4, 1e-3),
    }  # fmt: skip
    table = markdown_table(summary, "best_after", "D")
    assert "| taylor-gated K=4 τ=1e-03 |" in table and "D=1 | D=4" in table
    by_k = markdown_table(summary, "best_after", "K")
    assert "K=2 | K=4" in by_k
    text = report_text(summary, prompts=2, move_length=4)
    assert "Best-of-K after replacement against K" in text


def test_read_rows_drops_an_interrupted_prompt(tiny_model, tmp_path):
    import json

    rows = run(tiny_model)
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(vars(r)) for r in rows]
    path.write_text("\n".join(lines) + "\n" + lines[0][:30])
    back = read_rows(path)
    assert repr(back) == repr([r for r in rows if r.prompt < 2])
    # rows written before rows carried tau get the run's gate when their rule is gated
    old = {k: v for k, v in vars(rows[0]).items() if k != "tau"}
    gated = next(r for r in rows if r.rule == "taylor-gated")
    old_gated = {k: v for k, v in vars(gated).items() if k != "tau"}
    path.write_text(json.dumps(old) + "\n" + json.dumps(old_gated) + "\n")
    a, b = read_rows(path, default_tau=1e-3)
    assert a.tau is None and b.tau == 1e-3


def test_figures_of_every_sweep(tiny_model, tmp_path):
    from frost.analysis.selection_plots import write_figures

    rows = sweep(tiny_model, K=[2, 4], tau=[1e-2, 1e-3], rules=["random", "taylor", "taylor-gated"])
    paths = write_figures(summarize(rows), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == [
        "figure1-best-of-k-k2.png", "figure1-best-of-k-k4.png",
        "figure2-group-size-d1.png", "figure2-group-size-d4.png",
        "figure5-frac-replaced-k2.png", "figure5-frac-replaced-k4.png",
        "figure6-gate-taylor-gated-k2.png", "figure6-gate-taylor-gated-k4.png",
    ]  # fmt: skip
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
