"""`frost diagnose samples RUN_A RUN_B`: the paper's Appendix D tables from two trained players.

For the first N validation prompts (30 in the paper), each player samples 8 moves (the same seed per prompt for both)
and the judge scores them. Table 1: mean reward, best-of-8, score variance, token entropy, prefix CE (the judge's
cross-entropy of the move) and text CE (of the continuation z). Table 2: how often A's best strictly beats B's, groups
with zero score variance, best moves that copy the beginning, and A's wins where B's best is not a copy. Example
tables (like Tables 3-6) list the eight samples of each side with their scores, the best in bold.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frost.games import GameInstance, SpecGame
from frost.judge import Judge
from frost.models import LoadedModel, forbidden_token_mask
from frost.moves import decision_mask, move_masks
from frost.run.checkpoint import label as run_label
from frost.run.checkpoint import player_and_judge
from frost.step import shared_prefix_sampler


@dataclass
class Group:
    """One player's samples on one prompt."""

    texts: list[str]
    rewards: list[float]
    prefix_ce: list[float]
    text_ce: list[float]
    entropy: float
    copy: bool

    @property
    def best(self) -> float:
        """The group's best reward (best-of-k)."""
        return max(self.rewards)


def sample_groups(
    player: Any, judge: Judge, instances: list[GameInstance], game: SpecGame, *, samples: int, seed: int
) -> list[Group]:
    """Each prompt's group of `samples` moves, scored; the same generator seed per prompt for every player."""
    vocab = player.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(game.tokenizer, vocab, judge.device)
    groups = []
    for n, inst in enumerate(instances):
        gen = torch.Generator(device=judge.device).manual_seed(seed * 1_000_003 + n)
        s = shared_prefix_sampler(player, [inst], samples, [move_masks(inst, forbidden)], 1.0, gen)[0]
        scores = judge.score(inst, s.moves)
        move_ce = (-scores.move_logprob).tolist()
        text_ce = (-scores.rest_logprob).tolist()
        rewards = scores.rewards.tolist()
        texts = [game.move_text(inst, m) for m in s.moves.tolist()]
        best = max(range(samples), key=rewards.__getitem__)
        entropy = float(s.entropy(decision_mask(inst, s.moves)).mean())
        groups.append(Group(texts, rewards, move_ce, text_ce, entropy, game.copies(inst, texts[best])))
    return groups


def table1(groups: list[Group]) -> dict[str, float]:
    """Appendix D's Table 1 for one player: means over prompts of the group's mean and best reward, reward variance,
    token entropy, and the judge's prefix and text cross-entropies."""
    return {
        "mean_reward": statistics.fmean(statistics.fmean(g.rewards) for g in groups),
        "best_of_k": statistics.fmean(g.best for g in groups),
        "variance": statistics.fmean(statistics.pvariance(g.rewards) for g in groups),
        "entropy": statistics.fmean(g.entropy for g in groups),
        "prefix_ce": statistics.fmean(statistics.fmean(g.prefix_ce) for g in groups),
        "text_ce": statistics.fmean(statistics.fmean(g.text_ce) for g in groups),
    }


def table2(a: list[Group], b: list[Group]) -> dict[str, Any]:
    """Appendix D's Table 2 for two players on the same prompts: head-to-head best-of-k, zero-variance groups and
    best moves that copy the beginning (also on the prompts where `b`'s best move is not a copy)."""
    remaining = [i for i, g in enumerate(b) if not g.copy]
    return {
        "prompts": len(a),
        "a_best_beats_b_best": sum(x.best > y.best for x, y in zip(a, b, strict=True)),
        "a_zero_variance": sum(len(set(g.rewards)) == 1 for g in a),
        "b_zero_variance": sum(len(set(g.rewards)) == 1 for g in b),
        "a_best_copies_beginning": sum(g.copy for g in a),
        "b_best_copies_beginning": sum(g.copy for g in b),
        "b_not_copy_prompts": len(remaining),
        "a_wins_where_b_not_copy": sum(a[i].best > b[i].best for i in remaining),
    }


