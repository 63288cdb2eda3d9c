"""Does a second Frost round find what the first missed, and at what judge cost? (`frost diagnose rounds`)

For each prompt: sample K moves once; for each rule, run `step.frost_rounds` (the code that trains with
`frost.rounds`) for R rounds on that same group, and record after every round the group's best reward and the judge
sequences (forward, backward) and player sequences spent so far. A text whose round replaced nothing stops (its rule
would propose the same children again), so its later rounds cost nothing and keep its best. The summary gives, per
rule and round, the mean lift of best-of-K over the sampled best, the judge forwards spent, and the marginal lift
per 100 judge forward sequences of that round.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from frost.analysis.stats import mean_se
from frost.games import GameInstance
from frost.judge import Judge
from frost.moves import move_masks
from frost.proposal import FrostInput
from frost.rules import get_rule
from frost.step import GroupSettings, frost_rounds, shared_prefix_sampler


@dataclass
class RoundRow:
    """One (prompt, rule, round) outcome; counts are cumulative from the start of round 1."""

    prompt: int
    rule: str
    round: int
    sampled_best: float
    """Best exact reward of the K sampled moves."""
    best: float
    """Best reward of the group after this round."""
    judge_fwd: int
    judge_bwd: int
    player_fwd: int
    """Player sequences re-read for the gate (the sampling pass not counted)."""
    ran: bool
    """Whether this round ran for this prompt (False: an earlier round replaced nothing)."""


def round_rows(
    judge: Judge,
    player: Any,
    inst: GameInstance,
    *,
    prompt_index: int,
    rules: Sequence[str],
    K: int,
    D: int,
    rounds: int,
    tau: float = 1e-4,
    temperature: float = 1.0,
    forbidden: torch.Tensor,
    generator: torch.Generator | None = None,
    rank_by: str = "reward",
) -> list[RoundRow]:
    """R rounds of every rule on one prompt's sampled group: a row per rule and round."""
    masks = move_masks(inst, forbidden)
    sampled = shared_prefix_sampler(player, [inst], K, [masks], temperature, generator)[0]
    rows: list[RoundRow] = []
    for rule in rules:
        spec = get_rule(rule)
        reads_player = spec.gated or "P" in spec.signals
        settings = GroupSettings(
            algorithm="frost", K=K, rule=rule, budget=D, tau=tau, rank_by=rank_by, temperature=temperature,
            rounds=rounds,
        )  # fmt: skip
        start = (judge.forward_sequences, judge.backward_sequences)
        spent: dict[int, tuple[int, int]] = {}

        def on_round(r: int, start: tuple[int, int] = start, spent: dict[int, tuple[int, int]] = spent) -> None:
            spent[r] = (judge.forward_sequences - start[0], judge.backward_sequences - start[1])

        text = FrostInput(inst, sampled.moves, sampled.logprobs, masks.content)
        history, _ = frost_rounds(
            player, judge, [text], settings, sampling_masks=[masks.sampling], generator=generator, on_round=on_round
        )
        records = history[0]
        sampled_best = float(records[0].parent_rewards.max())
        reread = 0
        for r in range(1, rounds + 1):
            ran = r <= len(records)
            rec = records[min(r, len(records)) - 1]
            if ran and r > 1:
                reread += int((records[r - 2].chosen >= 0).sum())
            fwd, bwd = spent[min(r, len(records))]
            row = RoundRow(
                prompt=prompt_index, rule=rule, round=r, sampled_best=sampled_best, best=float(rec.rewards.max()),
                judge_fwd=fwd, judge_bwd=bwd, player_fwd=reread if reads_player else 0, ran=ran,
            )  # fmt: skip
            rows.append(row)
    return rows


def run_rounds(
    judge: Judge,
    player: Any,
    instances: Iterable[GameInstance],
    *,
    seed: int = 0,
    on_rows: Callable[[list[RoundRow]], None] | None = None,
    **kwargs: Any,
) -> list[RoundRow]:
    """`round_rows` over prompts, each prompt with its own seeded generator (the selection experiment's seeds)."""
    rows: list[RoundRow] = []
    for i, inst in enumerate(instances):
        gen = torch.Generator(device=judge.device).manual_seed(seed * 1_000_003 + i)
        new = round_rows(judge, player, inst, prompt_index=i, generator=gen, **kwargs)
        rows += new
        if on_rows is not None:
            on_rows(new)
    return rows


def summarize_rounds(rows: Sequence[RoundRow]) -> list[dict[str, Any]]:
    """Per rule and round: mean lift of best-of-K over the sampled best (and its standard error), the prompts whose
    best improved in that round, the mean judge sequences spent so far, and the round's marginal lift per 100 judge
    forward sequences (its mean added lift over its mean added forwards)."""
    out: list[dict[str, Any]] = []
    for rule in dict.fromkeys(r.rule for r in rows):
        by_round: dict[int, list[RoundRow]] = {}
        for r in rows:
            if r.rule == rule:
                by_round.setdefault(r.round, []).append(r)
        previous: tuple[float, float] | None = None
        previous_best: dict[int, float] = {}
        for n in sorted(by_round):
            group = by_round[n]
            lift, se = mean_se([r.best - r.sampled_best for r in group])
            fwd = sum(r.judge_fwd for r in group) / len(group)
            improved = sum(r.best > previous_best.get(r.prompt, r.sampled_best) for r in group)
            marginal = float("nan")
            if previous is None:
                marginal = 100 * lift / fwd if fwd else float("nan")
            elif fwd > previous[1]:
                marginal = 100 * (lift - previous[0]) / (fwd - previous[1])
            out.append(
                {
                    "rule": rule,
                    "round": n,
                    "prompts": len(group),
                    "lift": lift,
                    "lift_se": se,
                    "improved": improved,
                    "ran": sum(r.ran for r in group),
                    "judge_fwd": fwd,
                    "judge_bwd": sum(r.judge_bwd for r in group) / len(group),
                    "player_fwd": sum(r.player_fwd for r in group) / len(group),
                    "lift_per_100_fwd": marginal,
                }
            )
            previous = (lift, fwd)
            previous_best = {r.prompt: r.best for r in group}
    return out


def rounds_markdown(summary: Sequence[dict[str, Any]], *, prompts: int, K: int, D: int) -> str:
    """The summary as a Markdown table."""
    lines = [
        f"Frost rounds on {prompts} prompts, K={K}, D={D} per round: lift of best-of-{K} over the sampled best "
        "(mean +- SE over prompts), prompts whose best improved in the round, judge sequences per prompt so far, "
        "and the round's added lift per 100 judge forward sequences.",
        "",
        "| rule | round | lift (nats) | improved / ran | judge fwd / bwd seqs | player re-reads | lift per 100 fwd |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['rule']} | {s['round']} | {s['lift']:+.2f} +- {s['lift_se']:.2f} | {s['improved']} / {s['ran']} "
            f"| {s['judge_fwd']:.1f} / {s['judge_bwd']:.1f} | {s['player_fwd']:.1f} | {s['lift_per_100_fwd']:+.2f} |"
        )
    return "\n".join(lines)


def write_rounds(rows: Sequence[RoundRow], summary: Sequence[dict[str, Any]], text: str, out: Path) -> None:
    """rows.jsonl, summary.json and table.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))
    (out / "summary.json").write_text(json.dumps(list(summary), indent=1))
    (out / "table.md").write_text(text + "\n")
