"""The `frost` argument parser: every command's options, each shared flag declared once, with the value types of
`frost.cli.values`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from frost.cli.values import Parser, clock, count, counts, estimating, gate, gates, ids, rank_by, rule, rule_list


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="player and judge: 'embedded' (the default; with --checkpoint, its run's model), a local folder, a hub "
        "id, or a shape with random weights (qwen3-14b-shape, ...; timing and memory only)",
    )
    _add_random_weights(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    _add_threads(p)


def _add_random_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--random-weights", action="store_true", help="build the model's architecture with random weights, no "
        "download (model.random_weights; timing and memory work only)"
    )  # fmt: skip


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=count(0), default=0, help="CPU threads for torch (0: torch's default)")


def _add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_seed(p: argparse.ArgumentParser, help: str = "random seed") -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


def _add_game_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--game", default="infilling", help="a built-in game (infilling, reverse, title, condense, rlp) or a YAML file"
    )
    p.add_argument(
        "--L", type=count(), help="move length (the longest move where a stop ends it: condense); default: the game's"
    )


def _add_instance_args(p: argparse.ArgumentParser, *, move: bool) -> None:
    p.add_argument("--doc", help="any game: the document (text) the game instance is made from")
    p.add_argument("--doc-file", type=Path, help="any game: a text file holding the document")
    p.add_argument("--begin", help="infilling: beginning x as text (instead of --doc)")
    p.add_argument("--begin-ids", type=ids, help="beginning x as token ids (instead of --begin)")
    p.add_argument("--end", help="end z as text (it may start mid-word)")
    p.add_argument("--end-ids", type=ids, help="end z as token ids (instead of --end)")
    p.add_argument(
        "--gap", type=count(0), default=24, help="infilling: the gap (in tokens) the player's prompt announces"
    )
    if move:
        p.add_argument("--move", help="the move y as text (leading spaces matter)")
        p.add_argument("--move-ids", type=ids, help="the move y as token ids (instead of --move)")


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", type=Path, help="player: a run folder (its latest checkpoint), a checkpoint or a kept adapter "
        "(default: the base model); the judge stays the base"
    )  # fmt: skip


def _add_documents_args(p: argparse.ArgumentParser, *, prompts: int) -> None:
    p.add_argument("--data", default="embedded", help="documents: a built-in set, 'cosmopedia', or a file or folder")
    p.add_argument("--field", default="text", help="text field of .jsonl/.parquet documents")
    p.add_argument("--prompts", type=count(), default=prompts, help="number of documents (prompts) used")
    _add_checkpoint(p)
    _add_seed(p)


def build_parser() -> argparse.ArgumentParser:
    """The full `frost` argument parser."""
    parser = Parser(prog="frost", description="Cross-Entropy Games and Frost-GRPO training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands = (
        _score,
        _infill,
        _rules,
        _diagnose,
        _evaluate,
        _export,
        _train,
        _data,
        _report,
        _bench,
        _experiment,
        _demo,
    )
    for add in commands:
        add(sub)
    return parser


def _score(sub: Any) -> None:
    p = sub.add_parser("score", help="reward of one move of any game, per-token log-probs, best single-token edits")
    _add_game_args(p)
    _add_instance_args(p, move=True)
    p.add_argument(
        "--rule", type=estimating, default="taylor", help="rank the edits by this rule's estimate of their reward: "
        "taylor (the paper's first-order score), full (plus the judge's exact position term), judge-gated, or a "
        "gated form (only tokens the player gives probability > --tau, default 1e-4)"
    )  # fmt: skip
    p.add_argument("--mode", type=estimating, help="older name of --rule: first-order (= taylor) or full")
    p.add_argument("--top", type=count(0), default=20, help="number of edits to list, each scored exactly")
    p.add_argument("--tau", type=gate, help="only rank edits the player gives probability > tau (Frost's gate)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _add_checkpoint(p)
    _add_model_args(p)


def _infill(sub: Any) -> None:
    p = sub.add_parser("infill", help="the best move for one game instance: sample K moves, refine with Frost rounds")
    _add_game_args(p)
    _add_instance_args(p, move=False)
    p.add_argument("--K", type=count(), default=8, help="moves sampled")
    p.add_argument("--rounds", type=count(0), default=3, help="Frost proposal+replacement rounds")
    p.add_argument("--rule", type=rule, default="full-gated", help="selection rule (see `frost rules`)")
    p.add_argument("--D", type=count(0), default=16, help="candidates scored exactly per round")
    p.add_argument("--tau", type=gate, default=1e-4, help="probability gate of the gated rules")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    _add_seed(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_checkpoint(p)
    _add_model_args(p)


def _rules(sub: Any) -> None:
    sub.add_parser("rules", help="list the selection rules")


def _diagnose(sub: Any) -> None:
    p = sub.add_parser("diagnose", help="experiments over a fixed model")
    dsub = p.add_subparsers(dest="diagnostic", required=True, parser_class=Parser)
    d = dsub.add_parser("selection", help="the selection-rule experiment of §3.3 (Figures 1, 2, 5)")
    _add_documents_args(d, prompts=8)
    d.add_argument("--K", type=counts(), default=[8], help="moves per prompt; a comma-separated list sweeps K")
    d.add_argument("--D", type=counts(0), default=[1, 2, 4, 8, 16], help="comma-separated discovery budgets")
    _add_game_args(d)
    d.add_argument("--rules", type=rule_list, default="all", help="comma-separated rules, or 'all'")
    d.add_argument("--tau", type=gates, default=[1e-4], help="probability gate; a comma-separated list sweeps it")
    d.add_argument(
        "--rank-by", type=rank_by, default="reward", help="reward (the paper: R(y_k) + estimated change) or lift "
        "(the change alone)"
    )  # fmt: skip
    d.add_argument("--out", type=Path, help="folder for rows.jsonl, summary.json, table.md and figures")
    d.add_argument("--resume", action="store_true", help="keep --out's rows.jsonl and run only the missing prompts")
    _add_model_args(d)
    d = dsub.add_parser(
        "rounds", help="Frost rounds 1..R on the same sampled groups: lift of best-of-K against judge forwards"
    )
    _add_documents_args(d, prompts=16)
    d.add_argument("--K", type=count(), default=4, help="moves sampled per prompt")
    d.add_argument("--D", type=count(0), default=4, help="candidates scored exactly per round")
    d.add_argument("--rounds", type=count(), default=3, help="Frost rounds")
    _add_game_args(d)
    d.add_argument("--rules", type=rule_list, default="taylor-gated,judge-gated", help="comma-separated rules")
    d.add_argument("--tau", type=gate, default=1e-4, help="probability gate")
    d.add_argument("--rank-by", type=rank_by, default="reward", help="reward (the paper) or lift")
    d.add_argument("--out", type=Path, help="folder for rows.jsonl, summary.json and table.md")
    _add_model_args(d)
    d = dsub.add_parser("samples", help="Appendix D tables: two trained players on the same validation prompts")
    d.add_argument("run_a", type=Path, help="player A: a run folder (its latest checkpoint) or a checkpoint folder")
    d.add_argument("run_b", type=Path, help="player B: a run folder or a checkpoint folder")
    d.add_argument("--prompts", type=count(), default=30, help="validation prompts (the paper: 30)")
    d.add_argument("--samples", type=count(), default=8, help="moves per prompt and player")
    d.add_argument("--examples", type=count(0), default=4, help="example tables to print")
    _add_seed(d, "sampling seed (the same for both players)")
    d.add_argument("--out", type=Path, default=Path("samples-report"), help="folder for samples.md and samples.json")
    _add_model_args(d)


def _evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="best-of-N of a run's adapter on its validation texts or its test split (a final test phase)"
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint, an adapter kept at a validation step, or a run folder")
    p.add_argument("--split", default="test", help="validation or test (the run's data.test_start / test_size)")
    p.add_argument("--samples", type=count(), default=8, help="moves sampled per text")
    p.add_argument("--out", type=Path, required=True, help="folder for samples.jsonl and summary.json")
    p.add_argument("--record", type=Path, help="a file whose SHA-256 the summary records (e.g. choices.json)")
    p.add_argument("--model", help="base model (default: the run's)")
    p.add_argument("--device", help="device (default: the run's)")
    p.add_argument("--dtype", help="dtype (default: the run's)")
    _add_threads(p)


def _export(sub: Any) -> None:
    p = sub.add_parser("export", help="a run's trained player as a peft adapter folder, or merged into a model folder")
    p.add_argument("checkpoint", type=Path, help="a run folder (its latest checkpoint), a checkpoint or a kept adapter")
    p.add_argument("--out", type=Path, required=True, help="folder to write (new or empty; see --force)")
    p.add_argument(
        "--merge", action="store_true", help="merge the adapter into the base: a model folder for "
        "AutoModelForCausalLM.from_pretrained, vLLM or a hub (default: a peft adapter for PeftModel.from_pretrained)"
    )  # fmt: skip
    p.add_argument("--model", help="base model (default: the run's)")
    p.add_argument("--dtype", help="dtype of the merged weights (default: the run's; auto: float32 on the CPU)")
    p.add_argument("--force", action="store_true", help="replace what --out holds")
    _add_threads(p)


def _train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a player with GRPO or Frost-GRPO")
    p.add_argument("--config", type=Path, help="YAML config (configs/*.yaml); defaults for anything not set")
    p.add_argument(
        "--game",
        help="play this game instead of the config's: a built-in game or a YAML game file (the config's other game "
        "fields are dropped, its game.move_length kept; --set game.FIELD=... for more)",
    )
    p.add_argument("--model", help="override model.name: embedded, a folder, a hub id or a shape (qwen3-14b-shape)")
    p.add_argument("--device", help="override model.device: auto, cpu or cuda[:N]")
    p.add_argument("--dtype", help="override model.dtype: auto, float32, bfloat16 or float16")
    p.add_argument(
        "--force", action="store_true", help="model.force: load the model even when the memory check says it cannot fit"
    )
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--run-dir", help="override train.run_dir")
    p.add_argument("--seed", type=int, help="override train.seed")
    _add_random_weights(p)
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in a run directory that holds a run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field, e.g. train.K=8")
    _add_threads(p)
    _add_no_progress(p)


def _data(sub: Any) -> None:
    p = sub.add_parser("data", help="documents: write the story set, inspect a source")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    d = dsub.add_parser("synth", help="write Cosmopedia-style stories with a local instruct model (resumable)")
    d.add_argument("--out", type=Path, default=Path("src/frost/assets/stories.jsonl"), help="JSONL file to append to")
    d.add_argument("--target", type=int, default=640, help="accepted stories to reach (whole batches are kept)")
    _add_seed(d, "seed of the grid order and of the sampling")
    d.add_argument("--batch-size", type=count(), default=16, help="stories sampled at once")
    d.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    d.add_argument("--max-new-tokens", type=count(), default=224, help="longest story in tokens")
    _add_model_args(d)
    d = dsub.add_parser("inspect", help="counts, skips, token lengths and example game instances of a source")
    d.add_argument("source", help="'embedded', 'handwritten', 'cosmopedia', or a .jsonl/.txt/.parquet file or a folder")
    d.add_argument("--field", default="text", help="text field of .jsonl/.parquet records")
    _add_game_args(d)
    d.add_argument("--model", default="embedded", help="tokenizer to count with")


def _report(sub: Any) -> None:
    p = sub.add_parser("report", help="figures (PNG), a final-metrics table and a self-contained HTML report")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with config.yaml and metrics.jsonl)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder")
    p.add_argument("--x", default="step", help="x axis: step or judge_forwards")
    p.add_argument("--smooth", type=count(), default=1, help="moving-average window of Figure 4's curves")


def _bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="per-phase timings of a training step and its parts -> BENCHMARKS.md")
    p.add_argument("--K", type=counts(), default=[4], help="Frost group sizes of the step bench (GRPO: K and 2K)")
    p.add_argument("--L", type=counts(), default=[8], help="move lengths of the step bench")
    p.add_argument("--game", default="infilling", help="game of the step bench: a built-in game or a YAML file")
    p.add_argument("--B", type=counts(), default=[4], help="texts per step of the step bench")
    p.add_argument(
        "--rules",
        type=rule_list,
        default="taylor-gated,judge-gated",
        help="Frost rules timed (the first also naively)",
    )
    p.add_argument("--no-naive", action="store_true", help="skip the naive (authors' demo) path")
    p.add_argument("--repeats", type=count(), default=5, help="timed repeats (steps) after one warm-up")
    p.add_argument("--core-K", type=count(), default=8, help="moves per prompt of the core-operation bench")
    p.add_argument("--D", type=count(), default=64, help="candidates of the core bench's top-D and exact scoring")
    p.add_argument(
        "--only",
        choices=["all", "core", "steps", "options", "memory-plan"],
        default="all",
        help="which sections (options: the step cost of Frost rounds 1/2/3 and of 2 ppo-clip updates; not in all)",
    )
    p.add_argument("--frost-D", type=count(0), help="frost.D of the step and options benches (default: K)")
    p.add_argument(
        "--fsdp-shards",
        type=count(),
        default=1,
        help="model.fsdp_shards of the step bench under torchrun (FSDP2 groups of this many ranks)",
    )
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the results as one JSON object here")
    _add_model_args(p)


def _experiment(sub: Any) -> None:
    p = sub.add_parser(
        "experiment",
        help="arms x seeds of training runs from an experiment file, resumable, with statistics, then the diagnostics "
        "of its final block at the final checkpoints; several processes on one file share out its work",
    )
    p.add_argument("file", type=Path, help="experiment file (YAML: out, seeds, set, reference, arms, final)")
    p.add_argument("--summary-only", action="store_true", help="only rewrite summary.json / summary.md from the runs")
    p.add_argument(
        "--test",
        action="store_true",
        help="after every run and choice, the test phase: each chosen checkpoint on the test split (once choices.json "
        "is complete; commit it first)",
    )
    p.add_argument(
        "--until",
        type=clock,
        metavar="TIME",
        help="start or resume no training after TIME (HH:MM, the next such time, or an ISO date and time); a run in "
        "progress finishes, and so does its test reading; for a machine that will be taken back at a known time",
    )
    p.add_argument(
        "--md",
        type=Path,
        help="also write the summary's tables into this Markdown file, between <!-- frost-experiment:NAME --> markers "
        "(NAME: the experiment file's name without .yaml; the block is appended when missing, text outside it is kept)",
    )
    _add_threads(p)
    _add_no_progress(p)


def _demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job: Frost-GRPO vs GRPO at matched judge forwards on the embedded model")
    p.add_argument("--seeds", type=counts(0), default=[0], help="comma-separated seeds; each runs all three arms")
    p.add_argument("--steps", type=count(), help="override the configs' training steps")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for runs, comparison and figure")
    p.add_argument("--skip-score", action="store_true", help="skip the opening `frost score` example")
    _add_threads(p)
    _add_no_progress(p)
