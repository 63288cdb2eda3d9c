"""What each `frost` command does with its parsed options: load what it needs and call the library."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from frost.cli.diagnose import cmd_diagnose
from frost.cli.loading import load, model_name, player_and_judge, quiet_transformers, setup_torch, vocab
from frost.errors import ConfigError


def _instance(args: argparse.Namespace, game: Any, vocab: int) -> Any:
    """The game instance of `--doc`/`--doc-file`, or of `--begin`/`--end` (infilling)."""
    from frost.games.inputs import instance_from_options

    names = ("doc", "doc_file", "begin", "begin_ids", "end", "end_ids")
    return instance_from_options(game, vocab, **{n: getattr(args, n) for n in names})


def cmd_score(args: argparse.Namespace) -> int:
    """`frost score`: one move's exact reward and its ranked single-token edits."""
    from frost.analysis.scoring import format_report, score_move
    from frost.games import resolve_spec
    from frost.games.inputs import check_ids, game_from_options, text_or_ids
    from frost.judge import Judge
    from frost.models import forbidden_token_mask

    if args.move is not None and not args.move:
        raise ConfigError("--move: the move is empty")
    if (args.move is None) == (args.move_ids is None):
        raise ConfigError("--move: give exactly one of --move (text) and --move-ids")
    lm = load(args)
    move = text_or_ids(lm.tokenizer, args.move, args.move_ids, "move")
    check_ids(move, vocab(lm), "move")
    fixed = resolve_spec(args.game).move.stop is None  # a fixed-length move: the move given sets it unless --L does
    game = game_from_options(
        args.game, lm.tokenizer, move_length=args.L or (len(move) if fixed else None), gap=args.gap
    )
    if len(move) > game.move_length:
        raise ConfigError(f"--move: {len(move)} tokens; game {game.name} takes at most {game.move_length} (see --L)")
    inst = _instance(args, game, vocab(lm))
    forbidden = forbidden_token_mask(lm.tokenizer, vocab(lm), lm.device)
    report = score_move(
        Judge(lm.model),
        lm.tokenizer,
        inst,
        move,
        rule=args.mode or args.rule,
        top=args.top,
        tau=args.tau,
        forbidden=forbidden,
    )
    print(json.dumps(report.to_json()) if args.json else format_report(report, lm.tokenizer))
    return 0


