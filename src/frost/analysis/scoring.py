"""The researcher's lens on one move: its reward, the judge's per-token log-probabilities, and its best single-token
edits ranked by the Taylor score, each with its approximate and its exact score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from frost.errors import ConfigError
from frost.games import GameInstance
from frost.judge import Judge
from frost.moves import move_masks
from frost.proposal import check_tau, select_candidates
from frost.rules import estimating_rule, get_rule
from frost.sampling import player_logprobs


@dataclass
class Edit:
    """One single-token edit of a move."""

    position: int
    token_id: int
    token: str
    approx: float
    """The Taylor estimate of the edited move's reward."""
    exact: float
    """Its exact reward, recomputed by the judge."""


@dataclass
class ScoredToken:
    """One token the judge scores."""

    position: int
    """Index in the judge's sequence."""
    token_id: int
    part: str
    """before (the judge's tokens before the move), move, or after."""
    logprob: float


@dataclass
class MoveReport:
    """What `frost score` prints."""

    reward: float
    rule: str
    """The rule whose estimate ranked the edits."""
    sign: int
    judge_ids: list[int]
    """The judge's whole sequence for this move."""
    move_ids: list[int]
    tokens: list[ScoredToken]
    """The scored tokens, in judge order, with their log-probabilities."""
    edits: list[Edit] = field(default_factory=list)

    @property
    def token_logprobs(self) -> list[float]:
        """Judge log-probabilities of the scored tokens, in judge order."""
        return [t.logprob for t in self.tokens]

    def to_json(self) -> dict[str, Any]:
        """The report as `frost score --json` prints it."""
        return {
            "reward": self.reward,
            "rule": self.rule,
            "sign": self.sign,
            "judge_ids": self.judge_ids,
            "move_ids": self.move_ids,
            "tokens": [vars(t) for t in self.tokens],
            "edits": [vars(e) for e in self.edits],
        }


def score_move(
    judge: Judge,
    tokenizer: Any,
    inst: GameInstance,
    move_ids: list[int],
    *,
    rule: str = "taylor",
    top: int = 20,
    tau: float | None = None,
    player: Any = None,
    forbidden: torch.Tensor | None = None,
) -> MoveReport:
    """Score `move_ids` and its `top` best single-token edits, ranked by `rule`'s estimate of their reward (a rule
    that estimates rewards: taylor, full, judge-gated, ...; v != y_j, no forbidden tokens).

    A gated rule, or any rule given `tau`, ranks only edits whose token the player (`player`, default the judge's
    model) gives probability > tau (default 1e-4) at that position, as in Frost's gate.
    """
    chosen = estimating_rule(rule)
    if chosen.gated or tau is not None:
        tau = 1e-4 if tau is None else tau
        chosen = get_rule(chosen.name if chosen.gated else f"{chosen.name}-gated")
    if not move_ids:
        raise ConfigError("move: the move is empty; give --move text or --move-ids")
    row = inst.pad_move(move_ids)
    masks = move_masks(
        inst, forbidden if forbidden is not None else torch.zeros(judge.embedding.shape[0], dtype=torch.bool)
    )
    if top < 0:
        raise ConfigError(f"--top must be >= 0, got {top}")
    if tau is not None:
        check_tau(tau)
    moves = torch.tensor([row], dtype=torch.long)
    taylor = judge.taylor(inst, moves)
    gate_logprobs = None
    if tau is not None:
        gate_logprobs = player_logprobs(player or judge.model, inst.prompt_ids, taylor.moves, forbidden=masks.sampling)
    cands = select_candidates(chosen.name, taylor, gate_logprobs, top, tau=tau or 1e-4, forbidden=masks.content)
    exact = judge.rewards(inst, cands.children(taylor.moves)).tolist() if len(cands) else []
    edits = [
        Edit(position=int(p), token_id=int(v), token=tokenizer.decode([int(v)]), approx=float(a), exact=float(e))
        for p, v, a, e in zip(cands.position.tolist(), cands.token.tolist(), cands.approx.tolist(), exact, strict=True)
    ]
    ids = inst.judge_ids(row)
    n = inst.content_length(row) + int(inst.judge_sees_stop)
    first = Judge.first_target(inst)
    lps = taylor.scores.logprobs[0].tolist()
    tokens = []
    for pos in inst.scored_positions(inst.content_length(row)):
        part = "before" if pos < inst.move_start else "move" if pos < inst.move_start + n else "after"
        tokens.append(ScoredToken(position=pos, token_id=ids[pos], part=part, logprob=lps[pos - first]))
    return MoveReport(
        reward=float(taylor.rewards[0]),
        rule=chosen.name,
        sign=inst.sign,
        judge_ids=ids,
        move_ids=list(move_ids),
        tokens=tokens,
        edits=edits,
    )


def format_report(report: MoveReport, tokenizer: Any) -> str:
    """Human-readable text of a `MoveReport`."""
    sign = "" if report.sign == 1 else "   (sign -1: the reward is minus the scored log-likelihood)"
    lines = [f"reward: {report.reward:.3f} nats   (edits ranked by rule {report.rule}){sign}", ""]
    lines.append("judge log-probs of the scored tokens (part, position in the judge's sequence):")
    for t in report.tokens:
        lines.append(
            f"  {t.part:6} {t.position:4d}  {t.token_id:7d}  {tokenizer.decode([t.token_id])!r:24}  {t.logprob:9.3f}"
        )
    lines += ["", f"top {len(report.edits)} single-token edits by Taylor score:"]
    lines.append("  pos  token_id  token                       approx     exact   exact-reward")
    for e in report.edits:
        lines.append(
            f"  {e.position:3d}  {e.token_id:8d}  {e.token!r:24}  {e.approx:9.3f} {e.exact:9.3f}"
            f"  {e.exact - report.reward:+9.3f}"
        )
    return "\n".join(lines)
