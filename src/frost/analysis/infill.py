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


def infill(
    judge: Judge,
    player: Any,
    inst: GameInstance,
    *,
    K: int = 8,
    rounds: int = 3,
    rule: str = "full-gated",
    D: int = 16,
    tau: float = 1e-4,
    temperature: float = 1.0,
    forbidden: torch.Tensor,
    generator: torch.Generator | None = None,
    rank_by: str = "reward",
) -> InfillResult:
    """Sample K moves, then run `rounds` Frost proposal+replacement rounds on the group.

    `forbidden` [V] are the model's forbidden tokens (`frost.models.forbidden_token_mask`); the game instance adds
    its own. Each round re-reads the player's distributions of the moves the last round replaced (one forward) so the
    gate sees the prefixes the mutated moves now have; rounds stop when one replaces nothing (deterministic rules).
    The group never gets worse: replacement only accepts strict improvements.
    """
    masks = move_masks(inst, forbidden)
    sampled = shared_prefix_sampler(player, [inst], K, [masks], temperature, generator)[0]
    moves, rewards = sampled.moves, judge.rewards(inst, sampled.moves)
    initial_best = float(rewards.max())
    history: list[FrostRecord] = []
    if rounds > 0:
        settings = GroupSettings(
            algorithm="frost", K=K, rule=rule, budget=D, tau=tau, rank_by=rank_by, temperature=temperature,
            rounds=rounds,
        )  # fmt: skip
        text = FrostInput(inst, sampled.moves, sampled.logprobs, masks.content)
        groups, _ = frost_rounds(player, judge, [text], settings, sampling_masks=[masks.sampling], generator=generator)
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
    K: int = 8,
    rounds: int = 3,
    rule: str = "full-gated",
    D: int = 16,
    tau: float = 1e-4,
    temperature: float = 1.0,
    seed: int = 0,
) -> Improved:
    """The best move for one game instance, in one call: sample `K` moves from the player, refine them with `rounds`
    Frost rounds (`rule`, `D` children per round, gate `tau`), and return the best with its exact reward.

    `document`: the text the instance is made from (any game); for infilling, `begin` and `end` instead (text or
    token ids). `model`: a name (`embedded`, a hub id, a folder) or a `LoadedModel`; `checkpoint`: a run folder or
    checkpoint whose adapter plays (the judge stays the base). `move_length`: the game's move length (default: the
    game's). The same code as `frost infill`.
    """
    from frost.games.inputs import game_from_options, instance_from_options
    from frost.models import LoadedModel, forbidden_token_mask, load_model
    from frost.proposal import check_tau, get_rule

    get_rule(rule)
    check_tau(tau)
    lm = model if isinstance(model, LoadedModel) else load_model(str(model))
    player, judge = lm.model, Judge(lm.model)
    if checkpoint is not None:
        from frost.run.checkpoint import load_players

        player = load_players([checkpoint], lm)
        judge = Judge(player, context=player.disable_adapter)
    played = game_from_options(game, lm.tokenizer, move_length=move_length)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    ids = {"begin_ids": begin, "end_ids": end} if isinstance(begin, list) or isinstance(end, list) else {}
    texts = {} if ids else {"begin": begin, "end": end}
    inst = instance_from_options(played, vocab, doc=document, **ids, **texts)  # type: ignore[arg-type]
    result = infill(
        judge, player, inst, K=K, rounds=rounds, rule=rule, D=D, tau=tau, temperature=temperature,
        forbidden=forbidden_token_mask(lm.tokenizer, vocab, lm.device),
        generator=torch.Generator(device=lm.device).manual_seed(seed),
    )  # fmt: skip
    out = result.to_json(played, inst)
    best = out["moves"][0]
    return Improved(
        best=best["text"], best_ids=best["ids"], reward=best["reward"], initial_best=result.initial_best,
        moves=out["moves"], rounds=out["rounds"],
    )  # fmt: skip