def cmd_infill(args: argparse.Namespace) -> int:
    """`frost infill`: the best move for one instance by sampling and Frost rounds (`frost.improve`'s code)."""
    from frost.analysis.infill import Refinement, infill
    from frost.games.inputs import game_from_options
    from frost.models import forbidden_token_mask

    lm = load(args)
    game = game_from_options(args.game, lm.tokenizer, move_length=args.L, gap=args.gap)
    inst = _instance(args, game, vocab(lm))
    player, judge = player_and_judge(args, lm)
    how = Refinement(K=args.K, rounds=args.rounds, rule=args.rule, D=args.D, tau=args.tau, temperature=args.temperature)
    result = infill(
        judge, player, inst, how, forbidden=forbidden_token_mask(lm.tokenizer, vocab(lm), lm.device),
        generator=torch.Generator(device=lm.device).manual_seed(args.seed),
    )  # fmt: skip
    print(json.dumps(result.to_json(game, inst)) if args.json else result.describe(game, inst))
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    """`frost rules`: each selection rule with its one-line description."""
    from frost.rules import RULES

    for rule in RULES.values():
        print(f"{rule.name:13} {rule.description}")
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
    setup_torch(args)
    summary = evaluate_checkpoint(
        args.checkpoint, split=args.split, samples=args.samples, out=args.out, model=args.model, device=args.device,
        dtype=args.dtype, record=record,
    )  # fmt: skip
    print(
        f"{summary['run']} step {summary['step']} on {summary['split']} ({summary['texts']} texts): best-of-"
        f"{args.samples} {summary[f'val/best_of_{args.samples}']:.3f}, mean {summary['val/reward_mean']:.3f}; "
        f"written to {args.out}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`frost export`: a run's adapter as a peft adapter folder or merged into its base."""
    from frost.run.checkpoint import resolve_checkpoint
    from frost.run.export import export_player

    resolve_checkpoint(args.checkpoint)
    setup_torch(args)
    quiet_transformers()
    record = export_player(args.checkpoint, args.out, merge=args.merge, model=args.model, dtype=args.dtype,
                           force=args.force)  # fmt: skip
    kind = "a merged model (AutoModelForCausalLM.from_pretrained)" if args.merge else "a peft adapter"
    print(f"{record['checkpoint']} -> {args.out}: {kind}, with the tokenizer and frost-export.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`frost train`: one run from a config and overrides; exit 130 when stopped before its last step."""
    from frost.config import load_config
    from frost.run.trainer import Trainer

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: give one (--resume continues the run, --overwrite starts again)")
    flags = {"train.steps": args.steps, "train.run_dir": args.run_dir, "train.seed": args.seed,
             "model.name": args.model, "model.device": args.device, "model.dtype": args.dtype,
             "model.random_weights": args.random_weights or None, "model.force": args.force or None}  # fmt: skip
    overrides = list(args.set) + [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    config = load_config(args.config, overrides, game=args.game)
    setup_torch(args)
    quiet_transformers()
    trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite)
    try:
        step = trainer.run(progress=not args.no_progress)
    finally:
        trainer.close()
    if trainer.world.is_main:
        print(f"{config.train.algorithm}: step {step}/{config.train.steps}; run folder {trainer.run_dir}")
    return 0 if step >= config.train.steps else 130


def cmd_data(args: argparse.Namespace) -> int:
    """`frost data synth` (write a story set with a model) and `frost data inspect` (what a source yields)."""
    if args.data_command == "synth":
        from frost.tools.synth import SynthSettings, synthesize

        if not args.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {args.temperature}")
        lm = load(args)
        settings = SynthSettings(
            model=model_name(args), seed=args.seed, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )  # fmt: skip
        counts = synthesize(args.out, target=args.target, settings=settings, model=lm.model, tokenizer=lm.tokenizer)
        print(f"{args.out}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        return 0
    from frost.run.data import inspect_source

    params = {"move_length": args.L} if args.L is not None else None
    print(inspect_source(args.source, field=args.field, game=args.game, params=params, model=args.model))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`frost report`: figures, final.md and an HTML report of one or more runs."""
    from frost.analysis.report import write_report

    path = write_report(args.runs, args.out, x_axis=args.x, smooth=args.smooth)
    print(f"report: {path} (figures and final.md beside it)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """`frost bench`: time what --only asks for; under torchrun rank 0 alone prints and writes."""
    from frost.run import distributed
    from frost.tools.bench_suite import BenchRequest, run_benches

    fields = set(BenchRequest.__dataclass_fields__) - {"naive", "model"}
    values = {name: getattr(args, name) for name in fields}
    request = BenchRequest(naive=not args.no_naive, model=model_name(args), **values)
    world = distributed.world_from_env()
    request.check(world)
    setup_torch(args)
    try:
        run_benches(request, world, load=lambda: load(args))
    finally:
        distributed.shutdown(world)
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
        raise ConfigError(f"--md: {args.md} is not a Markdown file in an existing folder; e.g. --md docs/results.md")
    experiment = load_experiment(args.file)
    if args.summary_only:
        summary = write_summary(experiment)
    else:
        setup_torch(args)
        quiet_transformers()
        try:
            summary = run_experiment(experiment, progress=not args.no_progress, test=args.test, until=args.until)
        except ExperimentPaused as paused:
            print(f"frost experiment: paused by a signal ({paused}); run the same command to resume", file=sys.stderr)
            return 130
    print(markdown(summary))
    print(f"\nwritten to {experiment.out / 'summary.md'} and summary.json")
    if args.md is not None:
        from frost.tools.mdblock import write_block

        write_block(args.md, "frost-experiment", experiment.name, markdown(summary))
        print(f"and into {args.md} (<!-- frost-experiment:{experiment.name} -->)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`frost score` on one example, then the three matched-compute training arms and their comparison."""
    from frost.cli.parser import build_parser
    from frost.tools.demo import DEMO_SCORE_ARGS, run_demo

    if not args.skip_score:
        print("== frost score: a move, its judge log-probs and its best single-token edits ==", flush=True)
        cmd_score(build_parser().parse_args([*DEMO_SCORE_ARGS, "--threads", str(args.threads)]))
    print("\n== Frost-GRPO vs GRPO, 8 judge forwards per text and step, embedded model, shipped stories ==", flush=True)
    quiet_transformers()
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
    "export": cmd_export,
    "data": cmd_data,
    "report": cmd_report,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "experiment": cmd_experiment,
}
