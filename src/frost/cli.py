"""The `frost` command line: thin wrappers that parse options, load models and call the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from frost.errors import ConfigError, FrostError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `frost score: error: ...`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected token ids separated by commas or spaces, got {text!r}") from exc


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="embedded",
        help="player and judge: 'embedded', a local folder, a hub id, or a shape with random weights "
        "(qwen3-14b-shape, ...; timing and memory only)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="build --model's architecture with random weights, no download (timing and memory work only)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    _add_threads(p)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def _add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_game_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--game", default="infilling", help="a built-in game (infilling, reverse, title, condense, rlp) or a YAML file"
    )
    p.add_argument("--L", type=int, help="move length (or the longest move, for title/condense); default: the game's")


def _add_pair_args(p: argparse.ArgumentParser, *, move: bool) -> None:
    p.add_argument("--doc", help="any game: the document (text) the game instance is made from")
    p.add_argument("--doc-file", type=Path, help="any game: a text file holding the document")
    p.add_argument("--begin", help="infilling: beginning x as text (instead of --doc)")
    p.add_argument("--begin-ids", type=_ids, help="beginning x as token ids (instead of --begin)")
    p.add_argument("--end", help="end z as text (it may start mid-word)")
    p.add_argument("--end-ids", type=_ids, help="end z as token ids (instead of --end)")
    p.add_argument("--gap", type=int, default=24, help="infilling: the gap (in tokens) the player's prompt announces")
    if move:
        p.add_argument("--move", help="the move y as text (leading spaces matter)")
        p.add_argument("--move-ids", type=_ids, help="the move y as token ids (instead of --move)")


def build_parser() -> argparse.ArgumentParser:
    """The full `frost` argument parser."""
    parser = _Parser(prog="frost", description="Cross-Entropy Games and Frost-GRPO training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _score_command(sub)
    _infill_command(sub)
    _rules_command(sub)
    _diagnose_command(sub)
    _evaluate_command(sub)
    _train_command(sub)
    _data_command(sub)
    _report_command(sub)
    _bench_command(sub)
    _experiment_command(sub)
    _demo_command(sub)
    return parser


def _score_command(sub: Any) -> None:
    """The options of `frost score`."""
    p = sub.add_parser("score", help="reward of one move of any game, per-token log-probs, best single-token edits")
    _add_game_args(p)
    _add_pair_args(p, move=True)
    p.add_argument("--mode", default="first-order", help="Taylor score: first-order (the paper) or full")
    p.add_argument("--top", type=int, default=20, help="number of edits to list, each scored exactly")
    p.add_argument("--tau", type=float, help="only rank edits the player gives probability > tau (Frost's gate)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _add_model_args(p)


def _infill_command(sub: Any) -> None:
    """The options of `frost infill`."""
    p = sub.add_parser("infill", help="the best move for one game instance: sample K moves, refine with Frost rounds")
    _add_game_args(p)
    _add_pair_args(p, move=False)
    p.add_argument("--K", type=int, default=8, help="moves sampled")
    p.add_argument("--rounds", type=int, default=3, help="Frost proposal+replacement rounds")
    p.add_argument("--rule", default="full-gated", help="selection rule (see `frost rules`)")
    p.add_argument("--D", type=int, default=16, help="candidates scored exactly per round")
    p.add_argument("--tau", type=float, default=1e-4, help="probability gate of the gated rules")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p)


def _rules_command(sub: Any) -> None:
    """The options of `frost rules`."""
    sub.add_parser("rules", help="list the selection rules")


def _diagnose_command(sub: Any) -> None:
    """The options of `frost diagnose`."""
    p = sub.add_parser("diagnose", help="experiments over a fixed model")
    dsub = p.add_subparsers(dest="diagnostic", required=True, parser_class=_Parser)
    d = dsub.add_parser("selection", help="the selection-rule experiment of §3.3 (Figures 1, 2, 5)")
    d.add_argument("--data", default="embedded", help="documents: a built-in set, 'cosmopedia', or a file or folder")
    d.add_argument("--field", default="text", help="text field of .jsonl/.parquet documents")
    d.add_argument("--prompts", type=int, default=8, help="number of documents (prompts) used")
    d.add_argument("--K", type=_int_list, default=[8], help="moves per prompt; a comma-separated list sweeps K")
    d.add_argument("--D", type=_int_list, default=[1, 2, 4, 8, 16], help="comma-separated discovery budgets")
    _add_game_args(d)
    d.add_argument("--rules", default="all", help="comma-separated rules, or 'all'")
    d.add_argument("--tau", type=_float_list, default=[1e-4], help="probability gate; a comma-separated list sweeps it")
    d.add_argument(
        "--rank-by", default="reward", help="reward (the paper: R(y_k) + estimated change) or lift (the change alone)"
    )
    d.add_argument("--checkpoint", type=Path, help="player: a run folder or checkpoint (default: the base model)")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--out", type=Path, help="folder for rows.jsonl, summary.json, table.md and figures")
    d.add_argument("--resume", action="store_true", help="keep --out's rows.jsonl and run only the missing prompts")
    _add_model_args(d)
    d = dsub.add_parser(
        "rounds", help="Frost rounds 1..R on the same sampled groups: lift of best-of-K against judge forwards"
    )
    d.add_argument("--data", default="embedded", help="documents: a built-in set, 'cosmopedia', or a file or folder")
    d.add_argument("--field", default="text", help="text field of .jsonl/.parquet documents")
    d.add_argument("--prompts", type=int, default=16, help="number of documents (prompts) used")
    d.add_argument("--K", type=int, default=4, help="moves sampled per prompt")
    d.add_argument("--D", type=int, default=4, help="candidates scored exactly per round")
    d.add_argument("--rounds", type=int, default=3, help="Frost rounds")
    _add_game_args(d)
    d.add_argument("--rules", default="taylor-gated,judge-gated", help="comma-separated rules")
    d.add_argument("--tau", type=float, default=1e-4, help="probability gate")
    d.add_argument("--rank-by", default="reward", help="reward (the paper) or lift")
    d.add_argument("--checkpoint", type=Path, help="player: a run folder or checkpoint (default: the base model)")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--out", type=Path, help="folder for rows.jsonl, summary.json and table.md")
    _add_model_args(d)
    d = dsub.add_parser("samples", help="Appendix D tables: two trained players on the same validation prompts")
    d.add_argument("run_a", type=Path, help="player A: a run folder (its latest checkpoint) or a checkpoint folder")
    d.add_argument("run_b", type=Path, help="player B: a run folder or a checkpoint folder")
    d.add_argument("--prompts", type=int, default=30, help="validation prompts (the paper: 30)")
    d.add_argument("--samples", type=int, default=8, help="moves per prompt and player")
    d.add_argument("--examples", type=int, default=4, help="example tables to print")
    d.add_argument("--seed", type=int, default=0, help="sampling seed (the same for both players)")
    d.add_argument("--out", type=Path, default=Path("samples-report"), help="folder for samples.md and samples.json")
    _add_model_args(d)


def _evaluate_command(sub: Any) -> None:
    """The options of `frost evaluate`."""
    p = sub.add_parser(
        "evaluate", help="best-of-N of a run's adapter on its validation texts or its test split (a final test phase)"
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint, an adapter kept at a validation step, or a run folder")
    p.add_argument("--split", default="test", help="validation or test (the run's data.test_start / test_size)")
    p.add_argument("--samples", type=int, default=8, help="moves sampled per text")
    p.add_argument("--out", type=Path, required=True, help="folder for samples.jsonl and summary.json")
    p.add_argument("--record", type=Path, help="a file whose SHA-256 the summary records (e.g. choices.json)")
    p.add_argument("--model", help="base model (default: the run's)")
    p.add_argument("--device", help="device (default: the run's)")
    p.add_argument("--dtype", help="dtype (default: the run's)")
    _add_threads(p)


def _train_command(sub: Any) -> None:
    """The options of `frost train`."""
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
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="model.random_weights: the model's architecture with random weights (smoke runs and timing only)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in a run directory that holds a run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field, e.g. train.K=8")
    _add_threads(p)
    _add_no_progress(p)


def _data_command(sub: Any) -> None:
    """The options of `frost data`."""
    p = sub.add_parser("data", help="documents: write the story set, inspect a source")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    d = dsub.add_parser("synth", help="write Cosmopedia-style stories with a local instruct model (resumable)")
    d.add_argument("--out", type=Path, default=Path("src/frost/assets/stories.jsonl"), help="JSONL file to append to")
    d.add_argument("--target", type=int, default=640, help="accepted stories to reach (whole batches are kept)")
    d.add_argument("--seed", type=int, default=0, help="seed of the grid order and of the sampling")
    d.add_argument("--batch-size", type=int, default=16, help="stories sampled at once")
    d.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    d.add_argument("--max-new-tokens", type=int, default=224, help="longest story in tokens")
    _add_model_args(d)
    d = dsub.add_parser("inspect", help="counts, skips, token lengths and example game instances of a source")
    d.add_argument("source", help="'embedded', 'handwritten', 'cosmopedia', or a .jsonl/.txt/.parquet file or a folder")
    d.add_argument("--field", default="text", help="text field of .jsonl/.parquet records")
    _add_game_args(d)
    d.add_argument("--model", default="embedded", help="tokenizer to count with")


def _report_command(sub: Any) -> None:
    """The options of `frost report`."""
    p = sub.add_parser("report", help="figures (PNG), a final-metrics table and a self-contained HTML report")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with config.yaml and metrics.jsonl)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder")
    p.add_argument("--x", default="step", help="x axis: step or judge_forwards")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window of Figure 4's curves")


def _bench_command(sub: Any) -> None:
    """The options of `frost bench`."""
    p = sub.add_parser("bench", help="per-phase timings of a training step and its parts -> BENCHMARKS.md")
    p.add_argument("--K", type=_int_list, default=[4], help="Frost group sizes of the step bench (GRPO: K and 2K)")
    p.add_argument("--L", type=_int_list, default=[8], help="move lengths of the step bench")
    p.add_argument("--game", default="infilling", help="game of the step bench: a built-in game or a YAML file")
    p.add_argument("--B", type=_int_list, default=[4], help="texts per step of the step bench")
    p.add_argument("--rules", default="taylor-gated,judge-gated", help="Frost rules timed (the first also naively)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive (authors' demo) path")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (steps) after one warm-up")
    p.add_argument("--core-K", type=int, default=8, help="moves per prompt of the core-operation bench")
    p.add_argument("--D", type=int, default=64, help="candidates of the core bench's top-D and exact scoring")
    p.add_argument(
        "--only",
        choices=["all", "core", "steps", "options", "memory-plan"],
        default="all",
        help="which sections (options: the step cost of Frost rounds 1/2/3 and of 2 ppo-clip updates; not in all)",
    )
    p.add_argument("--frost-D", type=int, help="frost.D of the step and options benches (default: K)")
    p.add_argument(
        "--fsdp-shards",
        type=int,
        default=1,
        help="model.fsdp_shards of the step bench under torchrun (FSDP2 groups of this many ranks)",
    )
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the results as one JSON object here")
    _add_model_args(p)


def _experiment_command(sub: Any) -> None:
    """The options of `frost experiment`."""
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
        "--md",
        type=Path,
        help="also write the summary's tables into this Markdown file, between <!-- frost-experiment:NAME --> markers "
        "(NAME: the out folder's name; the block is appended when missing, text outside it is kept)",
    )
    _add_threads(p)
    _add_no_progress(p)


def _demo_command(sub: Any) -> None:
    """The options of `frost demo`."""
    p = sub.add_parser("demo", help="the main job: Frost-GRPO vs GRPO at matched judge forwards on the embedded model")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds; each runs all three arms")
    p.add_argument("--steps", type=int, help="override the configs' training steps")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for runs, comparison and figure")
    p.add_argument("--skip-score", action="store_true", help="skip the opening `frost score` example")
    _add_threads(p)
    _add_no_progress(p)


def _setup_torch(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def _quiet_transformers() -> None:
    import warnings

    import transformers

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _load(args: argparse.Namespace) -> Any:
    from frost.models import load_model

    _quiet_transformers()
    return load_model(args.model, device=args.device, dtype=args.dtype, random_weights=args.random_weights)


def _pair_ids(args: argparse.Namespace, tokenizer: Any) -> tuple[list[int], list[int]]:
    from frost.games import encode_plain

    def pick(text: str | None, ids: list[int] | None, name: str) -> list[int]:
        if (text is None) == (ids is None):
            raise ConfigError(f"--{name}: give exactly one of --{name} (text) and --{name}-ids")
        out = ids if ids is not None else encode_plain(tokenizer, text or "")
        if not out:
            raise ConfigError(f"--{name}: the {name} is empty")
        return out

    return pick(args.begin, args.begin_ids, "begin"), pick(args.end, args.end_ids, "end")


def _check_ids(ids: Sequence[int], vocab: int, name: str) -> None:
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ConfigError(f"--{name}-ids: token ids must lie in [0, {vocab}); got {bad[:5]}")


def _game(args: argparse.Namespace, tokenizer: Any, *, move_length: int | None = None) -> Any:
    """The game of `--game` (and `--L`, and `--gap` for infilling)."""
    from frost.games import build_game, resolve_spec

    params: dict[str, Any] = {}
    length = move_length if move_length is not None else getattr(args, "L", None)
    if length is not None:
        if length < 1:
            raise ConfigError(f"--L must be >= 1, got {length}")
        params["move_length"] = length
    if resolve_spec(args.game).name == "infilling" and getattr(args, "gap", None) is not None:
        if args.gap < 0:
            raise ConfigError(f"--gap must be >= 0, got {args.gap}")
        params["gap_tokens"] = args.gap
    return build_game(args.game, tokenizer, params)


def _instance(args: argparse.Namespace, game: Any, vocab: int) -> Any:
    """The game instance of `--doc`/`--doc-file`, or of `--begin`/`--end` (infilling)."""
    from frost.games import encode_plain

    takes_pairs = hasattr(game, "instance_from_parts")  # infilling
    pair = any(getattr(args, n) is not None for n in ("begin", "begin_ids", "end", "end_ids"))
    doc = args.doc if args.doc is not None else None
    if args.doc_file is not None:
        if doc is not None:
            raise ConfigError("--doc-file: give one of --doc and --doc-file")
        if not args.doc_file.is_file():
            raise ConfigError(f"--doc-file: {args.doc_file} does not exist")
        doc = args.doc_file.read_text()
    if pair and doc is not None:
        raise ConfigError("--doc: give either a document (--doc/--doc-file) or --begin/--end (infilling), not both")
    if pair:
        if not takes_pairs:
            raise ConfigError(f"--begin/--end: only the infilling game takes them; give --doc for {game.name}")
        begin, end = _pair_ids(args, game.tokenizer)
        _check_ids(begin, vocab, "begin")
        _check_ids(end, vocab, "end")
        return game.instance_from_parts(begin, end)
    if doc is None:
        raise ConfigError("--doc: give the document (--doc TEXT or --doc-file FILE)" + (
            ", or --begin and --end" if takes_pairs else ""))  # fmt: skip
    ids = encode_plain(game.tokenizer, doc)
    inst = game.instance(ids, source="--doc")
    if inst is None:
        raise ConfigError(f"--doc: the document has {len(ids)} tokens; game {game.name} needs {game.spec.needs_tokens}")
    return inst


def cmd_score(args: argparse.Namespace) -> int:
    from frost.analysis.scoring import format_report, score_move
    from frost.games import encode_plain
    from frost.judge import Judge, check_mode
    from frost.models import forbidden_token_mask

    check_mode(args.mode)
    if args.tau is not None and not 0 < args.tau < 1:
        raise ConfigError(f"--tau must lie in (0, 1), got {args.tau}")
    if args.top < 0:
        raise ConfigError(f"--top must be >= 0, got {args.top}")
    if (args.move is None) == (args.move_ids is None):
        raise ConfigError("--move: give exactly one of --move (text) and --move-ids")
    if args.move is not None and not args.move:
        raise ConfigError("--move: the move is empty")
    if args.move_ids is not None and not args.move_ids:
        raise ConfigError("--move-ids: the move is empty")
    _setup_torch(args)
    lm = _load(args)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    move = args.move_ids if args.move_ids is not None else encode_plain(lm.tokenizer, args.move or "")
    if not move:
        raise ConfigError("--move: the move is empty")
    _check_ids(move, vocab, "move")
    from frost.games import resolve_spec

    fixed = resolve_spec(args.game).move.stop is None
    game = _game(args, lm.tokenizer, move_length=len(move) if fixed and args.L is None else None)
    if len(move) > game.move_length:
        raise ConfigError(f"--move: {len(move)} tokens; game {game.name} takes at most {game.move_length} (see --L)")
    inst = _instance(args, game, vocab)
    forbidden = forbidden_token_mask(lm.tokenizer, vocab, lm.device)
    report = score_move(
        Judge(lm.model), lm.tokenizer, inst, move, mode=args.mode, top=args.top, tau=args.tau, forbidden=forbidden
    )
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(format_report(report, lm.tokenizer))
    return 0


def cmd_infill(args: argparse.Namespace) -> int:
    from frost.analysis.infill import infill
    from frost.judge import Judge
    from frost.models import forbidden_token_mask
    from frost.proposal import check_tau, get_rule

    get_rule(args.rule)
    check_tau(args.tau)
    if args.K < 1:
        raise ConfigError(f"--K must be >= 1, got {args.K}")
    if args.rounds < 0 or args.D < 0:
        raise ConfigError("--rounds and --D must be >= 0")
    _setup_torch(args)
    lm = _load(args)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    game = _game(args, lm.tokenizer)
    inst = _instance(args, game, vocab)
    forbidden = forbidden_token_mask(lm.tokenizer, vocab, lm.device)
    gen = torch.Generator(device=lm.device).manual_seed(args.seed)
    res = infill(
        Judge(lm.model),
        lm.model,
        inst,
        K=args.K,
        rounds=args.rounds,
        rule=args.rule,
        D=args.D,
        tau=args.tau,
        temperature=args.temperature,
        forbidden=forbidden,
        generator=gen,
    )
    texts = [game.move_text(inst, m) for m in res.moves.tolist()]
    if args.json:
        out = {
            "initial_best": res.initial_best,
            "moves": [
                {"text": t, "ids": m[: inst.content_length(m)], "reward": r}
                for t, m, r in zip(texts, res.moves.tolist(), res.rewards.tolist(), strict=True)
            ],
            "rounds": [rec.summary() for rec in res.rounds],
        }
        print(json.dumps(out))
        return 0
    print(
        f"best of {args.K} sampled: {res.initial_best:.3f}; after {len(res.rounds)} Frost round(s): "
        f"{float(res.rewards[0]):.3f} nats"
    )
    for t, r in zip(texts, res.rewards.tolist(), strict=True):
        print(f"  {r:9.3f}  {t!r}")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from frost.proposal import RULES

    for rule in RULES.values():
        print(f"{rule.name:13} {rule.description}")
    return 0


def _diagnose_players(args: argparse.Namespace) -> tuple[Any, Any, Any, list[Any], Any, Any]:
    """The model, player (the base or --checkpoint's adapter), judge (the base), the first --prompts game
    instances of --data, the forbidden-token mask and the game, for the diagnostics over a fixed player."""
    from frost.judge import Judge
    from frost.models import forbidden_token_mask
    from frost.run.data import read_documents

    if args.checkpoint is not None:
        from frost.run.checkpoint import resolve_checkpoint

        resolve_checkpoint(args.checkpoint)
    _setup_torch(args)
    lm = _load(args)
    player, judge = lm.model, Judge(lm.model)
    if args.checkpoint is not None:
        from frost.run.checkpoint import load_players

        player = load_players([args.checkpoint], lm)
        judge = Judge(player, context=player.disable_adapter)
    docs = read_documents(args.data, field=args.field, limit=args.prompts * 4)
    game = _game(args, lm.tokenizer)
    instances, _ = game.instances(docs)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(lm.tokenizer, vocab, lm.device)
    return lm, player, judge, instances[: args.prompts], forbidden, game


def _diagnose_rounds(args: argparse.Namespace) -> int:
    """`frost diagnose rounds`."""
    from frost.analysis.rounds import rounds_markdown, run_rounds, summarize_rounds, write_rounds
    from frost.proposal import check_rank_by, check_tau, get_rule

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    if not rules:
        raise ConfigError("--rules: give at least one Frost rule")
    for r in rules:
        get_rule(r)
    check_rank_by(args.rank_by)
    check_tau(args.tau)
    for name in ("K", "prompts", "rounds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.D < 0:
        raise ConfigError(f"--D must be >= 0, got {args.D}")
    _, player, judge, instances, forbidden, _ = _diagnose_players(args)

    def on_rows(rows: list[Any]) -> None:
        print(f"  prompt {rows[0].prompt + 1}/{len(instances)} done", file=sys.stderr, flush=True)

    rows = run_rounds(
        judge, player, instances, seed=args.seed, on_rows=on_rows, rules=rules, K=args.K, D=args.D,
        rounds=args.rounds, tau=args.tau, forbidden=forbidden, rank_by=args.rank_by,
    )  # fmt: skip
    summary = summarize_rounds(rows)
    text = rounds_markdown(summary, prompts=len(instances), K=args.K, D=args.D)
    print(text)
    if args.out:
        write_rounds(rows, summary, text, args.out)
        print(f"written: {args.out}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    if args.diagnostic == "samples":
        return _diagnose_samples(args)
    if args.diagnostic == "rounds":
        return _diagnose_rounds(args)
    from frost.analysis.selection import SelectionRow, read_rows, report_text, run_selection, summarize
    from frost.analysis.selection_plots import write_figures
    from frost.proposal import RULES, check_rank_by, check_tau, get_rule

    rules = list(RULES) if args.rules == "all" else [r.strip() for r in args.rules.split(",") if r.strip()]
    for r in rules:
        get_rule(r)
    check_rank_by(args.rank_by)
    if not args.tau:
        raise ConfigError("--tau: give at least one gate, e.g. --tau 1e-4")
    for t in args.tau:
        check_tau(t)
    if not args.K or min(args.K) < 1 or args.prompts < 1:
        raise ConfigError("--K and --prompts must be >= 1")
    if not args.D or min(args.D) < 0:
        raise ConfigError(f"--D must be a list of budgets >= 0, got {args.D}")
    _, player, judge, instances, forbidden, game = _diagnose_players(args)
    done: list[SelectionRow] = []
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        rows_path = args.out / "rows.jsonl"
        if args.resume and rows_path.is_file():
            done = read_rows(rows_path, default_tau=args.tau[0])
            rows_path.write_text("".join(json.dumps(vars(row)) + "\n" for row in done))
        else:
            rows_path.write_text("")

    def on_rows(rows: list[Any]) -> None:
        print(f"  prompt {rows[0].prompt + 1}/{len(instances)} done", file=sys.stderr, flush=True)
        if args.out:
            with (args.out / "rows.jsonl").open("a") as f:
                f.write("".join(json.dumps(vars(row)) + "\n" for row in rows))

    rows = run_selection(
        judge,
        player,
        instances,
        rules=rules,
        K=args.K,
        budgets=args.D,
        tau=args.tau,
        seed=args.seed,
        forbidden=forbidden,
        on_rows=on_rows,
        done=done,
        rank_by=args.rank_by,
    )
    summary = summarize(rows)
    text = report_text(summary, prompts=len(instances), move_length=game.move_length, game=game.name)
    print(text)
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        (args.out / "table.md").write_text(text)
        for path in write_figures(summary, args.out):
            print(f"written: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`frost evaluate`: one adapter's best-of-N on a split of its run's data."""
    from frost.run.checkpoint import resolve_checkpoint
    from frost.run.evaluation import evaluate_checkpoint, file_sha256

    resolve_checkpoint(args.checkpoint)
    record = None
    if args.record is not None:
        if not args.record.is_file():
            raise ConfigError(f"--record: {args.record} does not exist")
        record = {"record": str(args.record), "record_sha256": file_sha256(args.record)}
    _setup_torch(args)
    summary = evaluate_checkpoint(
        args.checkpoint, split=args.split, samples=args.samples, out=args.out, model=args.model, device=args.device,
        dtype=args.dtype, record=record,
    )  # fmt: skip
    best = f"val/best_of_{args.samples}"
    print(
        f"{summary['run']} step {summary['step']} on {summary['split']} ({summary['texts']} texts): best-of-"
        f"{args.samples} {summary[best]:.3f}, mean {summary['val/reward_mean']:.3f}; written to {args.out}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from frost.config import load_config
    from frost.run.trainer import Trainer

    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.run_dir is not None:
        overrides.append(f"train.run_dir={json.dumps(args.run_dir)}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    for name in ("model", "device", "dtype"):
        if getattr(args, name) is not None:
            overrides.append(f"model.{'name' if name == 'model' else name}={json.dumps(getattr(args, name))}")
    if args.random_weights:
        overrides.append("model.random_weights=true")
    if args.force:
        overrides.append("model.force=true")
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: give one (--resume continues the run, --overwrite starts again)")
    config = load_config(args.config, overrides, game=args.game)
    _setup_torch(args)
    _quiet_transformers()
    trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite)
    try:
        step = trainer.run(progress=not args.no_progress)
    finally:
        trainer.close()
    if trainer.world.is_main:
        print(f"{config.train.algorithm}: step {step}/{config.train.steps}; run folder {trainer.run_dir}")
    return 0 if step >= config.train.steps else 130


def _diagnose_samples(args: argparse.Namespace) -> int:
    from frost.analysis.samples import diagnose_samples, write
    from frost.games import build_game
    from frost.run.checkpoint import resolve_checkpoint, run_config
    from frost.run.data import load_split

    if args.prompts < 1 or args.samples < 1:
        raise ConfigError("--prompts and --samples must be >= 1")
    resolve_checkpoint(args.run_a)
    resolve_checkpoint(args.run_b)
    config = run_config(args.run_a)  # the game and data of run A, from its whole config
    _setup_torch(args)
    lm = _load(args)
    game = build_game(config.game.kind, lm.tokenizer, config.game.params())
    split = load_split(config.data, game)
    result, markdown = diagnose_samples(
        args.run_a, args.run_b, lm, split.validation[: args.prompts], game, samples=args.samples, seed=args.seed,
        examples=args.examples,
    )  # fmt: skip
    write(result, markdown, args.out)
    print(markdown)
    print(f"\nwritten: {args.out}/samples.md, {args.out}/samples.json")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from frost.tools.synth import SynthSettings, synthesize

        if args.batch_size < 1 or args.max_new_tokens < 1:
            raise ConfigError("--batch-size and --max-new-tokens must be >= 1")
        if not args.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {args.temperature}")
        _setup_torch(args)
        lm = _load(args)
        settings = SynthSettings(
            model=args.model,
            seed=args.seed,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
        counts = synthesize(args.out, target=args.target, settings=settings, model=lm.model, tokenizer=lm.tokenizer)
        print(f"{args.out}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        return 0
    from frost.run.data import inspect_source

    if args.L is not None and args.L < 1:
        raise ConfigError(f"--L must be >= 1, got {args.L}")
    params = {"move_length": args.L} if args.L is not None else None
    print(inspect_source(args.source, field=args.field, game=args.game, params=params, model=args.model))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from frost.analysis.report import write_report

    if args.smooth < 1:
        raise ConfigError(f"--smooth must be >= 1, got {args.smooth}")
    path = write_report(args.runs, args.out, x_axis=args.x, smooth=args.smooth)
    print(f"report: {path} (figures and final.md beside it)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """`frost bench`: check the arguments, then time what --only asks for."""
    from frost.proposal import get_rule

    for name in ("repeats", "core_K", "D"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from frost.games import resolve_spec

    resolve_spec(args.game)
    for name in ("K", "L", "B"):
        if not getattr(args, name) or min(getattr(args, name)) < 1:
            raise ConfigError(f"--{name} must be a list of integers >= 1, got {getattr(args, name)}")
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    if not rules:
        raise ConfigError("--rules: give at least one Frost rule")
    for r in rules:
        get_rule(r)
    from frost.run import distributed

    world = distributed.world_from_env()
    if args.frost_D is not None and args.frost_D < 0:
        raise ConfigError(f"--frost-D must be >= 0, got {args.frost_D}")
    if world.active and args.only != "steps":
        raise ConfigError("--only: under torchrun frost bench times training steps only; add --only steps")
    if args.fsdp_shards < 1:
        raise ConfigError(f"--fsdp-shards must be >= 1, got {args.fsdp_shards}")
    if args.fsdp_shards > 1 and args.only != "steps":
        raise ConfigError("--fsdp-shards: only the step bench shards the base; add --only steps")
    _setup_torch(args)
    try:
        return _bench(args, rules, world)
    finally:
        distributed.shutdown(world)


def _bench(args: argparse.Namespace, rules: list[str], world: Any) -> int:
    """`frost bench` after its arguments were checked; under torchrun rank 0 alone prints and writes."""
    from frost.tools.bench import (
        bench_training,
        default_arms,
        markdown,
        option_arms,
        run_bench,
        training_markdown,
        write_section,
    )

    frost_d = {"frost": {"D": args.frost_D}} if args.frost_D is not None else None

    say = print if world.is_main else (lambda *a, **k: None)
    result: dict[str, Any] = {"ratios": {}}
    if args.only in ("all", "memory-plan"):
        from frost.run.memplan import plan_markdown

        write_section(args.out, "memory-plan", plan_markdown())
        say("memory plan for Qwen3-14B written")
    if args.only in ("all", "core"):
        lm = _load(args)
        core = run_bench(lm, out=args.out, json_path=None, K=args.core_K, L=args.L[0], D=args.D, repeats=args.repeats)
        say(markdown(core))
        result["core"] = core
        result["ratios"].update(core["ratios"])
        del lm
    if args.only in ("all", "steps"):
        result["steps"] = []
        sections = []
        for k in args.K:
            for length in args.L:
                for b in args.B:
                    steps = bench_training(
                        args.model, K=k, L=length, batch_size=b, steps=args.repeats,
                        arms=default_arms(k, rules, naive=not args.no_naive), device=args.device, dtype=args.dtype,
                        game=args.game, random_weights=args.random_weights, fsdp_shards=args.fsdp_shards,
                        overrides=frost_d,
                    )  # fmt: skip
                    result["steps"].append(steps)
                    sections.append(training_markdown(steps))
                    say(sections[-1], flush=True)
                    for name, value in steps["ratios"].items():
                        result["ratios"].setdefault(name, value)
        if not world.is_main:
            return 0
        section = "training" if args.game == "infilling" else f"training-{Path(args.game).stem}"
        write_section(args.out, section, "\n\n".join(sections))
    if args.only == "options":
        result["options"] = []
        sections = []
        for k in args.K:
            steps = bench_training(
                args.model, K=k, L=args.L[0], batch_size=args.B[0], steps=args.repeats, arms=option_arms(k, rules),
                device=args.device, dtype=args.dtype, game=args.game, random_weights=args.random_weights,
                overrides=frost_d,
            )  # fmt: skip
            result["options"].append(steps)
            sections.append(training_markdown(steps))
            say(sections[-1], flush=True)
            result["ratios"].update(steps["ratios"])
        if not world.is_main:
            return 0
        write_section(args.out, "training-options", "\n\n".join(sections))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"\nwritten to {args.out}" + (f" and {args.json}" if args.json else ""))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Train the experiment's runs that are not finished, then print its summary."""
    from frost.analysis.experiment.runner import (
        ExperimentPaused,
        load_experiment,
        markdown,
        run_experiment,
        write_summary,
    )

    if args.md is not None and (args.md.is_dir() or not args.md.parent.is_dir()):
        raise ConfigError(f"--md: {args.md} is not a Markdown file in an existing folder; give e.g. --md README.md")
    experiment = load_experiment(args.file)
    if args.summary_only:
        summary = write_summary(experiment)
    else:
        _setup_torch(args)
        _quiet_transformers()
        try:
            summary = run_experiment(experiment, progress=not args.no_progress, test=args.test)
        except ExperimentPaused as paused:
            print(f"frost experiment: paused by a signal ({paused}); run the same command to resume", file=sys.stderr)
            return 130
    print(markdown(summary))
    print(f"\nwritten to {experiment.out / 'summary.md'} and summary.json")
    if args.md is not None:
        from frost.tools.mdblock import write_block

        write_block(args.md, "frost-experiment", experiment.out.name, markdown(summary))
        print(f"and into {args.md} (<!-- frost-experiment:{experiment.out.name} -->)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`frost score` on one example, then the three matched-compute training arms and their comparison."""
    from frost.tools.demo import run_demo

    if not args.seeds:
        raise ConfigError("--seeds: give at least one seed")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    common = ["--threads", str(args.threads)]
    if not args.skip_score:
        print("== frost score: a move, its judge log-probs and its best single-token edits ==", flush=True)
        demo_begin = "Once upon a time, in a village"
        demo_end = (
            " and learning new things every day! One day, they stumbled upon a magical forest full of vibrant"
            " colors and fascinating creatures."
        )
        argv = ["score", "--begin", demo_begin, "--end", demo_end, "--move", " there lived a curious kiwi named"]
        cmd_score(build_parser().parse_args([*argv, "--top", "5", "--mode", "full", *common]))
    print("\n== Frost-GRPO vs GRPO, 8 judge forwards per text and step, embedded model, shipped stories ==", flush=True)
    _quiet_transformers()
    table = run_demo(args.out, seeds=args.seeds, steps=args.steps, threads=args.threads, progress=not args.no_progress)
    print("\n" + table)
    print(f"\nruns: {args.out}/runs/   comparison: {args.out}/comparison.md (.json)")
    print(f"report: {args.out}/report/report.html (figure3.png, figure4.png, final.md beside it)")
    return 0


COMMANDS = {
    "score": cmd_score,
    "infill": cmd_infill,
    "rules": cmd_rules,
    "diagnose": cmd_diagnose,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "data": cmd_data,
    "report": cmd_report,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "experiment": cmd_experiment,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `frost` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FrostError as exc:
        print(f"frost {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"frost {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
