"""Best-of-N evaluation of a player on a list of game instances: what validation runs during training, and what a
final test phase runs on a kept adapter (`frost evaluate`).

`score_samples` samples N moves per text from the player (a seeded generator per text) and scores them exactly with
the judge; it returns a row of statistics and a `samples.jsonl` record per text. `evaluate_checkpoint` loads a
run's adapter (a checkpoint or an adapter kept at a validation step) and evaluates it on the run's validation
texts or on its test split, with random streams that depend only on the run's seed and the text's index, so two
players are compared on the same draws.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from frost.games import GameInstance
from frost.judge import Judge
from frost.moves import content_lengths, decision_mask, move_masks
from frost.sampling import SampledMoves
from frost.step import text_chunks

SPLITS = ("validation", "test")


def score_samples(
    player: Any,
    judge: Judge,
    game: Any,
    instances: Sequence[GameInstance],
    generators: Sequence[torch.Generator],
    *,
    samples: int,
    sample: Callable[[list[GameInstance], int, list[torch.Generator]], list[SampledMoves]],
    text_batch: int = 0,
    step: int = 0,
    shown: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per text: a row (mean, best, var, entropy, copy, length of its `samples` moves) and a samples record (step,
    doc, the moves as text with their exact rewards; with `shown`, the text the player was shown: the copy metric's
    text (`shown`) and every shown part of the document (`shown_parts`; infilling's beginning and end)). `sample(insts,
    N, generators)` draws the moves; `text_batch` texts at a time (0: all)."""
    rows, records = [], []
    for chunk in text_chunks(list(zip(instances, generators, strict=True)), text_batch):
        insts = [inst for inst, _ in chunk]
        sampled = sample(insts, samples, [g for _, g in chunk])
        all_rewards = judge.rewards_many([(inst, s.moves) for inst, s in zip(insts, sampled, strict=True)])
        for inst, s, reward_tensor in zip(insts, sampled, all_rewards, strict=True):
            rewards = reward_tensor.tolist()
            texts = [game.move_text(inst, m) for m in s.moves.tolist()]
            best = max(range(len(rewards)), key=rewards.__getitem__)
            lengths = [int(n) for n in content_lengths(inst, s.moves).tolist()]
            rows.append(
                {
                    "mean": statistics.fmean(rewards),
                    "best": rewards[best],
                    "var": statistics.pstdev(rewards) ** 2 if all(map(_finite, rewards)) else float("nan"),
                    "entropy": float(s.entropy(decision_mask(inst, s.moves)).mean()),
                    "copy": game.copies(inst, texts[best]),
                    "length": statistics.fmean(float(n) for n in lengths),
                }
            )
            record: dict[str, Any] = {
                "step": step,
                "doc": inst.source,
                "moves": [{"text": x, "reward": r} for x, r in zip(texts, rewards, strict=True)],
            }
            if shown:  # the copy metric's text, and every part of the document the player's prompt showed
                record["shown"] = game.shown_text(inst)
                record["shown_parts"] = [str(t) for t in inst.meta.get("shown_text", [])]
            records.append(record)
    return rows, records


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def summary_of(rows: Sequence[dict[str, Any]], samples: int, copy_name: str) -> dict[str, float]:
    """The validation metrics of a set of rows (`val/...` keys)."""
    return {
        "val/reward_mean": statistics.fmean(r["mean"] for r in rows),
        f"val/best_of_{samples}": statistics.fmean(r["best"] for r in rows),
        "val/score_var": statistics.fmean(r["var"] for r in rows),
        "val/token_entropy": statistics.fmean(r["entropy"] for r in rows),
        "val/frac_zero_var": statistics.fmean(r["var"] == 0 for r in rows),
        f"val/frac_{copy_name}": statistics.fmean(r["copy"] for r in rows),
        "val/move_tokens_mean": statistics.fmean(r["length"] for r in rows),
    }


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def evaluate_checkpoint(
    path: Path,
    *,
    split: str,
    samples: int = 8,
    out: Path,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    record: dict[str, Any] | None = None,
    base: Any = None,
) -> dict[str, Any]:
    """Evaluate a run's adapter at `path` (a checkpoint folder, an adapter kept at a validation step, or a run
    folder: its latest checkpoint) on the run's `split`: `samples` moves per text, best-of-N and the rest. Writes
    `out/samples.jsonl` (with the text each player was shown) and `out/summary.json` (`record` added to it, e.g.
    the hash of the choices that picked this checkpoint). The base model is the run's (`model`, `device`, `dtype`
    override it; `base`, a loaded model, replaces it). Random streams: on the validation texts the ones the run's
    own validation used at that step (so a kept adapter reproduces its logged validation); on the test split one
    per test text and seed, the same for every step and run (paired comparisons share their draws). Returns the
    summary."""
    import functools

    from frost.errors import ConfigError
    from frost.games import build_game
    from frost.models import forbidden_token_mask, load_model
    from frost.run import distributed
    from frost.run.checkpoint import player_and_judge, resolve_checkpoint, run_config
    from frost.run.data import load_split, load_test_split
    from frost.step import shared_prefix_sampler

    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    run_dir, ckpt = resolve_checkpoint(path)
    config = run_config(path)
    if split == "test" and not config.data.test_size:
        raise ConfigError("data.test_size: this run declares no test split (data.test_start, data.test_size)")
    m = config.model
    lm = base or load_model(
        model or m.name, device=device or m.device, dtype=dtype or m.dtype, random_weights=m.random_weights
    )
    game = build_game(config.game.kind, lm.tokenizer, config.game.params())
    if split == "test":
        instances = load_test_split(config.data, game)
    else:
        instances = load_split(config.data, game).validation[: config.train.val_documents]
    player, judge = player_and_judge(lm, ckpt, judge_batch_size=m.judge_batch_size)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(lm.tokenizer, vocab, lm.device)
    sampler = functools.partial(shared_prefix_sampler, decode=m.decode)

    def sample(insts: list[GameInstance], k: int, gens: list[torch.Generator]) -> list[SampledMoves]:
        masks = [move_masks(inst, forbidden) for inst in insts]
        return sampler(player, insts, k, masks, config.train.temperature, gens)

    step = int(json.loads((ckpt / "state.json").read_text())["step"]) if (ckpt / "state.json").is_file() else None
    step = step if step is not None else int(ckpt.name.rsplit("-", 1)[-1])
    stream_step = step if split == "validation" else 0
    gens = [
        torch.Generator(device=lm.device).manual_seed(distributed.text_seed(config.train.seed, stream_step, i, split))
        for i in range(len(instances))
    ]
    rows, records = score_samples(
        player, judge, game, instances, gens, samples=samples, sample=sample,
        text_batch=config.train.micro_batch or config.train.batch_size, step=step, shown=True,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {
        "run": run_dir.name,
        "checkpoint": str(ckpt),
        "step": step,
        "split": split,
        "texts": len(rows),
        "samples": samples,
        **summary_of(rows, samples, game.copy_metric_name),
        **(record or {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
