"""Run configuration: dataclasses whose fields document themselves, YAML in and out, one-line validation errors."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from frost.errors import ConfigError, read_yaml_file

ALGORITHMS = ("grpo", "frost")
"""GRPO on the sampled group, or Frost-GRPO on the replaced one."""
ADVANTAGES = ("mean", "std", "rloo", "passk")
"""How a group's rewards become advantages (`frost.losses.group_advantages`)."""
LOSSES = ("reinforce", "ppo-clip")
"""The policy term: the paper's REINFORCE surrogate, or the clipped importance ratio of PPO / GRPO / DAPO
(`frost.losses.grpo_loss`)."""
REPORT_TO = ("jsonl", "tensorboard", "wandb", "trackio")
"""Where a run's metrics may go (`train.report_to`; `frost.run.reporting`)."""
DECODE_MODES = ("auto", "eager", "static", "graphs")
"""How sampling decodes (`frost.decode`)."""


@dataclass
class ModelConfig:
    """Player, judge and reference models."""

    name: str = "embedded"
    """The player's base model: `embedded`, a local folder or a hub id (e.g. Qwen/Qwen3-14B)."""
    judge: str | None = None
    """The judge; null means the player's base model, shared in memory (the adapter switched off)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda[:N]."""
    dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16."""
    judge_batch_size: int = 16
    """Sequences per judge forward."""
    random_weights: bool = False
    """Build `name`'s architecture with random weights, no download: for timing and memory work, never for results
    (names like `qwen3-14b-shape` imply it; `frost.shapes`)."""
    decode: str = "auto"
    """How sampling's decode steps run (`frost.decode`): auto (CUDA graphs over a static KV cache on CUDA, eager
    elsewhere), eager, static (the static cache without graphs) or graphs."""
    force: bool = False
    """Load the model even when its weights alone need more than 90% of the free memory (host memory on the CPU,
    free device memory on a GPU); by default such a model is refused in one line before loading."""
    fsdp_shards: int = 1
    """Ranks that share one copy of the frozen base, each holding 1/N of every decoder layer (FSDP2, `frost.run.fsdp`;
    under torchrun / accelerate launch, N must divide the number of ranks, e.g. the GPUs of a node). The ranks of a
    group play the same texts, so it buys memory, not speed; 1: every rank holds the whole base."""


@dataclass
class LoraConfig:
    """LoRA adapter on every attention and MLP projection (the paper: rank 256, alpha 256, no dropout)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get an adapter (all attention and MLP projections of Llama/Qwen-style models)."""


@dataclass
class GameConfig:
    """The Cross-Entropy Game played. Fields left null take the game's default (README, games table); a field the
    game does not read is an error."""

    kind: str = "infilling"
    """A built-in game (infilling, reverse, title, condense, rlp) or the path of a YAML game file."""
    move_length: int | None = None
    """L: tokens per move (the paper: 4, 8, 12), or the most tokens (a move ended by a stop: condense, title with
    exact_length false). Also overrides a game file's move length."""
    start: bool | None = None
    """Begin the judge's sequence with the model's document-start token (default true)."""
    begin_tokens: int | None = None
    """infilling: tokens in the beginning x (8)."""
    gap_tokens: int | None = None
    """infilling: tokens between x and z in the document, announced to the player (24)."""
    end_tokens: int | None = None
    """infilling: tokens in the end z (64)."""
    text_tokens: int | None = None
    """title, condense: tokens of the document the move describes (title 128, condense 64)."""
    context_tokens: int | None = None
    """rlp: tokens of context c before the thought (64)."""
    target_tokens: int | None = None
    """reverse: tokens of the target t (32); rlp: next tokens scored (16)."""
    target_text: str | None = None
    """reverse: a fixed target text (e.g. a jailbreak target) instead of a document slice."""
    exact_length: bool | None = None
    """title, condense: the move is exactly move_length tokens (true; title's default, the authors' demo) or ends at
    the player's end of reply, at most move_length tokens (false; condense's default)."""

    def params(self) -> dict[str, Any]:
        """The fields that parameterise the game (null ones left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "kind" and v is not None}


@dataclass
class FrostConfig:
    """Frost proposal and replacement (used when train.algorithm is frost)."""

    rule: str = "taylor-gated"
    """Selection rule: random, topprob, taylor, taylor-gated (the paper), full, full-gated, judge-gated."""
    D: int | None = None
    """Candidates scored exactly per text and step; null means D = K (the paper)."""
    tau: float = 1e-4
    """Probability gate of the gated rules, in (0, 1)."""
    rank_by: str = "reward"
    """Ranking of rules that estimate rewards: `reward` = the child's estimated reward a(k, j, v) = R(y_k) + change
    (the paper's Algorithm 1), `lift` = the estimated change alone."""
    rounds: int = 1
    """Proposal+replacement rounds per training step (the paper: 1). Round r + 1 proposes on round r's replaced
    group: a new judge pass (with the backward when the rule uses the gradient), D more children scored, and one
    player forward per replaced move for the gate; every pass is counted in the step's compute."""


@dataclass
class OptimConfig:
    """AdamW (the paper: lr 1e-7, betas 0.9/0.999, eps 1e-8, weight decay 1e-2)."""

    lr: float = 1e-7
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float | None = None
    """Clip the gradient norm to this value; null: no clipping (the paper does not clip)."""


@dataclass
class TrainConfig:
    """The training loop."""

    algorithm: str = "frost"
    """grpo or frost (Algorithm 1)."""
    K: int = 4
    """Moves sampled per text (group size)."""
    batch_size: int = 4
    """Texts per step (the paper: 4)."""
    micro_batch: int = 0
    """Texts run together in every phase (sampling, judge, children, loss). 0: automatic, all B on the CPU and on a
    GPU the most that `frost.run.memplan` fits in its free memory; 1: one text at a time."""
    steps: int = 100
    beta: float = 0.1
    """KL coefficient."""
    advantage: str = "mean"
    """How a group's rewards become advantages: mean (r - mean(r), the paper), std ((r - mean) / (std + 1e-6), the
    original GRPO), rloo (r minus the mean of the other K-1), passk (the best move gets r_max - r_second_max, the
    rest 0: verl's grpo_passk). README, "Losses"."""
    loss: str = "reinforce"
    """The policy term: reinforce (-A log pi(y), the paper) or ppo-clip (the clipped importance ratio against the
    sampling policy, per token)."""
    epochs: int = 1
    """Optimizer updates per batch of moves (ppo-clip only above 1): each update runs the loss again on the same
    groups, against the sampling policy's log-probabilities kept from the first."""
    clip_low: float = 0.2
    """ppo-clip: the ratio is clipped below at 1 - clip_low."""
    clip_high: float = 0.2
    """ppo-clip: the ratio is clipped above at 1 + clip_high (DAPO's clip-higher: 0.28)."""
    temperature: float = 1.0
    """Sampling temperature (on-policy: 1.0)."""
    seed: int = 0
    val_every: int = 50
    """Validate every N steps (and at step 0 and the last step); 0 disables validation."""
    val_samples: int = 8
    """Moves sampled per validation text (best-of-8 in the paper)."""
    val_documents: int = 128
    """Validation texts used (at most data.validation_size)."""
    checkpoint_every: int = 50
    """Write a checkpoint every N steps (and at the end); 0: only at the end and on interruption."""
    keep_adapters: bool = False
    """Keep the adapter of every validation step in RUN/adapters/step-N (a few MB each at LoRA rank 16), so that a
    run's checkpoint can be chosen by validation afterwards (early stopping) and evaluated on a test split."""
    max_skipped_steps: int = 3
    """Stop with an error after this many steps in a row whose loss, gradient, rewards or KL were not finite (each
    such step is skipped: no optimizer step, adapter and AdamW state untouched)."""
    run_dir: str = "runs/default"
    report_to: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    """Where metrics go, any of: jsonl (RUN/metrics.jsonl, always written: resume, `frost report` and `frost
    experiment` read it), tensorboard (RUN/tensorboard, when TensorBoard is installed), wandb and trackio (optional
    extras `frost-training[wandb]` / `[trackio]`, imported only when listed; project: $WANDB_PROJECT /
    $TRACKIO_PROJECT, else `frost`; run name: the run folder's name). Validation moves go to a table there."""


@dataclass
class DataConfig:
    """Which documents a run uses and how they are split."""

    source: str = "embedded"
    """`embedded`, `handwritten`, `cosmopedia`, or a path to a .jsonl/.txt/.parquet file or a folder of .txt files."""
    field: str = "text"
    """The text field of .jsonl records and .parquet columns (Cosmopedia: `text`)."""
    validation_size: int = 128
    """The first N usable documents form the validation set (the paper: 128)."""
    max_documents: int | None = None
    """Read at most this many documents (streamed hub sources need a bound; None reads everything local and
    20,000 documents from the hub)."""
    seed: int = 0
    """Seed of the training order."""
    test_start: int = 0
    """Index (among the usable documents) of the first test document."""
    test_size: int = 0
    """Documents from `test_start` on held out as the test split: never trained on, never validated on, read only
    by a final test phase (`load_test_split`); 0: no test split."""

    def validate(self) -> None:
        """Raise `ConfigError` naming the field when a size is out of range or the test split overlaps the validation
        documents."""
        if self.validation_size < 0:
            raise ConfigError(f"data.validation_size must be >= 0, got {self.validation_size}")
        if self.test_size < 0 or self.test_start < 0:
            raise ConfigError(
                f"data.test_start and data.test_size must be >= 0, got {self.test_start}, {self.test_size}"
            )
        if self.test_size and self.test_start < self.validation_size:
            raise ConfigError(
                f"data.test_start, data.test_size: the test split ({self.test_start}-"
                f"{self.test_start + self.test_size - 1}) overlaps the validation documents "
                f"(0-{self.validation_size - 1}, data.validation_size); set data.test_start >= data.validation_size"
            )
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError(f"data.max_documents must be >= 1 or null, got {self.max_documents}")
        if not self.field:
            raise ConfigError("data.field must name the text field, e.g. text")


@dataclass
class Config:
    """A whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    game: GameConfig = field(default_factory=GameConfig)
    frost: FrostConfig = field(default_factory=FrostConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def budget(self) -> int:
        """D, candidates per text and step."""
        return self.train.K if self.frost.D is None else self.frost.D

    def validate(self) -> Config:
        """Check every field; raise ConfigError naming the first bad one."""
        from frost.games import resolve_spec
        from frost.rules import check_rank_by, check_tau, get_rule

        t, g, o, lo = self.train, self.game, self.optim, self.lora
        if t.algorithm not in ALGORITHMS:
            raise ConfigError(f"train.algorithm must be one of {', '.join(ALGORITHMS)}; got {t.algorithm!r}")
        _at_least("train.micro_batch", self.train.micro_batch, 0)
        _at_least("model.fsdp_shards", self.model.fsdp_shards, 1)
        check_decode(self.model.decode)
        if self.model.fsdp_shards > 1 and self.model.judge is not None:
            raise ConfigError(
                "model.fsdp_shards: a separate model.judge is not sharded; leave model.judge null (the judge shares "
                "the player's sharded base) or set model.fsdp_shards: 1"
            )
        _at_least("train.max_skipped_steps", self.train.max_skipped_steps, 1)
        for name in ("K", "batch_size", "val_samples"):
            _at_least(f"train.{name}", getattr(t, name), 1)
        for name in ("steps", "val_every", "checkpoint_every", "val_documents"):
            _at_least(f"train.{name}", getattr(t, name), 0)
        if not (math.isfinite(t.beta) and t.beta >= 0):
            raise ConfigError(f"train.beta must be a finite number >= 0, got {t.beta}")
        if not (math.isfinite(t.temperature) and t.temperature > 0):
            raise ConfigError(f"train.temperature must be a finite number > 0, got {t.temperature}")
        _check_loss(t)
        if not isinstance(t.report_to, list) or any(r not in REPORT_TO for r in t.report_to):
            raise ConfigError(f"train.report_to must be a list of {', '.join(REPORT_TO)}; got {t.report_to!r}")
        if not g.kind:
            raise ConfigError("game.kind is missing: a built-in game (infilling, reverse, title, ...) or a game file")
        resolve_spec(g.kind, g.params())
        get_rule(self.frost.rule)
        check_tau(self.frost.tau)
        check_rank_by(self.frost.rank_by)
        if self.frost.D is not None:
            _at_least("frost.D", self.frost.D, 0)
        _at_least("frost.rounds", self.frost.rounds, 1)
        if not (math.isfinite(o.lr) and o.lr > 0):
            raise ConfigError(f"optim.lr must be a finite number > 0, got {o.lr}")
        if not (math.isfinite(o.eps) and o.eps > 0):
            raise ConfigError(f"optim.eps must be a finite number > 0, got {o.eps}")
        if not (math.isfinite(o.weight_decay) and o.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be a finite number >= 0, got {o.weight_decay}")
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        if o.max_grad_norm is not None and not o.max_grad_norm > 0:
            raise ConfigError(f"optim.max_grad_norm must be > 0 or null, got {o.max_grad_norm}")
        _at_least("lora.rank", lo.rank, 1)
        if not 0 <= lo.dropout < 1:
            raise ConfigError(f"lora.dropout must lie in [0, 1), got {lo.dropout}")
        if not self.model.name:
            raise ConfigError("model.name is missing: set it to embedded, a folder or a hub id")
        _at_least("model.judge_batch_size", self.model.judge_batch_size, 1)
        self.data.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain dicts (every section, every field)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The whole config as YAML, in field order (what a run folder's config.yaml holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_loss(t: TrainConfig) -> None:
    """The advantage, loss and epochs fields (`frost.losses`)."""
    if t.advantage not in ADVANTAGES:
        raise ConfigError(f"train.advantage must be one of {', '.join(ADVANTAGES)}; got {t.advantage!r}")
    if t.advantage != "mean" and t.K < 2:
        raise ConfigError(f"train.advantage {t.advantage} needs at least 2 moves per group: set train.K >= 2")
    if t.loss not in LOSSES:
        raise ConfigError(f"train.loss must be one of {', '.join(LOSSES)}; got {t.loss!r}")
    _at_least("train.epochs", t.epochs, 1)
    if t.epochs > 1 and t.loss != "ppo-clip":
        raise ConfigError(
            "train.epochs above 1 needs train.loss: ppo-clip (REINFORCE has no ratio to correct for the updated "
            "policy); set train.loss=ppo-clip or train.epochs=1"
        )
    if not (math.isfinite(t.clip_low) and 0 < t.clip_low < 1):
        raise ConfigError(f"train.clip_low must lie in (0, 1), got {t.clip_low}")
    if not (math.isfinite(t.clip_high) and t.clip_high > 0):
        raise ConfigError(f"train.clip_high must be a finite number > 0, got {t.clip_high}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""Numbers written without a dot before the exponent, which YAML 1.1 leaves as text."""


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check (and gently convert) a YAML value against a field's type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-5 (no dot) as a string
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if origin is list and isinstance(value, list):
        return [_coerce(v, args[0], f"{name}[]") for v in value]
    raise ConfigError(f"{name} must be of type {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _fill(obj: Any, values: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; known keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping of its fields")
            _fill(current, value, f"{path}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated Config from nested dicts (unknown keys are errors)."""
    config = Config()
    _fill(config, values or {}, "")
    return config.validate()


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    *,
    game: str | None = None,
    sections: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML file (or start from `sections`, or the defaults), apply `key.sub=value` overrides, validate.
    `game` (a built-in game or a game file) replaces the file's game section, keeping only its `move_length`: the
    other fields belong to the file's game (e.g. infilling's begin_tokens) and would not apply to another."""
    values: dict[str, Any] = copy.deepcopy(sections) if sections is not None else {}
    if path is not None:
        p = Path(path)
        values = read_yaml_file(p, "--config", missing=f"--config: {p} does not exist") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"--config: {p} must hold a mapping of sections (model, train, ...)")
    if game is not None:
        section = values.get("game")
        old: dict[str, Any] = section if isinstance(section, dict) else {}
        values["game"] = {"kind": game} | ({"move_length": old["move_length"]} if old.get("move_length") else {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.K=8")
        key, raw = item.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return config_from_dict(values)


def check_decode(mode: str) -> None:
    """Raise ConfigError unless `mode` is one of DECODE_MODES."""
    if mode not in DECODE_MODES:
        raise ConfigError(f"model.decode must be one of {', '.join(DECODE_MODES)}; got {mode!r}")
