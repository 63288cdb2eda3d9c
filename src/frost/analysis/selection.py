"""The selection-rule experiment of §3.3 (Figures 1, 2, 5): every rule picks its top D from the same pool.

For each prompt: sample K moves, run one judge forward+backward (the Taylor grid and the position terms) and keep the
player's distributions; each rule ranks the same grid; the union of all picks is scored exactly once; replacement is
run per rule and per D. Any difference between rules is due to the ranking alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frost.analysis.stats import mean_se
from frost.games import GameInstance
from frost.judge import Judge, TaylorResult
from frost.moves import move_masks
from frost.proposal import Candidates, get_rule, replace_with_scores, select_candidates
from frost.step import shared_prefix_sampler


@dataclass
class SelectionRow:
    """One (prompt, rule, K, tau, D) outcome; `tau` is None for rules without the probability gate."""

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
    tau: float | None = None


def first_moves(taylor: TaylorResult, k: int) -> TaylorResult:
    """The Taylor result of the first `k` parents only (every per-parent quantity is independent of the others)."""
    return taylor if k == taylor.moves.shape[0] else taylor.take(slice(0, k))


def selection_rows(
    judge: Judge,
    player: Any,
    inst: GameInstance,
    *,
    prompt_index: int,
    rules: Sequence[str],
    K: int | Sequence[int],
    budgets: Sequence[int],
    tau: float | Sequence[float] = 1e-4,
    temperature: float = 1.0,
    forbidden: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    rank_by: str = "reward",
) -> list[SelectionRow]:
    """Run the §3.3 protocol on one prompt and return a row per (rule, K, tau, D).

    With several group sizes, max(K) moves are sampled and each K uses the first K of them (i.i.d. samples, so the
    first K are a sample of K); gated rules run once per tau, ungated rules once (tau None). The union of every pick
    is scored exactly once (the judge deduplicates), so all rules, sizes and gates share one pool and one set of
    exact scores.
    """
    group_sizes = [K] if isinstance(K, int) else list(K)
    taus = [tau] if isinstance(tau, int | float) else list(tau)
    base = forbidden if forbidden is not None else torch.zeros(judge.embedding.shape[0], dtype=torch.bool)
    masks = move_masks(inst, base.to(judge.device))
    sampled = shared_prefix_sampler(player, [inst], max(group_sizes), [masks], temperature, generator)[0]
    need_grad = any(get_rule(r).needs_gradient for r in rules)
    taylor_all = judge.taylor(inst, sampled.moves, with_grad=need_grad)
    d_max = max(budgets)
    picks: list[tuple[str, int, float | None, Candidates, TaylorResult]] = []
    for k in group_sizes:
        taylor = first_moves(taylor_all, k)
        logprobs = sampled.logprobs[:k]
        for r in rules:
            for t in taus if get_rule(r).gated else [None]:
                cands = select_candidates(
                    r, taylor, logprobs, d_max, tau=t if t is not None else taus[0], forbidden=masks.content,
                    generator=generator, rank_by=rank_by,
                )  # fmt: skip
                picks.append((r, k, t, cands, taylor))
    # exact scores of the union of all picks, each distinct child scored once
    kids = [c.children(ty.moves) for _, _, _, c, ty in picks if len(c)]
    all_children = torch.cat(kids) if kids else sampled.moves[:0]
    union_rewards = judge.rewards(inst, all_children) if len(all_children) else torch.empty(0)
    rows: list[SelectionRow] = []
    offset = 0
    for r, k, t, cands, taylor in picks:
        child_rewards = union_rewards[offset : offset + len(cands)]
        offset += len(cands)
        for d in budgets:
            rec = replace_with_scores(taylor.moves, taylor.rewards, cands.head(d), child_rewards[:d], rule=r)
            rows.append(
                SelectionRow(
                    prompt=prompt_index,
                    source=inst.source,
                    rule=r,
                    K=k,
                    D=d,
                    best_before=rec.best_before,
                    best_after=rec.best_after,
                    hit_rate=rec.hit_rate,
                    mean_lift=rec.mean_lift,
                    frac_replaced=rec.frac_replaced,
                    tau=t,
                )
            )
    return rows


def run_selection(
    judge: Judge,
    player: Any,
    instances: Iterable[GameInstance],
    *,
    rules: Sequence[str],
    K: int | Sequence[int],
    budgets: Sequence[int],
    tau: float | Sequence[float] = 1e-4,
    seed: int = 0,
    forbidden: torch.Tensor | None = None,
    on_rows: Callable[[list[SelectionRow]], None] | None = None,
    done: Sequence[SelectionRow] = (),
    rank_by: str = "reward",
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
            rank_by=rank_by,
        )
        rows += new
        if on_rows is not None:
            on_rows(new)
    return rows


def read_rows(path: Path, *, default_tau: float | None = None) -> list[SelectionRow]:
    """Rows appended to a rows.jsonl; a truncated last line (an interrupted write) and its prompt are dropped, so
    that a resumed run redoes that prompt whole. Rows written without a `tau` field get `default_tau` when their
    rule is gated."""
    rows: list[SelectionRow] = []
    broken: set[int] = set()
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            if "tau" not in record and get_rule(record["rule"]).gated:
                record["tau"] = default_tau
            rows.append(SelectionRow(**record))
        except (json.JSONDecodeError, TypeError, KeyError):
            if rows:
                broken.add(rows[-1].prompt)
    return [r for r in rows if r.prompt not in broken]


def start_rows(out: Path, *, resume: bool, default_tau: float | None = None) -> list[SelectionRow]:
    """Open `out`/rows.jsonl for an experiment: with `resume`, the rows of the prompts it finished (rewritten without
    a half-written tail); otherwise an empty file."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    done = read_rows(path, default_tau=default_tau) if resume and path.is_file() else []
    path.write_text("".join(json.dumps(vars(row)) + "\n" for row in done))
    return done


