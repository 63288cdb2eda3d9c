"""One training step over B texts, the same code for GRPO and Frost-GRPO, for training, the bench and the analyses.

`play_step` samples K moves for each of the step's texts and scores them: GRPO keeps them (one judge forward),
Frost runs `frost.frost_step_batch` (Algorithm 1 lines 3-7: one judge pass, proposal, exact scoring, strict-improvement
replacement). `step_loss` back-propagates the GRPO loss of the (replaced) groups into the player's adapter. Every
phase runs `GroupSettings.text_batch` texts at once (all of them by default): one prefill and one batched decode for
their prompts, one judge pass over all parents, one over all children, one policy and one reference pass. Both charge
their phases to a `PhaseTimer` passed in (sample, judge_pass, select, children, policy, reference) and return typed
records; the trainer only adds the optimiser, logging and checkpoints. `play_group` / `group_loss` are the same for
one text.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from frost.errors import ConfigError, FrostError
from frost.frost import FrostInput, FrostRecord, frost_step_batch
from frost.games import GameInstance
from frost.grpo import LossTerms, grpo_loss
from frost.judge import Judge
from frost.moves import MoveMasks, decision_mask, move_masks
from frost.phases import NoTimer, PhaseTimer
from frost.sampling import SampledMoves, policy_distributions_batch, sample_moves_batch

Generators = torch.Generator | Sequence[torch.Generator] | None
"""One random generator for all texts, or one per text (a text's draws then depend on nothing else)."""

ALGORITHMS = ("grpo", "frost")


@dataclass
class GroupSettings:
    """What one group needs to know (from the run's config)."""

    algorithm: str = "frost"
    """grpo or frost."""
    K: int = 4
    """Moves sampled per text."""
    rule: str = "taylor-gated"
    """Frost's selection rule."""
    budget: int = 4
    """D, candidates scored exactly."""
    tau: float = 1e-4
    """Frost's probability gate."""
    rank_by: str = "reward"
    """Frost's ranking target."""
    temperature: float = 1.0
    """Sampling temperature."""
    beta: float = 0.1
    """KL coefficient."""
    shared_prompt: bool = True
    """Encode the prompt once for the group in the loss (False: K full sequences, the naive path)."""
    text_batch: int = 0
    """Texts run together in each phase (0: all the texts of the step; 1: one at a time); `step_loss` lowers it
    for good when the loss runs out of memory."""


class Sampler(Protocol):
    """How the moves of several texts are drawn: (player, instances, K, masks per text, temperature, generator) ->
    one `SampledMoves` per text."""

    def __call__(
        self,
        player: Any,
        insts: Sequence[GameInstance],
        k: int,
        masks: Sequence[MoveMasks],
        temperature: float,
        generator: Generators,
    ) -> list[SampledMoves]: ...


def shared_prefix_sampler(
    player: Any,
    insts: Sequence[GameInstance],
    k: int,
    masks: Sequence[MoveMasks],
    temperature: float,
    generator: Generators,
    decode: str = "auto",
) -> list[SampledMoves]:
    """K moves per text from one prefill of all the prompts and batched decoding
    (`frost.sampling.sample_moves_batch`; `decode`: `frost.decode`)."""
    lengths = {inst.move_length for inst in insts}
    if len(lengths) != 1:
        raise ConfigError(f"texts sampled together need one move length; got {sorted(lengths)}")
    return sample_moves_batch(
        player,
        [inst.prompt_ids for inst in insts],
        k,
        lengths.pop(),
        temperature=temperature,
        forbidden=[m.sampling for m in masks],
        stop_ids=[inst.stop_id for inst in insts],
        generator=generator,
        decode=decode,
    )


T = TypeVar("T")


def text_chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in runs of `size` (0: one run of all)."""
    size = size or max(1, len(items))
    for lo in range(0, len(items), size):
        yield list(items[lo : lo + size])


@dataclass
class GroupRecord:
    """Everything one text's group did."""

    inst: GameInstance
    sampled: SampledMoves
    """The on-policy moves and the distributions they were drawn from."""
    moves: torch.Tensor
    """[K, L] the group trained on (Frost: after replacement)."""
    rewards: torch.Tensor
    """[K] its exact rewards."""
    parent_rewards: torch.Tensor
    """[K] the exact rewards of the sampled moves."""
    masks: MoveMasks
    frost: FrostRecord | None = None
    """Frost's proposal and replacement (None for GRPO)."""
    loss: LossTerms | None = None
    """Filled by `group_loss`."""
    player_fwd_seqs: int = 0
    player_bwd_seqs: int = 0
    tokens: int = 0
    """Tokens through the player and the judge (padding excluded)."""

    def metrics(self) -> dict[str, float]:
        """Scalars of this group (Frost's under `frost/`)."""
        out = {"parent_mean": float(self.parent_rewards.mean())}
        if self.frost is not None:
            out |= {
                "frost/hit_rate": self.frost.hit_rate,
                "frost/mean_lift": self.frost.mean_lift,
                "frost/frac_replaced": self.frost.frac_replaced,
            }
        if self.loss is not None:
            out |= {"loss": float(self.loss.loss.detach()), "kl": self.loss.kl, "entropy": self.loss.entropy}
        return out


def play_step(
    player: Any,
    judge: Judge,
    insts: Sequence[GameInstance],
    settings: GroupSettings,
    *,
    base_forbidden: torch.Tensor,
    generator: Generators = None,
    timer: PhaseTimer | None = None,
    sampler: Sampler = shared_prefix_sampler,
) -> list[GroupRecord]:
    """Sample K moves for each text and score them: GRPO keeps them, Frost proposes and replaces
    (`frost_step_batch`); `settings.text_batch` texts at a time. `generator`: one for all texts or one per text."""
    timer = timer or NoTimer()
    records: list[GroupRecord] = []
    per_text = generator is not None and not isinstance(generator, torch.Generator)
    gens = list(generator) if per_text else None  # type: ignore[arg-type]
    for chunk_start, chunk in zip(range(0, len(insts), settings.text_batch or len(insts) or 1),
                                  text_chunks(insts, settings.text_batch), strict=True):  # fmt: skip
        if gens is not None:
            generator = gens[chunk_start : chunk_start + len(chunk)]
        masks = [move_masks(inst, base_forbidden) for inst in chunk]
        judge_tokens = judge.forward_tokens
        with timer.phase("sample"):
            sampled = sampler(player, chunk, settings.K, masks, settings.temperature, generator)
        frost: list[FrostRecord | None]
        if settings.algorithm == "frost":
            texts = [
                FrostInput(i, s.moves, s.logprobs, m.content) for i, s, m in zip(chunk, sampled, masks, strict=True)
            ]
            frost = list(
                frost_step_batch(
                    judge,
                    texts,
                    rule=settings.rule,
                    budget=settings.budget,
                    tau=settings.tau,
                    generator=generator,
                    rank_by=settings.rank_by,
                    timer=timer,
                )
            )
            results = [(r.moves, r.rewards, r.parent_rewards) for r in frost if r is not None]
        else:
            with timer.phase("judge_pass"):
                scored = judge.rewards_many([(i, s.moves) for i, s in zip(chunk, sampled, strict=True)])
            frost = [None] * len(chunk)
            results = [(s.moves, r, r) for s, r in zip(sampled, scored, strict=True)]
        judge_share = (judge.forward_tokens - judge_tokens) // len(chunk)
        for inst, s, m, f, (moves, rewards, parents) in zip(chunk, sampled, masks, frost, results, strict=True):
            records.append(
                GroupRecord(
                    inst=inst,
                    sampled=s,
                    moves=moves,
                    rewards=rewards,
                    parent_rewards=parents,
                    masks=m,
                    frost=f,
                    player_fwd_seqs=settings.K,
                    tokens=len(inst.prompt_ids) + settings.K * inst.move_length + judge_share,
                )
            )
    return records


def play_group(
    player: Any,
    judge: Judge,
    inst: GameInstance,
    settings: GroupSettings,
    *,
    base_forbidden: torch.Tensor,
    generator: torch.Generator | None = None,
    timer: PhaseTimer | None = None,
    sampler: Sampler = shared_prefix_sampler,
) -> GroupRecord:
    """`play_step` for one text."""
    return play_step(
        player, judge, [inst], settings, base_forbidden=base_forbidden, generator=generator, timer=timer,
        sampler=sampler,
    )[0]  # fmt: skip


class LossOutOfMemory(FrostError):
    """Even one text per policy/reference pass does not fit in memory."""


def step_loss(
    player: Any,
    records: Sequence[GroupRecord],
    settings: GroupSettings,
    *,
    reference: Callable[[], contextlib.AbstractContextManager[Any]],
    scale: float = 1.0,
    timer: PhaseTimer | None = None,
) -> list[LossTerms]:
    """The GRPO loss of each group (policy forward with gradient, reference forward under `reference`, e.g. the
    adapter switched off), `settings.text_batch` texts per pass, each group's loss back-propagated times `scale`
    (1/B for a step's mean). Fills `record.loss`.

    On out-of-memory the gradients are put back as they were on entry, `settings.text_batch` is halved (from then
    on, with one warning per size) and the whole step's loss is computed again, so the result does not depend on
    where memory ran out."""
    timer = timer or NoTimer()
    params = [p for p in player.parameters() if p.requires_grad]
    entry = [None if p.grad is None else p.grad.detach().clone() for p in params]
    while True:
        try:
            out = _step_loss_passes(player, records, settings, reference=reference, scale=scale, timer=timer)
            break
        except torch.OutOfMemoryError:
            size = settings.text_batch or len(records)
            for p, g in zip(params, entry, strict=True):
                p.grad = g
            if size <= 1:
                raise LossOutOfMemory(
                    "loss: out of memory with one text per policy pass; use a device with more memory, "
                    "model.gradient_checkpointing, a smaller K or shorter game texts"
                ) from None
            settings.text_batch = size // 2
            warnings.warn(f"loss: out of memory at {size} texts per pass; continuing with {size // 2}", stacklevel=2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    for record, t in zip(records, out, strict=True):
        k, inst = record.moves.shape[0], record.inst
        record.loss = t
        record.player_fwd_seqs += 2 * k
        record.player_bwd_seqs += k
        prompt_tokens = len(inst.prompt_ids) * (1 if settings.shared_prompt else k)
        record.tokens += 2 * (prompt_tokens + k * inst.move_length)
    return out


def _step_loss_passes(
    player: Any,
    records: Sequence[GroupRecord],
    settings: GroupSettings,
    *,
    reference: Callable[[], contextlib.AbstractContextManager[Any]],
    scale: float,
    timer: PhaseTimer,
) -> list[LossTerms]:
    """`step_loss`'s passes, `settings.text_batch` texts at a time; back-propagates each pass."""
    out: list[LossTerms] = []
    for chunk in text_chunks(records, settings.text_batch):
        prompts = [r.inst.prompt_ids for r in chunk]
        moves = [r.moves for r in chunk]
        kwargs: dict[str, Any] = {
            "temperature": settings.temperature,
            "forbidden": [r.masks.sampling for r in chunk],
            "shared_prompt": settings.shared_prompt,
        }
        with timer.phase("policy"):
            player.train()
            try:
                policy = policy_distributions_batch(player, prompts, moves, **kwargs)
            finally:
                player.eval()
        with timer.phase("reference"), torch.no_grad(), reference():
            ref = policy_distributions_batch(player, prompts, moves, **kwargs)
        with timer.phase("policy"):
            terms = [
                grpo_loss(p, q, r.moves, r.rewards, settings.beta, mask=decision_mask(r.inst, r.moves))
                for p, q, r in zip(policy, ref, chunk, strict=True)
            ]
            (torch.stack([t.loss for t in terms]).sum() * scale).backward()
        out.extend(terms)
    return out


def group_loss(
    player: Any,
    record: GroupRecord,
    settings: GroupSettings,
    *,
    reference: Callable[[], contextlib.AbstractContextManager[Any]],
    scale: float = 1.0,
    timer: PhaseTimer | None = None,
) -> LossTerms:
    """`step_loss` for one group."""
    return step_loss(player, [record], settings, reference=reference, scale=scale, timer=timer)[0]
