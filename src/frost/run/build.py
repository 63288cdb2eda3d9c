"""Building a training run from its config: `build_run(config, world) -> Run` loads the base model, puts the LoRA
adapter on it (and shards the frozen base over an FSDP group), builds the judge (the same base with the adapter off,
or a separate model), the game and its data, the optimizer and the step's settings. The trainer (`frost.run.trainer`)
only loops over what this builds.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from frost.agreement import Agreement
from frost.config import Config
from frost.decode import resolve_decode
from frost.errors import ConfigError
from frost.games import GameInstance, SpecGame, build_game
from frost.judge import Judge
from frost.losses import LossSettings
from frost.models import LoadedModel, forbidden_token_mask, load_model, resolve_device, resolve_dtype
from frost.rules import get_rule
from frost.run import checkpoint, distributed
from frost.run.distributed import World
from frost.step import GroupSettings, Sampler, shared_prefix_sampler


@dataclass
class Run:
    """What a training run is made of (`build_run`)."""

    device: torch.device
    """Where this rank's player, judge and data live."""
    tokenizer: Any
    player: Any
    """The peft model: the base with the LoRA adapter (the only trained weights)."""
    judge: Judge
    """The frozen judge: the player's base with the adapter switched off, or `model.judge`."""
    agreement: Agreement
    """How this rank agrees with the ranks that share its base on pass sizes and out-of-memory back-off."""
    game: SpecGame
    train_set: list[GameInstance]
    validation: list[GameInstance]
    """The first `train.val_documents` validation instances."""
    forbidden: torch.Tensor
    """[V] tokens no move may contain (special tokens, rows beyond the tokenizer)."""
    optimizer: torch.optim.Optimizer
    settings: GroupSettings
    """The step's settings, built once from the config (`group_settings`)."""
    sampler: Sampler
    fsdp_bytes: tuple[int, int] | None
    """(this rank's decoder-layer bytes, the layers' whole bytes) under FSDP, else None."""


def build_run(config: Config, world: World, *, base: LoadedModel | None = None) -> Run:
    """Everything a run of `config` needs on this rank of `world` (`base`: an already loaded model to use instead of
    loading `model.name`)."""
    from peft import get_peft_model

    from frost.run.data import load_split

    m, t = config.model, config.train
    device_name = distributed.rank_device(m.device, world)
    sharded = world.shard_size > 1
    dtype: str | torch.dtype = m.dtype
    if sharded:  # the whole base stays in host memory until its layers are sharded onto the device
        device_name = str(resolve_device(device_name))
        dtype = resolve_dtype(m.dtype, torch.device(device_name))
    load_on = "cpu" if sharded else device_name
    base = base or load_model(m.name, device=load_on, dtype=dtype, random_weights=m.random_weights, force=m.force)
    device = torch.device(device_name) if sharded else base.device
    try:
        player = get_peft_model(base.model, checkpoint.peft_lora_config(config.lora))
    except ValueError as exc:
        raise ConfigError(f"lora.target_modules: {str(exc).splitlines()[0]}") from exc
    shard_group, fsdp_bytes = None, None
    if sharded:
        from frost.run.fsdp import shard_frozen_base, sharded_bytes

        shard_group = shard_frozen_base(player, world, device)
        fsdp_bytes = sharded_bytes(player)
    agreement = distributed.agreement(world, shard_group, device)
    player.eval()  # no dropout in sampling; LoRA dropout applies only in the loss pass
    judge = _judge(config, player, base.tokenizer)
    judge.agreement = agreement
    vocab = player.get_input_embeddings().weight.shape[0]
    game = build_game(config.game.kind, base.tokenizer, config.game.params())
    split = load_split(config.data, game)
    if not split.train:
        raise ConfigError(
            f"data: no training documents left after {len(split.validation)} validation ones; "
            "lower data.validation_size or use more documents"
        )
    _warn_if_the_rule_has_no_signal(config, game, split.train[0])
    o = config.optim
    trained = [p for p in player.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trained, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, weight_decay=o.weight_decay
    )
    text_batch = agreement.smallest(t.micro_batch or auto_micro_batch(config, player, split.train[0], device))
    return Run(
        device=device, tokenizer=base.tokenizer, player=player, judge=judge, agreement=agreement, game=game,
        train_set=split.train, validation=split.validation[: t.val_documents],
        forbidden=forbidden_token_mask(base.tokenizer, vocab, device), optimizer=optimizer,
        settings=group_settings(config, text_batch, agreement),
        sampler=functools.partial(shared_prefix_sampler, decode=m.decode), fsdp_bytes=fsdp_bytes,
    )  # fmt: skip


