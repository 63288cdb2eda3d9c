"""Frost proposal and replacement (§2.1, Algorithm 1 lines 4-7), with the paper's selection rules and ours.

Every rule ranks the K*L*|V| single-token mutations of the K parents with three signals computed once per step:

* T, the judge-gradient term (E[v] - E[y_k[j]]) . g_kj (one matmul against the embedding matrix);
* O, the judge's exact own-position term log P_J(v | x, y<j) - log P_J(y_k[j] | x, y<j) (free from the same forward);
* P, the player prior log pi(v | prompt, y<j) (saved while sampling);

and the gate P > log tau. Candidates that keep the parent's token (v = y_k[j]) or put a forbidden token in the move
are never proposed. The top D of the grid are scored exactly; a parent is replaced by its best child only when that
child is strictly better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from frost.errors import ConfigError
from frost.games import GameInstance
from frost.judge import Judge, TaylorResult
from frost.phases import NoTimer, PhaseTimer
from frost.rules import PAPER_RULES, RANK_BY, RULES, Rule, check_rank_by, check_tau, get_rule

__all__ = ["PAPER_RULES", "RANK_BY", "RULES", "Rule", "check_rank_by", "check_tau", "get_rule"]


@dataclass
class Candidates:
    """The D mutations a rule proposes: child d sets position `position[d]` of parent `parent[d]` to `token[d]`."""

    parent: torch.Tensor
    position: torch.Tensor
    token: torch.Tensor
    score: torch.Tensor
    """The rule's ranking score of each candidate (descending)."""
    approx: torch.Tensor
    """The estimated reward of the child, R(parent) + the estimated change, when the rule estimates rewards (T
    and/or O), else NaN."""

    def __len__(self) -> int:
        return int(self.parent.numel())

    def head(self, n: int) -> Candidates:
        """The first `n` candidates (the top-n of the same ranking)."""
        return Candidates(self.parent[:n], self.position[:n], self.token[:n], self.score[:n], self.approx[:n])

    def children(self, parents: torch.Tensor) -> torch.Tensor:
        """[D, L] the mutated moves."""
        kids = parents[self.parent].clone()
        kids[torch.arange(len(self), device=kids.device), self.position] = self.token
        return kids


