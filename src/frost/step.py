"""One training step over B texts, the same code for GRPO and Frost-GRPO, for training, the bench and the analyses.

`play_step` samples K moves for each of the step's texts and scores them: GRPO keeps them (one judge forward), Frost
runs `frost.proposal.frost_step_batch` (Algorithm 1 lines 3-7: one judge pass, proposal, exact scoring, strict-
improvement replacement). `step_loss` back-propagates the GRPO loss of the (replaced) groups into the player's
adapter. Every phase runs `GroupSettings.text_batch` texts at once (all of them by default): one prefill and one
batched decode for their prompts, one judge pass over all parents, one over all children, one policy and one
reference pass. Both charge their phases to a `PhaseTimer` passed in (sample, judge_pass, select, children, policy,
reference) and return typed records; the trainer only adds the optimiser, logging and checkpoints. One text is a
list of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from frost.agreement import ALONE, Agreement, fits
from frost.errors import ConfigError, FrostError
from frost.games import GameInstance
from frost.judge import Judge
from frost.losses import LossSettings, LossTerms, grpo_loss
from frost.moves import MoveMasks, decision_mask, move_masks
from frost.phases import NoTimer, PhaseTimer
from frost.proposal import FrostInput, FrostRecord, frost_step_batch
from frost.rules import get_rule
from frost.sampling import SampledMoves, player_logprobs, policy_distributions_batch, sample_moves_batch

Generators = torch.Generator | Sequence[torch.Generator] | None
"""One random generator for all texts, or one per text (a text's draws then depend on nothing else)."""


@dataclass(frozen=True)
class GroupSettings:
    """What one group needs to know (from the run's config); built once per run, never changed while it runs."""

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
    """Texts run together in each phase (0: all the texts of the step; 1: one at a time); when the loss runs out of
    memory, `step_loss` tells its caller the smaller size (`on_backoff`), which the trainer keeps for good."""
    rounds: int = 1
    """Frost proposal+replacement rounds per step; each later round proposes again on the replaced group."""
    loss: LossSettings = field(default_factory=LossSettings)
    """The advantage estimator and the policy term (`frost.losses`)."""
    agreement: Agreement = ALONE
    """How the loss agrees on out-of-memory back-off with the ranks that share the base (`frost.agreement`)."""


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
    """Frost's first round of proposal and replacement (None for GRPO)."""
    frost_rounds: list[FrostRecord] = field(default_factory=list)
    """Every Frost round this text ran, in order (the first is `frost`; a round that replaced nothing ends a
    deterministic rule's rounds early)."""
    loss: LossTerms | None = None
    """Filled by `step_loss` (the step's first update)."""
    old_logprobs: torch.Tensor | None = None
    """[K, L] ppo-clip's log pi_old(y_k[j]): the sampling policy's, kept from the step's first update."""
    clip_fracs: list[float] = field(default_factory=list)
    """ppo-clip: each update's clipped fraction."""
    player_fwd_seqs: int = 0
    player_bwd_seqs: int = 0
    tokens: int = 0
    """Tokens through the player and the judge (padding excluded)."""


@dataclass(frozen=True)
class RoundStats:
    """Frost's statistics over the rounds of one text."""

    hit_rate: float
    """Children strictly better than their parent, over every round's children (NaN with no child)."""
    mean_lift: float
    """Mean improvement of those children over their parents (NaN with no hit)."""
    frac_replaced: float
    """Fraction of the sampled moves replaced in any round."""
    rounds: int
    """Rounds run (a round that replaced nothing ends a deterministic rule's rounds early)."""
    rescored: int
    """Parents re-scored beside their children (`frost.proposal.replace_many`'s `same_path`), in judge sequences."""


def pooled_rounds(rounds: Sequence[FrostRecord]) -> RoundStats:
    """Frost's statistics over several rounds of one text, pooled over every round's children."""
    hits = torch.cat([r.hits for r in rounds])
    lifts = torch.cat([r.child_rewards - r.parent_rewards[r.candidates.parent] for r in rounds])
    replaced = torch.stack([r.chosen >= 0 for r in rounds]).any(0)
    return RoundStats(
        hit_rate=float(hits.float().mean()) if len(hits) else float("nan"),
        mean_lift=float(lifts[hits].mean()) if bool(hits.any()) else float("nan"),
        frac_replaced=float(replaced.float().mean()),
        rounds=len(rounds),
        rescored=sum(r.rescored for r in rounds),
    )


def frost_rounds(
    player: Any,
    judge: Judge,
    texts: Sequence[FrostInput],
    settings: GroupSettings,
    *,
    sampling_masks: Sequence[torch.Tensor],
    generator: Generators = None,
    timer: PhaseTimer | None = None,
    on_round: Callable[[int], None] | None = None,
) -> tuple[list[list[FrostRecord]], list[int]]:
    """`settings.rounds` Frost rounds (Algorithm 1 lines 3-7, `frost_step_batch`) on each text's group: round r + 1
    proposes on round r's replaced group, with a new judge pass (and backward, when the rule needs the gradient).
    The gate and the prior read the player's distributions: a move replaced in the last round gets them from one
    player forward over prompt + move (`sampling_masks`: each text's [L, V] or [V] sampling mask), the others keep
    theirs. A text whose round replaced nothing stops, unless its rule is random (a deterministic rule would
    propose the same children again). `on_round(r)` is called after round r (1-based) has run on every text still
    going (e.g. to read the judge's counters). Returns each text's rounds and the player sequences re-read per
    text."""
    timer = timer or NoTimer()
    spec = get_rule(settings.rule)
    per_text = generator is not None and not isinstance(generator, torch.Generator)
    gens: list[Any] = list(generator) if per_text else [generator] * len(texts)  # type: ignore[arg-type]

    def run(batch: list[FrostInput], batch_gens: list[Any]) -> list[FrostRecord]:
        return frost_step_batch(
            judge, batch, rule=settings.rule, budget=settings.budget, tau=settings.tau,
            generator=batch_gens if per_text else generator, rank_by=settings.rank_by, timer=timer,
        )  # fmt: skip

    history = [[rec] for rec in run(list(texts), gens)]
    reads_player = spec.gated or "P" in spec.signals
    if on_round is not None:
        on_round(1)
    current = list(texts)
    reread = [0] * len(texts)
    for round_number in range(2, settings.rounds + 1):
        again = [n for n, h in enumerate(history) if h[-1].frac_replaced > 0 or not spec.signals]
        if not again:
            break
        inputs = []
        for n in again:
            last, text = history[n][-1], current[n]
            dists = text.player_logprobs
            changed = torch.nonzero(last.chosen >= 0).squeeze(1)
            if dists is not None and reads_player and len(changed):
                with timer.phase("select"):
                    fresh = player_logprobs(
                        player, text.inst.prompt_ids, last.moves[changed], temperature=settings.temperature,
                        forbidden=sampling_masks[n],
                    )  # fmt: skip
                dists = dists.clone()
                dists[changed] = fresh.to(dists.dtype)
                reread[n] += len(changed)
            current[n] = FrostInput(text.inst, last.moves, dists, text.forbidden)
            inputs.append(current[n])
        for n, rec in zip(again, run(inputs, [gens[n] for n in again]), strict=True):
            history[n].append(rec)
        if on_round is not None:
            on_round(round_number)
    return history, reread


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
            history, reread = frost_rounds(
                player, judge, texts, settings, sampling_masks=[m.sampling for m in masks], generator=generator,
                timer=timer,
            )  # fmt: skip
            frost = [h[0] for h in history]
            results = [(h[-1].moves, h[-1].rewards, h[0].parent_rewards) for h in history]
        else:
            history, reread = [[] for _ in chunk], [0] * len(chunk)
            with timer.phase("judge_pass"):
                scored = judge.rewards_many([(i, s.moves) for i, s in zip(chunk, sampled, strict=True)])
            frost = [None] * len(chunk)
            results = [(s.moves, r, r) for s, r in zip(sampled, scored, strict=True)]
        judge_share = (judge.forward_tokens - judge_tokens) // len(chunk)
        for inst, s, m, f, h, n_reread, (moves, rewards, parents) in zip(
            chunk, sampled, masks, frost, history, reread, results, strict=True
        ):
            records.append(
                GroupRecord(
                    inst=inst,
                    sampled=s,
                    moves=moves,
                    rewards=rewards,
                    parent_rewards=parents,
                    masks=m,
                    frost=f,
                    frost_rounds=h,
                    player_fwd_seqs=settings.K + n_reread,
                    tokens=len(inst.prompt_ids)
                    + settings.K * inst.move_length
                    + judge_share
                    + n_reread * (len(inst.prompt_ids) + inst.move_length),
                )
            )
    return records


class LossOutOfMemory(FrostError):
    """Even one text per policy/reference pass does not fit in memory."""


class _GroupOutOfMemory(torch.OutOfMemoryError):
    """A rank of the FSDP group could not allocate a loss pass's logits (`frost.agreement.fits`): all back off."""


def _loss_logits_bytes(player: Any, chunk: Sequence[GroupRecord]) -> int:
    """The float32 logits of a loss pass over these texts' moves, for the policy, the reference and the policy's
    gradient: the pass's largest buffers."""
    vocab = player.get_input_embeddings().weight.shape[0]
    return 3 * 4 * vocab * sum(r.moves.numel() for r in chunk)


def step_loss(
    player: Any,
    records: Sequence[GroupRecord],
    settings: GroupSettings,
    *,
    reference: Callable[[], contextlib.AbstractContextManager[Any]],
    scale: float = 1.0,
    timer: PhaseTimer | None = None,
    on_backoff: Callable[[int], None] | None = None,
) -> list[LossTerms]:
    """The GRPO loss of each group (policy forward with gradient, reference forward under `reference`, e.g. the
    adapter switched off), `settings.text_batch` texts per pass, each group's loss back-propagated times `scale`
    (1/B for a step's mean). Fills `record.loss` on a record's first update (ppo-clip also keeps that update's move
    log-probabilities as pi_old, `record.old_logprobs`); every update appends its clipped fraction to
    `record.clip_fracs`. Call it once per update (`train.epochs`): each call charges its player passes.

    On out-of-memory the gradients are put back as they were on entry, the texts per pass are halved (with one
    warning per size; `on_backoff` receives the new size) and the whole step's loss is computed again, so the
    result does not depend on where memory ran out. The ranks of an FSDP group (`settings.agreement`) back off
    together: each pass first allocates its logits on every rank and the group agrees on the outcome
    (`frost.agreement.fits`)."""
    timer = timer or NoTimer()
    params = [p for p in player.parameters() if p.requires_grad]
    entry = [None if p.grad is None else p.grad.detach().clone() for p in params]
    while True:
        try:
            out = _step_loss_passes(player, records, settings, reference=reference, scale=scale, timer=timer)
            break
        except torch.OutOfMemoryError as exc:
            size = settings.text_batch or len(records)
            if settings.agreement.shared and not isinstance(exc, _GroupOutOfMemory):
                raise LossOutOfMemory(
                    f"loss: out of memory inside a pass of {size} texts on one rank of an FSDP group, where its "
                    "ranks cannot back off apart; set train.micro_batch lower"
                ) from None
            for p, g in zip(params, entry, strict=True):
                p.grad = g
            if size <= 1:
                raise LossOutOfMemory(
                    "loss: out of memory with one text per policy pass; use a device with more memory, shard the "
                    "frozen base over several GPUs (model.fsdp_shards), a smaller train.K or shorter game texts "
                    "(game.move_length and the game's spans)"
                ) from None
            settings = dataclasses.replace(settings, text_batch=size // 2)
            if on_backoff is not None:
                on_backoff(size // 2)
            warnings.warn(f"loss: out of memory at {size} texts per pass; continuing with {size // 2}", stacklevel=2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    for record, t in zip(records, out, strict=True):
        k, inst = record.moves.shape[0], record.inst
        if record.loss is None:
            record.loss = t
            if settings.loss.loss == "ppo-clip":
                record.old_logprobs = t.move_logprobs
        record.clip_fracs.append(t.clip_frac)
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
        device = player.get_input_embeddings().weight.device
        if not fits(settings.agreement, _loss_logits_bytes(player, chunk), device, "loss"):
            raise _GroupOutOfMemory
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
                grpo_loss(
                    p,
                    q,
                    r.moves,
                    r.rewards,
                    settings.beta,
                    mask=decision_mask(r.inst, r.moves),
                    settings=settings.loss,
                    old_logprobs=r.old_logprobs,
                )
                for p, q, r in zip(policy, ref, chunk, strict=True)
            ]
            (torch.stack([t.loss for t in terms]).sum() * scale).backward()
        out.extend(terms)
    return out