def group_settings(config: Config, text_batch: int, agreement: Agreement) -> GroupSettings:
    """The step's settings from the config: the one place a config becomes `GroupSettings`."""
    t, f = config.train, config.frost
    return GroupSettings(
        algorithm=t.algorithm, K=t.K, rule=f.rule, budget=config.budget, tau=f.tau, rank_by=f.rank_by,
        temperature=t.temperature, beta=t.beta, text_batch=text_batch, rounds=f.rounds,
        loss=LossSettings(advantage=t.advantage, loss=t.loss, clip_low=t.clip_low, clip_high=t.clip_high),
        agreement=agreement,
    )  # fmt: skip


def _judge(config: Config, player: Any, tokenizer: Any) -> Judge:
    """The player's base with the adapter off, or the separate `model.judge` (which must share the tokenizer)."""
    m = config.model
    if m.judge is None:
        return Judge(player, batch_size=m.judge_batch_size, context=player.disable_adapter)
    judge_lm = load_model(m.judge, device=m.device, dtype=m.dtype, force=m.force)
    if judge_lm.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"model.judge: {m.judge!r} has a different tokenizer from {m.name!r}; the judge scores the player's "
            "token ids, so both must share one vocabulary"
        )
    return Judge(judge_lm.model, batch_size=m.judge_batch_size)


def _warn_if_the_rule_has_no_signal(config: Config, game: SpecGame, inst: GameInstance) -> None:
    rule = get_rule(config.frost.rule)
    if config.train.algorithm == "frost" and "O" in rule.signals and not inst.score_move:
        warnings.warn(
            f"frost.rule {rule.name}: the {game.name} game does not score the move, so the judge's position term is "
            "zero; " + ("the rule equals taylor" if "T" in rule.signals else "the rule has no signal"),
            stacklevel=3,
        )


def auto_micro_batch(config: Config, player: Any, inst: GameInstance, device: torch.device) -> int:
    """Texts per pass when `train.micro_batch` is 0: all B on the CPU; on a GPU the largest m <= B whose
    `frost.run.memplan` estimate (with the model's shape, the run's K, L, D and LoRA rank, this game's prompt and judge
    lengths) fits in 90% of the memory free now plus what the plan counts that is already allocated (base weights,
    LoRA parameters)."""
    t = config.train
    if device.type != "cuda":
        return t.batch_size
    from frost.run.memplan import memory_plan
    from frost.shapes import ModelShape

    base = player.get_base_model() if hasattr(player, "get_base_model") else player
    shape = ModelShape.from_config(base.config)
    free = torch.cuda.mem_get_info(device)[0] * 0.9
    dtype_bytes = torch.finfo(base.get_input_embeddings().weight.dtype).bits // 8
    for m in range(t.batch_size, 0, -1):
        plan = memory_plan(
            shape, lora_rank=config.lora.rank, K=t.K, L=inst.move_length, prompt_tokens=len(inst.prompt_ids) + 16,
            judge_tokens=inst.max_judge_length, B=t.batch_size, D=config.budget, dtype_bytes=dtype_bytes,
            micro_batch=m, judge_batch_size=config.model.judge_batch_size, fsdp_shards=config.model.fsdp_shards,
            static_decode=resolve_decode(config.model.decode, player, device) != "eager",
        )  # fmt: skip
        if plan.peak - plan.persistent["base_weights"] - plan.persistent["lora_params"] <= free:
            return m
    return 1