def example_table(inst: GameInstance, tokenizer: Any, a: Group, b: Group, names: tuple[str, str]) -> str:
    """Markdown like Tables 3-6: beginning, end, and the eight samples a side, the best in bold."""
    before = tokenizer.decode(list(inst.judge_prefix))
    after = tokenizer.decode(list(inst.judge_suffix))
    lines = [f"Judge before the move: {before!r}", "", f"Judge after the move: {after!r}", ""]
    lines.append(f"| {names[0]} | score | {names[1]} | score |")
    lines.append("|---|---:|---|---:|")

    def cells(g: Group) -> list[str]:
        order = sorted(range(len(g.rewards)), key=lambda i: -g.rewards[i])
        top = g.best
        return [
            f"**{g.texts[i]!r}** | **{g.rewards[i]:.3f}**"
            if g.rewards[i] == top
            else f"{g.texts[i]!r} | {g.rewards[i]:.3f}"
            for i in order
        ]

    for left, right in zip(cells(a), cells(b), strict=True):
        lines.append(f"| {left} | {right} |")
    return "\n".join(lines)


def diagnose_samples(
    run_a: Path,
    run_b: Path,
    base: LoadedModel,
    instances: list[GameInstance],
    game: SpecGame,
    *,
    samples: int = 8,
    seed: int = 0,
    examples: int = 4,
) -> tuple[dict[str, Any], str]:
    """Both players (adapters on one copy of the base model, which is also the judge) on the same prompts:
    (JSON-ready results, Markdown)."""
    tokenizer = base.tokenizer
    names = (run_label(run_a), run_label(run_b))
    player, judge = player_and_judge(base, [run_a, run_b])
    player.set_adapter("run0")
    groups_a = sample_groups(player, judge, instances, game, samples=samples, seed=seed)
    player.set_adapter("run1")
    groups_b = sample_groups(player, judge, instances, game, samples=samples, seed=seed)
    t1 = {names[0]: table1(groups_a), names[1]: table1(groups_b)}
    t2 = table2(groups_a, groups_b)
    md = [f"## Table 1 ({len(instances)} prompts, {samples} samples each)", ""]
    md.append("| run | mean reward | best-of-k | variance | entropy | prefix CE | text CE |")
    md.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in t1.items():
        md.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
    md += ["", "## Table 2", "", "| metric | count |", "|---|---:|"]
    labels = {
        "a_best_beats_b_best": f"{names[0]} best strictly exceeds {names[1]} best",
        "a_zero_variance": f"{names[0]} groups with zero score variance",
        "b_zero_variance": f"{names[1]} groups with zero score variance",
        "a_best_copies_beginning": f"{names[0]} best copies the text it was shown ({game.copy_metric_name})",
        "b_best_copies_beginning": f"{names[1]} best copies the text it was shown ({game.copy_metric_name})",
        "a_wins_where_b_not_copy": f"{names[0]} wins where {names[1]}'s best is not a copy",
    }
    for key, label in labels.items():
        md.append(
            f"| {label} | {t2[key]}/{t2['b_not_copy_prompts'] if key == 'a_wins_where_b_not_copy' else t2['prompts']} |"
        )
    md += ["", "## Examples", ""]
    for i in range(min(examples, len(instances))):
        md += [example_table(instances[i], tokenizer, groups_a[i], groups_b[i], names), ""]
    result = {
        "runs": list(names),
        "table1": t1,
        "table2": t2,
        "groups": {
            names[0]: [vars(g) for g in groups_a],
            names[1]: [vars(g) for g in groups_b],
        },
    }
    return result, "\n".join(md)


def write(result: dict[str, Any], markdown: str, out: Path) -> None:
    """`samples.json` (the results) and `samples.md` (the tables) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.json").write_text(json.dumps(result, indent=1))
    (out / "samples.md").write_text(markdown + "\n")
