"""Inference on any game: the best move for one game instance, by sampling K moves and refining them with Frost
rounds (`frost.step.frost_rounds`, the same code that trains with `frost.rounds`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from frost.games import GameInstance
from frost.judge import Judge
from frost.moves import move_masks
from frost.proposal import FrostInput, FrostRecord
from frost.step import GroupSettings, frost_rounds, shared_prefix_sampler


@dataclass
class InfillResult:
    """The refined group and the history of each Frost round."""

    moves: torch.Tensor
    """[K, L] the final group, best first."""
    rewards: torch.Tensor
    """[K] their exact rewards, descending."""
    initial_best: float
    """Best reward of the sampled group before any refinement."""
    rounds: list[FrostRecord] = field(default_factory=list)

    def to_json(self, game: Any, inst: GameInstance) -> dict[str, Any]:
        """The result as `frost infill --json` prints it: each move's text, content ids and reward, and the rounds."""
        moves = self.moves.tolist()
        return {
            "initial_best": self.initial_best,
            "moves": [
                {"text": game.move_text(inst, m), "ids": m[: inst.content_length(m)], "reward": r}
                for m, r in zip(moves, self.rewards.tolist(), strict=True)
            ],
            "rounds": [rec.summary() for rec in self.rounds],
        }

    def describe(self, game: Any, inst: GameInstance) -> str:
        """The result as `frost infill` prints it: the best sampled reward, the best after the rounds, each move."""
        lines = [
            f"best of {len(self.moves)} sampled: {self.initial_best:.3f}; after {len(self.rounds)} Frost round(s): "
            f"{float(self.rewards[0]):.3f} nats"
        ]
        for m, r in zip(self.moves.tolist(), self.rewards.tolist(), strict=True):
            lines.append(f"  {r:9.3f}  {game.move_text(inst, m)!r}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Refinement:
    """How `infill` (and `frost.improve`, `frost infill`) refine one group at inference: sample `K` moves, then up to
    `rounds` Frost rounds. Checked when built: a bad value raises `ConfigError` naming the field."""

    K: int = 8
    """Moves sampled from the player."""
    rounds: int = 3
    """Frost proposal+replacement rounds on the group (0: sampling alone); they stop early when one replaces
    nothing."""
    rule: str = "full-gated"
    """The selection rule (`frost rules` lists them)."""
    D: int = 16
    """Candidates scored exactly per round."""
    tau: float = 1e-4
    """The gate on the player's own probability of a candidate token (in (0, 1))."""
    temperature: float = 1.0
    """The player's sampling temperature."""
    rank_by: str = "reward"
    """What the rounds rank candidates by (`frost.rules.check_rank_by`)."""

    def __post_init__(self) -> None:
        from frost.errors import ConfigError
        from frost.rules import check_rank_by, check_tau, get_rule

        for name in ("K", "D"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {self.rounds}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        get_rule(self.rule)
        check_tau(self.tau)
        check_rank_by(self.rank_by)

    @classmethod
    def of(cls, base: Refinement | None = None, **changes: Any) -> Refinement:
        """`base` (default: the defaults) with `changes`; an unknown name raises `ConfigError` listing the fields."""
        from dataclasses import fields, replace

        from frost.errors import ConfigError

        names = [f.name for f in fields(cls)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; the refinement's settings are {', '.join(names)}")
        return replace(base or cls(), **changes)

    def group_settings(self) -> GroupSettings:
        """The training step's settings for these rounds (the same `frost_rounds` trains)."""
        return GroupSettings(
            algorithm="frost", K=self.K, rule=self.rule, budget=self.D, tau=self.tau, rank_by=self.rank_by,
            temperature=self.temperature, rounds=self.rounds,
        )  # fmt: skip


def infill(
    judge: Judge,
    player: Any,
    inst: GameInstance,
    refinement: Refinement = Refinement(),
    *,
    forbidden: torch.Tensor,
    generator: torch.Generator | None = None,
) -> InfillResult:
    """Sample `refinement.K` moves, then run up to `refinement.rounds` Frost proposal+replacement rounds on the group.

    `forbidden` [V] are the model's forbidden tokens (`frost.models.forbidden_token_mask`); the game instance adds
    its own. Each round re-reads the player's distributions of the moves the last round replaced (one forward) so the
    gate sees the prefixes the mutated moves now have; rounds stop when one replaces nothing (deterministic rules).
    The group never gets worse: replacement only accepts strict improvements.
    """
    masks = move_masks(inst, forbidden)
    sampled = shared_prefix_sampler(player, [inst], refinement.K, [masks], refinement.temperature, generator)[0]
    moves, rewards = sampled.moves, judge.rewards(inst, sampled.moves)
    initial_best = float(rewards.max())
    history: list[FrostRecord] = []
    if refinement.rounds > 0:
        text = FrostInput(inst, sampled.moves, sampled.logprobs, masks.content)
        groups, _ = frost_rounds(
            player, judge, [text], refinement.group_settings(), sampling_masks=[masks.sampling], generator=generator
        )
        history = groups[0]
        moves, rewards = history[-1].moves, history[-1].rewards
    order = torch.argsort(rewards, descending=True)
    return InfillResult(moves=moves[order], rewards=rewards[order], initial_best=initial_best, rounds=history)


@dataclass
class Improved:
    """What `frost.improve` found: the best move with its exact reward, the whole refined group, and the history."""

    best: str
    """The best move's text."""
    best_ids: list[int]
    """Its token ids (content only)."""
    reward: float
    """Its exact reward under the judge."""
    initial_best: float
    """The best reward among the sampled moves, before any Frost round."""
    moves: list[dict[str, Any]]
    """The refined group, best first: text, ids and reward of each move."""
    rounds: list[dict[str, float]]
    """Each Frost round's summary (hit rate, mean lift, fraction replaced, best before and after)."""


def improve(
    document: str | None = None,
    *,
    game: str = "infilling",
    model: Any = "embedded",
    begin: str | list[int] | None = None,
    end: str | list[int] | None = None,
    checkpoint: Any = None,
    move_length: int | None = None,
    seed: int = 0,
    refinement: Refinement | None = None,
    **settings: Any,
) -> Improved:
    """The best move for one game instance, in one call: sample `K` moves from the player, refine them with `rounds`
    Frost rounds (`rule`, `D` candidates scored exactly per round, gate `tau`), and return the best with its exact
    reward.

    `document`: the text the instance is made from (any game); for infilling, `begin` and `end` instead (text or
    token ids). `model`: a name (`embedded`, a hub id, a folder) or a `LoadedModel`; `checkpoint`: a run folder or
    checkpoint whose adapter plays (the judge stays the base). `move_length`: the game's move length (default: the
    game's). The refinement is `refinement` (default `Refinement()`) with `settings` changed, any of its fields by
    name: `K=4, rounds=2, rule="judge-gated", D=4, tau=1e-4, temperature=1.0, rank_by="reward"`. The same code as
    `frost infill`.
    """
    from frost.games.inputs import game_from_options, instance_from_options
    from frost.models import LoadedModel, forbidden_token_mask, load_model
    from frost.run.checkpoint import player_and_judge

    how = Refinement.of(refinement, **settings)
    lm = model if isinstance(model, LoadedModel) else load_model(str(model))
    player, judge = player_and_judge(lm, checkpoint or ())
    played = game_from_options(game, lm.tokenizer, move_length=move_length)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    ids = {"begin_ids": begin, "end_ids": end} if isinstance(begin, list) or isinstance(end, list) else {}
    texts = {} if ids else {"begin": begin, "end": end}
    inst = instance_from_options(played, vocab, doc=document, **ids, **texts)  # type: ignore[arg-type]
    result = infill(
        judge, player, inst, how, forbidden=forbidden_token_mask(lm.tokenizer, vocab, lm.device),
        generator=torch.Generator(device=lm.device).manual_seed(seed),
    )  # fmt: skip
    out = result.to_json(played, inst)
    best = out["moves"][0]
    return Improved(
        best=best["text"], best_ids=best["ids"], reward=best["reward"], initial_best=result.initial_best,
        moves=out["moves"], rounds=out["rounds"],
    )  # fmt: skip
