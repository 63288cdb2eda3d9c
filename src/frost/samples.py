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
import yaml

from frost.errors import ConfigError
from frost.games import GameInstance
from frost.judge import Judge
from frost.models import LoadedModel, forbidden_token_mask
from frost.sampling import sample_moves
from frost.trainer import copies_beginning


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
        return max(self.rewards)


def resolve_checkpoint(path: Path) -> tuple[Path, Path]:
    """(run folder, adapter file) of a run folder (its latest checkpoint) or of one checkpoint folder inside it."""
    if (path / "adapter.safetensors").is_file():
        run_dir = path.parent.parent
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{path}: a checkpoint must sit in RUN/checkpoints/ next to RUN/config.yaml")
        return run_dir, path / "adapter.safetensors"
    latest = path / "checkpoints" / "latest"
    if not (path / "config.yaml").is_file() or not latest.is_file():
        raise ConfigError(
            f"{path} is neither a run folder with a checkpoint (checkpoints/latest) nor a checkpoint folder "
            "(adapter.safetensors)"
        )
    return path, path / "checkpoints" / latest.read_text().strip() / "adapter.safetensors"


def _label(path: Path) -> str:
    run_dir, _ = resolve_checkpoint(path)
    return run_dir.name if run_dir == path else f"{run_dir.name}/{path.name}"


def _lora_config(path: Path) -> Any:
    from peft import LoraConfig

    run_dir, _ = resolve_checkpoint(path)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    lora = config.get("lora", {})
    return LoraConfig(
        r=lora.get("rank", 16),
        lora_alpha=lora.get("alpha", 32),
        target_modules=lora.get("target_modules"),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )


def _adapter_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(resolve_checkpoint(path)[1]))


def load_players(runs: list[Path], base: LoadedModel) -> Any:
    """One PeftModel over the shared base weights with each run's adapter (a run folder's latest checkpoint, or a
    checkpoint folder), named "run0", "run1", ..."""
    from peft import get_peft_model, set_peft_model_state_dict

    player = None
    for i, run_dir in enumerate(runs):
        name = f"run{i}"
        state = _adapter_state(run_dir)
        if player is None:
            player = get_peft_model(base.model, _lora_config(run_dir), adapter_name=name)
        else:
            player.add_adapter(name, _lora_config(run_dir))
        set_peft_model_state_dict(player, state, adapter_name=name)
    assert player is not None
    player.eval()
    return player


def sample_groups(
    player: Any, judge: Judge, instances: list[GameInstance], tokenizer: Any, *, samples: int, seed: int
) -> list[Group]:
    """Each prompt's group of `samples` moves, scored; the same generator seed per prompt for every player."""
    vocab = player.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(tokenizer, vocab, judge.device)
    groups = []
    for n, inst in enumerate(instances):
        gen = torch.Generator(device=judge.device).manual_seed(seed * 1_000_003 + n)
        s = sample_moves(player, inst.prompt_ids, samples, inst.move_length, forbidden=forbidden, generator=gen)
        lps = judge.token_logprobs(inst, s.moves)
        move_ce = (-lps[:, : inst.move_length].sum(-1)).tolist()
        text_ce = (-lps[:, inst.move_length :].sum(-1)).tolist()
        rewards = lps.sum(-1).tolist()
        texts = [tokenizer.decode(m) for m in s.moves.tolist()]
        begin = tokenizer.decode(list(inst.meta.get("begin_ids", inst.judge_prefix)))
        best = max(range(samples), key=rewards.__getitem__)
        groups.append(
            Group(texts, rewards, move_ce, text_ce, float(s.entropy().mean()), copies_beginning(texts[best], begin))
        )
    return groups


def table1(groups: list[Group]) -> dict[str, float]:
    return {
        "mean_reward": statistics.fmean(statistics.fmean(g.rewards) for g in groups),
        "best_of_k": statistics.fmean(g.best for g in groups),
        "variance": statistics.fmean(statistics.pvariance(g.rewards) for g in groups),
        "entropy": statistics.fmean(g.entropy for g in groups),
        "prefix_ce": statistics.fmean(statistics.fmean(g.prefix_ce) for g in groups),
        "text_ce": statistics.fmean(statistics.fmean(g.text_ce) for g in groups),
    }


def table2(a: list[Group], b: list[Group]) -> dict[str, Any]:
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
    begin = tokenizer.decode(list(inst.meta.get("begin_ids", inst.judge_prefix)))
    end = tokenizer.decode(list(inst.judge_suffix))
    lines = [f"Beginning (x): {begin!r}", "", f"End (z): {end!r}", "", f"| {names[0]} | score | {names[1]} | score |"]
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
    *,
    samples: int = 8,
    seed: int = 0,
    examples: int = 4,
) -> tuple[dict[str, Any], str]:
    """Both players (adapters on one copy of the base model, which is also the judge) on the same prompts:
    (JSON-ready results, Markdown)."""
    tokenizer = base.tokenizer
    names = (_label(run_a), _label(run_b))
    player = load_players([run_a, run_b], base)
    judge = Judge(player, context=player.disable_adapter)
    player.set_adapter("run0")
    groups_a = sample_groups(player, judge, instances, tokenizer, samples=samples, seed=seed)
    player.set_adapter("run1")
    groups_b = sample_groups(player, judge, instances, tokenizer, samples=samples, seed=seed)
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
        "a_best_copies_beginning": f"{names[0]} best is a repeat of the beginning",
        "b_best_copies_beginning": f"{names[1]} best is a repeat of the beginning",
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.json").write_text(json.dumps(result, indent=1))
    (out / "samples.md").write_text(markdown + "\n")
