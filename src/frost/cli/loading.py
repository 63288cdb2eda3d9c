"""What the commands share: torch's threads, a quiet transformers, loading the model the options name."""

from __future__ import annotations

import argparse
from typing import Any

import torch


def setup_torch(args: argparse.Namespace) -> None:
    """`--threads`, when given."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def quiet_transformers() -> None:
    """No download bars and no warnings transformers prints for every model."""
    import warnings

    import transformers

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def model_name(args: argparse.Namespace) -> str:
    """`--model`; without it, the model of `--checkpoint`'s run when one is given, else the embedded model."""
    if args.model is not None:
        return str(args.model)
    if getattr(args, "checkpoint", None) is not None:
        from frost.run.checkpoint import run_config

        return str(run_config(args.checkpoint).model.name)
    return "embedded"


def load(args: argparse.Namespace) -> Any:
    """The model of `--model`/`--device`/`--dtype`/`--random-weights` with its tokenizer."""
    from frost.models import load_model

    setup_torch(args)
    quiet_transformers()
    return load_model(model_name(args), device=args.device, dtype=args.dtype, random_weights=args.random_weights)


def player_and_judge(args: argparse.Namespace, lm: Any) -> tuple[Any, Any]:
    """The player (the base, or `--checkpoint`'s adapter over it) and the judge (always the base: the adapter
    switched off)."""
    from frost.run.checkpoint import player_and_judge as over_base

    return over_base(lm, getattr(args, "checkpoint", None) or ())


def vocab(lm: Any) -> int:
    """The size of the model's vocabulary (its embedding rows)."""
    return int(lm.model.get_input_embeddings().weight.shape[0])
