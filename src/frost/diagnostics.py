"""The selection-rule experiment of §3.3 (Figures 1, 2, 5): every rule picks its top D from the same pool.

For each prompt: sample K moves, run one judge forward+backward (the Taylor grid and the position terms) and keep the
player's distributions; each rule ranks the same grid; the union of all picks is scored exactly once; replacement is
run per rule and per D. Any difference between rules is due to the ranking alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from frost.frost import Candidates, get_rule, replace_with_scores, select_candidates
from frost.games import GameInstance
from frost.judge import Judge
from frost.sampling import sample_moves


@dataclass
class SelectionRow:
    """One (prompt, rule, D) outcome."""

    prompt: int
    source: str
    rule: str
    K: int
    D: int
    best_before: float
    best_after: float
    hit_rate: float
    mean_lift: float
    frac_replaced: float


def selection_rows(
    judge: Judge,
    player: Any,
    inst: GameInstance,
    *,
    prompt_index: int,
    rules: Sequence[str],
    K: int,
    budgets: Sequence[int],
    tau: float = 1e-4,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[SelectionRow]:
    """Run the §3.3 protocol on one prompt and return a row per (rule, D)."""
    sampled = sample_moves(
        player, inst.prompt_ids, K, inst.move_length, temperature=temperature, forbidden=forbidden, generator=generator
    )
    need_grad = any(get_rule(r).needs_gradient for r in rules)
    taylor = judge.taylor(inst, sampled.moves, with_grad=need_grad)
    d_max = max(budgets)
    picks: dict[str, Candidates] = {
        r: select_candidates(r, taylor, sampled.logprobs, d_max, tau=tau, forbidden=forbidden, generator=generator)
        for r in rules
    }
    # exact scores of the union of all picks, each distinct child scored once
    all_children = torch.cat([c.children(taylor.moves) for c in picks.values() if len(c)] or [taylor.moves[:0]])
    union_rewards = judge.rewards(inst, all_children) if len(all_children) else torch.empty(0)
    rows: list[SelectionRow] = []
    offset = 0
    for r, cands in picks.items():
        child_rewards = union_rewards[offset : offset + len(cands)]
        offset += len(cands)
        for d in budgets:
            rec = replace_with_scores(taylor.moves, taylor.rewards, cands.head(d), child_rewards[:d], rule=r)
            rows.append(
                SelectionRow(
                    prompt=prompt_index,
                    source=inst.source,
                    rule=r,
                    K=K,
                    D=d,
                    best_before=rec.best_before,
                    best_after=rec.best_after,
                    hit_rate=rec.hit_rate,
                    mean_lift=rec.mean_lift,
                    frac_replaced=rec.frac_replaced,
                )
            )
    return rows


def run_selection(
    judge: Judge,
    player: Any,
    instances: Iterable[GameInstance],
    *,
    rules: Sequence[str],
    K: int,
    budgets: Sequence[int],
    tau: float = 1e-4,
    seed: int = 0,
    forbidden: torch.Tensor | None = None,
    on_rows: Callable[[list[SelectionRow]], None] | None = None,
    done: Sequence[SelectionRow] = (),
) -> list[SelectionRow]:
    """The selection experiment over prompts; `on_rows` receives each prompt's rows as soon as they exist.

    Prompts with rows in `done` (from an interrupted run) are not run again; every prompt has its own seeded
    generator, so a resumed experiment gives the rows an uninterrupted one would.
    """
    for r in rules:
        get_rule(r)
    rows: list[SelectionRow] = list(done)
    finished = {row.prompt for row in done}
    for i, inst in enumerate(instances):
        if i in finished:
            continue
        gen = torch.Generator(device=judge.device).manual_seed(seed * 1_000_003 + i)
        new = selection_rows(
            judge,
            player,
            inst,
            prompt_index=i,
            rules=rules,
            K=K,
            budgets=budgets,
            tau=tau,
            forbidden=forbidden,
            generator=gen,
        )
        rows += new
        if on_rows is not None:
            on_rows(new)
    return rows


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the finite values (NaN, NaN when there are none)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var / len(vals))


def summarize(rows: Sequence[SelectionRow]) -> list[dict[str, Any]]:
    """Per (rule, K, D): means and standard errors over prompts of each metric, and the lift over no replacement."""
    groups: dict[tuple[str, int, int], list[SelectionRow]] = {}
    for row in rows:
        groups.setdefault((row.rule, row.K, row.D), []).append(row)
    out = []
    for (rule, k, d), rs in groups.items():
        entry: dict[str, Any] = {"rule": rule, "K": k, "D": d, "prompts": len(rs)}
        for metric in ("best_before", "best_after", "hit_rate", "mean_lift", "frac_replaced"):
            entry[metric], entry[f"{metric}_se"] = mean_se([getattr(r, metric) for r in rs])
        entry["lift"], entry["lift_se"] = mean_se([r.best_after - r.best_before for r in rs])
        out.append(entry)
    return out


def markdown_table(summary: Sequence[dict[str, Any]], budgets: Sequence[int], metric: str = "lift") -> str:
    """A rules x D table of `metric` as `mean ± se`."""
    rules = list(dict.fromkeys(s["rule"] for s in summary))
    lookup = {(s["rule"], s["D"]): s for s in summary}
    head = "| rule | " + " | ".join(f"D={d}" for d in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for r in rules:
        cells = []
        for d in budgets:
            s = lookup.get((r, d))
            sign = "+" if metric == "lift" else ""
            cells.append("" if s is None else f"{s[metric]:{sign}.2f} ± {s[metric + '_se']:.2f}")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