def append_rows(out: Path, rows: Sequence[SelectionRow]) -> None:
    """Append one prompt's rows to `out`/rows.jsonl, so that an interrupted experiment keeps them."""
    with (out / "rows.jsonl").open("a") as f:
        f.write("".join(json.dumps(vars(row)) + "\n" for row in rows))


METRICS = ("best_before", "best_after", "hit_rate", "mean_lift", "frac_replaced")


def summarize(rows: Sequence[SelectionRow]) -> list[dict[str, Any]]:
    """Per (rule, K, tau, D): means and standard errors over prompts of each metric, and the lift over no
    replacement (`lift`, per prompt best_after - best_before)."""
    groups: dict[tuple[str, int, float | None, int], list[SelectionRow]] = {}
    for row in rows:
        groups.setdefault((row.rule, row.K, row.tau, row.D), []).append(row)
    out = []
    for (rule, k, tau, d), rs in groups.items():
        entry: dict[str, Any] = {"rule": rule, "K": k, "tau": tau, "D": d, "prompts": len(rs)}
        for metric in METRICS:
            entry[metric], entry[f"{metric}_se"] = mean_se([getattr(r, metric) for r in rs])
        entry["lift"], entry["lift_se"] = mean_se([r.best_after - r.best_before for r in rs])
        out.append(entry)
    return out


def series_label(entry: dict[str, Any], summary: Sequence[dict[str, Any]], column: str = "D") -> str:
    """The name of the curve/table row an entry belongs to: the rule, plus K and tau where the summary varies them."""
    label = entry["rule"]
    if column != "K" and len({s["K"] for s in summary}) > 1:
        label += f" K={entry['K']}"
    if entry["tau"] is not None and len({s["tau"] for s in summary if s["tau"] is not None}) > 1:
        label += f" τ={entry['tau']:.0e}"
    return label


def markdown_table(summary: Sequence[dict[str, Any]], metric: str = "lift", column: str = "D") -> str:
    """A table of `metric` as `mean ± se`: one row per rule (and K / tau where they vary), one column per value of
    `column` (D or K)."""
    cols = sorted({s[column] for s in summary})
    cells: dict[str, dict[int, str]] = {}
    sign = "+" if metric == "lift" else ""
    for s in summary:
        row = cells.setdefault(series_label(s, summary, column), {})
        mean, se = s[metric], s[metric + "_se"]
        row[s[column]] = "–" if mean != mean else f"{mean:{sign}.2f}" + ("" if se != se else f" ± {se:.2f}")
    lines = ["| rule | " + " | ".join(f"{column}={c}" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, row in cells.items():
        lines.append(f"| {label} | " + " | ".join(row.get(c, "") for c in cols) + " |")
    return "\n".join(lines)


def report_text(summary: Sequence[dict[str, Any]], *, prompts: int, move_length: int, game: str = "infilling") -> str:
    """The Markdown report: best-of-K after replacement, lift, hit rate and fraction replaced, per D (and per K when
    the experiment sweeps several K)."""
    ks = sorted({s["K"] for s in summary})
    base = {k: next(s for s in summary if s["K"] == k) for k in ks}
    baselines = ", ".join(f"K={k}: {b['best_before']:.2f} ± {b['best_before_se']:.2f}" for k, b in base.items())
    parts = [
        f"Selection experiment (§3.3), game {game}: {prompts} prompts, L={move_length}, mean ± SE over prompts.",
        f"No-replacement best-of-K baseline: {baselines}.",
    ]
    titles = {
        "best_after": "Best-of-K after replacement (nats)",
        "lift": "Lift of best-of-K over no replacement (nats)",
        "hit_rate": "Hit rate (fraction of exactly scored children that beat their parent)",
        "frac_replaced": "Fraction of parents replaced",
        "mean_lift": "Mean lift of accepted children (nats)",
    }
    for metric, title in titles.items():
        parts.append(f"{title}:\n\n{markdown_table(summary, metric, 'D')}")
    if len(ks) > 1:
        parts.append(f"Best-of-K after replacement against K:\n\n{markdown_table(summary, 'best_after', 'K')}")
    return "\n\n".join(parts) + "\n"