def _top_admissible(scores: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `budget` largest finite entries of a 1-D tensor, descending; ties go to the lower index (deterministic,
    and independent of how the grid was chunked)."""
    k = min(budget, scores.numel())
    if k == 0:
        return scores[:0], torch.empty(0, dtype=torch.long, device=scores.device)
    kth = torch.topk(scores, k).values[-1]
    floor = kth if torch.isfinite(kth) else torch.tensor(float("-inf"), device=scores.device)
    index = torch.nonzero((scores >= floor) & torch.isfinite(scores)).squeeze(1)
    values = scores[index]
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return values[order], index[order]


def _merge_top(
    scores: torch.Tensor, index: torch.Tensor, more_scores: torch.Tensor, more_index: torch.Tensor, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running global top-`budget` over the grid's chunks: merge a chunk's best (`more_*`, flat grid indices) into
    the best so far; ties go to the lower grid index, whatever the chunking."""
    merged_scores, merged_index = torch.cat([scores, more_scores]), torch.cat([index, more_index])
    by_index = torch.argsort(merged_index)
    values, pos = _top_admissible(merged_scores[by_index], budget)
    return values, merged_index[by_index][pos]


def _rule_scores(
    rule: Rule,
    taylor: TaylorResult,
    flat_player: torch.Tensor | None,
    rows: slice,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """A fresh [R, V] float32 tensor of the rule's ranking score over a block of flattened (k, j) rows."""
    vocab = taylor.shape[2]
    if not rule.signals:
        return torch.rand(rows.stop - rows.start, vocab, generator=generator, device=taylor.moves.device)
    scores: torch.Tensor | None = None
    if "T" in rule.signals:
        scores = taylor.rows_gradient_term(rows)
    if "O" in rule.signals:
        if scores is None:
            scores = taylor.rows_own_term(rows)
        else:  # in place: scores += log P_J(v) - log P_J(y)
            own = taylor.rows_judge_logprobs(rows)
            scores.add_(own).sub_(own.gather(1, taylor.moves.reshape(-1, 1)[rows]))
    if "P" in rule.signals:
        assert flat_player is not None
        prior = flat_player[rows].float()
        scores = prior.clone() if scores is None else scores.add_(prior)
    assert scores is not None
    return scores


SPARSE_GATE_FRACTION = 0.05
"""Gated rules score only the admitted entries when the gate keeps at most this fraction of a chunk."""


def _rule_scores_sparse(
    rule: Rule,
    taylor: TaylorResult,
    flat_player: torch.Tensor,
    rows: slice,
    row_in_chunk: torch.Tensor,
    token: torch.Tensor,
) -> torch.Tensor:
    """The rule's ranking score at the listed (row, token) entries of a block of rows: [N] float32."""
    k, length, _ = taylor.shape
    parent_token = taylor.moves.reshape(-1)[rows]
    scores = torch.zeros(len(token), device=token.device)
    if "T" in rule.signals:
        if taylor.grad is None:
            raise ValueError("this TaylorResult was computed with with_grad=False; it has no gradient term")
        emb = taylor.embedding
        grad = taylor.grad.reshape(k * length, -1)[rows].float()  # float32, as the dense grid
        at_parent = (emb[parent_token].float() * grad).sum(-1)
        scores += (emb[token].float() * grad[row_in_chunk]).sum(-1) - at_parent[row_in_chunk]
    if "O" in rule.signals:
        own = taylor.rows_judge_logprobs(rows)
        scores += own[row_in_chunk, token] - own.gather(1, parent_token.view(-1, 1)).squeeze(1)[row_in_chunk]
    if "P" in rule.signals:
        scores += flat_player[rows][row_in_chunk, token].float()
    return scores


def select_candidates(
    rule: Rule | str,
    taylor: TaylorResult,
    player_logprobs: torch.Tensor | None,
    budget: int,
    *,
    tau: float = 1e-4,
    forbidden: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_chunk_bytes: int = 256 * 2**20,
    sparse_gate: bool = True,
    rank_by: str = "reward",
) -> Candidates:
    """The global top-`budget` (D) single-token mutations under `rule`.

    Rules that estimate rewards (T and/or O) rank by the estimated reward of the child, a(k, j, v) = R(y_k) + the
    estimated change (`rank_by="reward"`, Algorithm 1), or by the estimated change alone (`rank_by="lift"`).

    The [K*L, V] score grid is built in chunks of (k, j) rows so that it never holds more than `max_chunk_bytes`
    of scores at once; the result is the same as ranking the whole grid. Fewer than D candidates come back only when
    fewer are admissible. For gated rules whose gate keeps a small fraction of the grid (`sparse_gate`), only the
    admitted entries are scored: T from their embedding rows instead of the full [R, H] x [H, V] matmul.
    """
    rule = get_rule(rule) if isinstance(rule, str) else rule
    check_rank_by(rank_by)
    if budget < 0:
        raise ConfigError(f"frost.D must be >= 0, got {budget}")
    if rule.gated:
        check_tau(tau)
    k, length, vocab = taylor.shape
    device = taylor.moves.device
    if ("P" in rule.signals or rule.gated) and player_logprobs is None:
        raise ConfigError(f"rule {rule.name!r} needs the player's distributions (player_logprobs)")
    flat_moves = taylor.moves.reshape(-1, 1)
    flat_valid = taylor.valid.reshape(-1)
    add_reward = rule.estimates_reward and rank_by == "reward"
    row_rewards = taylor.rewards.float().repeat_interleave(length)  # R(y_k) of each flattened (k, j) row
    flat_player = player_logprobs.reshape(k * length, vocab) if player_logprobs is not None else None
    log_tau = math.log(tau)
    neg_inf = float("-inf")
    rows_per_chunk = max(1, max_chunk_bytes // (4 * vocab * 2))
    best_scores = torch.empty(0, device=device)
    best_index = torch.empty(0, dtype=torch.long, device=device)
    for start in range(0, k * length, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, k * length))
        tokens = flat_moves[rows]
        valid = flat_valid[rows]
        if rule.gated:
            assert flat_player is not None
            admitted = flat_player[rows] > log_tau
            admitted.scatter_(1, tokens, False)
            admitted &= valid.view(-1, 1)
            if forbidden is not None:
                admitted &= ~forbidden.to(device).view(1, -1)
            if sparse_gate and int(admitted.sum()) <= SPARSE_GATE_FRACTION * admitted.numel():
                # the gate keeps few entries (~0.6% on the embedded model): score only those
                row_in_chunk, token = admitted.nonzero(as_tuple=True)
                sparse = _rule_scores_sparse(rule, taylor, flat_player, rows, row_in_chunk, token)
                if add_reward:
                    sparse += row_rewards[rows][row_in_chunk]
                values, pos = _top_admissible(sparse, budget)
                flat_index = (row_in_chunk[pos] + rows.start) * vocab + token[pos]
                best_scores, best_index = _merge_top(best_scores, best_index, values, flat_index, budget)
                continue
        scores = _rule_scores(rule, taylor, flat_player, rows, generator)
        if add_reward:
            scores.add_(row_rewards[rows].view(-1, 1))
        # inadmissible entries go to -inf in place: the parent's own token, forbidden tokens, the gate
        scores.scatter_(1, tokens, neg_inf)
        scores.masked_fill_(~valid.view(-1, 1), neg_inf)
        if forbidden is not None:
            scores.masked_fill_(forbidden.to(device).view(1, -1), neg_inf)
        if rule.gated:
            scores.masked_fill_(~admitted, neg_inf)
        # row-wise top-D first (fast, parallel over rows), then the global top-D of the survivors
        take = min(budget, vocab)
        row_top = torch.topk(scores, take, dim=1)
        flat_index = (torch.arange(rows.start, rows.stop, device=device).view(-1, 1) * vocab + row_top.indices).view(-1)
        values, pos = _top_admissible(row_top.values.reshape(-1), budget)
        best_scores, best_index = _merge_top(best_scores, best_index, values, flat_index[pos], budget)
    row, token = best_index // vocab, best_index % vocab
    parent, position = row // length, row % length
    if add_reward:
        approx = best_scores.clone()
    elif rule.estimates_reward:
        approx = taylor.rewards[parent] + best_scores
    else:
        approx = torch.full_like(best_scores, float("nan"))
    return Candidates(parent=parent, position=position, token=token, score=best_scores, approx=approx)


@dataclass
class FrostRecord:
    """Everything one Frost proposal + replacement did, for training, diagnostics and logs."""

    rule: str
    parents: torch.Tensor
    """[K, L] the on-policy moves."""
    parent_rewards: torch.Tensor
    """[K] their exact rewards."""
    candidates: Candidates
    """The D proposed mutations."""
    child_rewards: torch.Tensor
    """[D] exact rewards of the children."""
    chosen: torch.Tensor
    """[K] index into the candidates of the child that replaced each parent, or -1."""
    moves: torch.Tensor
    """[K, L] the group after replacement (y*)."""
    rewards: torch.Tensor
    """[K] its exact rewards (r*)."""
    rescored: int = 0
    """Parents re-scored beside the children (`replace_many`'s `same_path`: K when the text had children, else 0)."""

    @property
    def hits(self) -> torch.Tensor:
        """[D] whether each child strictly beats its parent."""
        return self.child_rewards > self.parent_rewards[self.candidates.parent]

    @property
    def hit_rate(self) -> float:
        """Fraction of proposed children that strictly beat their parent (NaN when D = 0)."""
        return float(self.hits.float().mean()) if len(self.candidates) else float("nan")

    @property
    def mean_lift(self) -> float:
        """Mean of r~_d - r_k over the children that strictly beat their parent (NaN when none does)."""
        hits = self.hits
        if not bool(hits.any()):
            return float("nan")
        lift = self.child_rewards - self.parent_rewards[self.candidates.parent]
        return float(lift[hits].mean())

    @property
    def frac_replaced(self) -> float:
        """Fraction of parents replaced by a child."""
        return float((self.chosen >= 0).float().mean())

    @property
    def best_before(self) -> float:
        """The group's best exact reward before replacement."""
        return float(self.parent_rewards.max())

    @property
    def best_after(self) -> float:
        """The group's best exact reward after replacement (never lower)."""
        return float(self.rewards.max())

    def summary(self) -> dict[str, Any]:
        """Scalar metrics of this step."""
        return {
            "rule": self.rule,
            "D": len(self.candidates),
            "hit_rate": self.hit_rate,
            "mean_lift": self.mean_lift,
            "frac_replaced": self.frac_replaced,
            "best_before": self.best_before,
            "best_after": self.best_after,
        }


def replace_with_scores(
    parents: torch.Tensor,
    parent_rewards: torch.Tensor,
    candidates: Candidates,
    child_rewards: torch.Tensor,
    *,
    rule: str = "",
) -> FrostRecord:
    """Strict-improvement replacement given the children's exact rewards (Algorithm 1 line 7).

    Each parent is replaced by its best child when that child's reward is strictly higher; among equal best children
    the first in ranking order wins.
    """
    k = parents.shape[0]
    device = parents.device
    child_rewards = child_rewards.to(device=device, dtype=parent_rewards.dtype)
    best = torch.full((k,), float("-inf"), device=device, dtype=parent_rewards.dtype)
    best = best.scatter_reduce(0, candidates.parent, child_rewards, reduce="amax", include_self=True)
    accept = best > parent_rewards
    chosen = torch.full((k,), -1, dtype=torch.long, device=device)
    moves = parents.clone()
    rewards = parent_rewards.clone()
    if bool(accept.any()):
        is_best = (child_rewards == best[candidates.parent]) & accept[candidates.parent]
        order = torch.arange(len(candidates), device=device)
        first = torch.full((k,), len(candidates), dtype=torch.long, device=device)
        first = first.scatter_reduce(0, candidates.parent[is_best], order[is_best], reduce="amin", include_self=True)
        chosen = torch.where(accept, first, chosen)
        idx = chosen[accept]
        moves[accept] = candidates.children(parents)[idx]
        rewards[accept] = child_rewards[idx]
    return FrostRecord(
        rule=rule,
        parents=parents,
        parent_rewards=parent_rewards,
        candidates=candidates,
        child_rewards=child_rewards,
        chosen=chosen,
        moves=moves,
        rewards=rewards,
    )


def needs_same_path(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a parent must be re-scored beside its children before the strict comparison: when the judge's
    matmuls round, so that the Taylor pass (inputs_embeds, with gradients, one batch layout) and the children's pass
    (ids, another layout) can differ by more than a real improvement. True for bf16/fp16 judges, and for a float32
    judge on CUDA while TF32 matmuls are on (`frost.models` turns them on: about 1e-3 relative apart); False for
    float32 on the CPU and float64 (the two paths agree to ~1e-6)."""
    if dtype not in (torch.float32, torch.float64):
        return True
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return dtype == torch.float32 and torch.device(device).type == "cuda" and tf32


def replace_many(
    judge: Judge,
    items: list[tuple[GameInstance, torch.Tensor, torch.Tensor, Candidates]],
    *,
    rule: str = "",
    same_path: bool | None = None,
) -> list[FrostRecord]:
    """Score the candidates of every text exactly (one batched, deduplicated judge pass over all texts' children)
    and apply strict-improvement replacement; `items` are (instance, parents [K, L], parent rewards [K], candidates).

    With `same_path` (default: `needs_same_path`: bf16/fp16 judges, and float32 on CUDA with TF32) all K parents of a
    text that has a child are re-scored in the same pass as its children, so that the strict comparison and the
    group's rewards (hence its advantages) come from one numeric path: the parents' rewards from the Taylor pass go
    through `inputs_embeds` with gradients, and in bf16 two kernels can differ by 0.01-0.1 nats, which would let a
    child "beat" its parent by noise. A child identical to its parent is then the same deduplicated row and can never
    replace it. A text without children keeps its Taylor-pass rewards (again one path for the whole group). The
    re-scored rows are judge forward sequences like any other (`Judge.forward_sequences`: up to K more per text), and
    `FrostRecord.rescored` counts them.
    """
    if same_path is None:
        same_path = needs_same_path(judge.dtype, judge.device)
    queries: list[tuple[GameInstance, torch.Tensor]] = []
    owners: list[int] = []
    for n, (inst, parents, _, cands) in enumerate(items):
        if len(cands):
            moves = cands.children(parents)
            if same_path:
                moves = torch.cat([moves, parents])
            queries.append((inst, moves))
            owners.append(n)
    scored = dict(zip(owners, judge.rewards_many(queries), strict=True)) if queries else {}
    records = []
    for n, (_, parents, parent_rewards, cands) in enumerate(items):
        rewards = scored.get(n)
        if rewards is None:
            child_rewards = torch.empty(0, device=parents.device)
        else:
            child_rewards = rewards[: len(cands)]
            if same_path:
                parent_rewards = rewards[len(cands) :].to(parent_rewards.dtype)
        record = replace_with_scores(parents, parent_rewards, cands, child_rewards, rule=rule)
        record.rescored = parents.shape[0] if same_path and rewards is not None else 0
        records.append(record)
    return records


def replace(
    judge: Judge,
    inst: GameInstance,
    parents: torch.Tensor,
    parent_rewards: torch.Tensor,
    candidates: Candidates,
    *,
    rule: str = "",
    same_path: bool | None = None,
) -> FrostRecord:
    """Score the candidates of one text exactly and apply strict-improvement replacement (`replace_many`)."""
    return replace_many(judge, [(inst, parents, parent_rewards, candidates)], rule=rule, same_path=same_path)[0]


@dataclass
class FrostInput:
    """One text's input to a Frost step."""

    inst: GameInstance
    parents: torch.Tensor
    """[K, L] the on-policy moves."""
    player_logprobs: torch.Tensor | None
    """[K, L, V] the distributions they were sampled from (the gate and the prior); None for rules without them."""
    forbidden: torch.Tensor | None = None
    """[V] tokens a move may not contain (`frost.moves.move_masks(inst, ...).content`)."""


def frost_step_batch(
    judge: Judge,
    texts: list[FrostInput],
    *,
    rule: str = "taylor-gated",
    budget: int = 8,
    tau: float = 1e-4,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    rank_by: str = "reward",
    timer: PhaseTimer | None = None,
    same_path: bool | None = None,
) -> list[FrostRecord]:
    """Algorithm 1 lines 3-7 for the B texts of a step: one judge pass over every text's parents (backward only
    when the rule uses the gradient), selection of D candidates per text, one exact scoring pass over all children,
    strict-improvement replacement (`replace_many`). Charges the phases `judge_pass`, `select` and `children`.
    `generator` (the random rule's) is one for all texts or one per text."""
    timer = timer or NoTimer()
    gens = list(generator) if isinstance(generator, Sequence) else [generator] * len(texts)
    spec = get_rule(rule)
    with timer.phase("judge_pass"):
        taylors = judge.taylor_many([(t.inst, t.parents) for t in texts], with_grad=spec.needs_gradient)
    with timer.phase("select"):
        candidates = [
            select_candidates(
                spec,
                taylor,
                t.player_logprobs,
                budget,
                tau=tau,
                forbidden=t.forbidden,
                generator=gen,
                rank_by=rank_by,
            )
            for t, taylor, gen in zip(texts, taylors, gens, strict=True)
        ]
    with timer.phase("children"):
        items = [(t.inst, tr.moves, tr.rewards, c) for t, tr, c in zip(texts, taylors, candidates, strict=True)]
        return replace_many(judge, items, rule=spec.name, same_path=same_path)


def frost_step(
    judge: Judge,
    inst: GameInstance,
    parents: torch.Tensor,
    player_logprobs: torch.Tensor | None,
    *,
    rule: str = "taylor-gated",
    budget: int = 8,
    tau: float = 1e-4,
    forbidden: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    rank_by: str = "reward",
    timer: PhaseTimer | None = None,
    same_path: bool | None = None,
) -> FrostRecord:
    """Algorithm 1 lines 3-7 for one prompt (`frost_step_batch` with one text): one judge pass, selection of D
    candidates, exact scoring, strict-improvement replacement."""
    text = FrostInput(inst, parents, player_logprobs, forbidden)
    return frost_step_batch(
        judge, [text], rule=rule, budget=budget, tau=tau, generator=generator, rank_by=rank_by, timer=timer,
        same_path=same_path,
    )[0]  # fmt: skip
