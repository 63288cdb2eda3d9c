"""`frost diagnose`: the experiments over a fixed player (the base model or a checkpoint's adapter): selection
rules (§3.3), Frost rounds, and two trained players' samples side by side (Appendix D)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from frost.cli.loading import load, player_and_judge, vocab


def _fixed_player(args: argparse.Namespace) -> tuple[Any, Any, list[Any], Any, Any]:
    """The player (the base or --checkpoint's adapter), the judge (the base), the first --prompts game instances of
    --data, the forbidden-token mask and the game: the diagnostics over a fixed player."""
    from frost.games.inputs import game_from_options
    from frost.models import forbidden_token_mask
    from frost.run.data import read_documents

    lm = load(args)
    player, judge = player_and_judge(args, lm)

    game = game_from_options(args.game, lm.tokenizer, move_length=args.L)
    instances, _ = game.instances(read_documents(args.data, field=args.field, limit=args.prompts * 4))
    return player, judge, instances[: args.prompts], forbidden_token_mask(lm.tokenizer, vocab(lm), lm.device), game


def _progress(count: int) -> Any:
    def on_rows(rows: list[Any]) -> None:
        print(f"  prompt {rows[0].prompt + 1}/{count} done", file=sys.stderr, flush=True)

    return on_rows


def _diagnose_rounds(args: argparse.Namespace) -> int:
    from frost.analysis.rounds import rounds_markdown, run_rounds, summarize_rounds, write_rounds

    player, judge, instances, forbidden, _ = _fixed_player(args)
    rows = run_rounds(
        judge, player, instances, seed=args.seed, on_rows=_progress(len(instances)), rules=args.rules, K=args.K,
        D=args.D, rounds=args.rounds, tau=args.tau, forbidden=forbidden, rank_by=args.rank_by,
    )  # fmt: skip
    summary = summarize_rounds(rows)
    text = rounds_markdown(summary, prompts=len(instances), K=args.K, D=args.D)
    print(text)
    if args.out:
        write_rounds(rows, summary, text, args.out)
        print(f"written: {args.out}")
    return 0


def _diagnose_selection(args: argparse.Namespace) -> int:
    from frost.analysis.selection import append_rows, report_text, run_selection, start_rows, summarize
    from frost.analysis.selection_plots import write_figures

    player, judge, instances, forbidden, game = _fixed_player(args)
    done = start_rows(args.out, resume=args.resume, default_tau=args.tau[0]) if args.out else []
    show = _progress(len(instances))

    def on_rows(rows: list[Any]) -> None:
        show(rows)
        if args.out:
            append_rows(args.out, rows)

    rows = run_selection(
        judge, player, instances, rules=args.rules, K=args.K, budgets=args.D, tau=args.tau, seed=args.seed,
        forbidden=forbidden, on_rows=on_rows, done=done, rank_by=args.rank_by,
    )  # fmt: skip
    summary = summarize(rows)
    text = report_text(summary, prompts=len(instances), move_length=game.move_length, game=game.name)
    print(text)
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        (args.out / "table.md").write_text(text)
        for path in write_figures(summary, args.out):
            print(f"written: {path}")
    return 0


def _diagnose_samples(args: argparse.Namespace) -> int:
    from frost.analysis.samples import diagnose_samples, write
    from frost.games import build_game
    from frost.run.checkpoint import resolve_checkpoint, run_config
    from frost.run.data import load_split

    resolve_checkpoint(args.run_a)
    resolve_checkpoint(args.run_b)
    config = run_config(args.run_a)  # the game and data of run A, from its whole config
    lm = load(args)
    game = build_game(config.game.kind, lm.tokenizer, config.game.params())
    split = load_split(config.data, game)
    result, text = diagnose_samples(
        args.run_a, args.run_b, lm, split.validation[: args.prompts], game, samples=args.samples, seed=args.seed,
        examples=args.examples,
    )  # fmt: skip
    write(result, text, args.out)
    print(text)
    print(f"\nwritten: {args.out}/samples.md, {args.out}/samples.json")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """`frost diagnose samples|rounds|selection`."""
    diagnostics = {"samples": _diagnose_samples, "rounds": _diagnose_rounds, "selection": _diagnose_selection}
    return diagnostics[args.diagnostic](args)
