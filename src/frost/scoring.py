"""The researcher's lens on one move: its reward, the judge's per-token log-probabilities, and its best single-token
edits ranked by the Taylor score, each with its approximate and its exact score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from frost.errors import ConfigError
from frost.frost import check_tau, select_candidates
from frost.games import GameInstance
from frost.judge import Judge, check_mode
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
class MoveReport:
    """What `frost score` prints."""

    reward: float
    mode: str
    begin_ids: list[int]
    move_ids: list[int]
    end_ids: list[int]
    token_logprobs: list[float]
    """Judge log-probabilities of the scored tokens: the move's, then the end's."""
    edits: list[Edit] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "mode": self.mode,
            "begin_ids": self.begin_ids,
            "move_ids": self.move_ids,
            "end_ids": self.end_ids,
            "token_logprobs": self.token_logprobs,
            "edits": [vars(e) for e in self.edits],
        }


def score_move(
    judge: Judge,
    tokenizer: Any,
    inst: GameInstance,
    move_ids: list[int],
    *,
    mode: str = "first-order",
    top: int = 20,
    tau: float | None = None,
    player: Any = None,
    forbidden: torch.Tensor | None = None,
) -> MoveReport:
    """Score `move_ids` and its `top` best single-token edits (by Taylor score, v != y_j, no forbidden tokens).

    With `tau`, only edits whose token the player (`player`, default the judge's model) gives probability > tau at
    that position are ranked, as in Frost's gate.
    """
    check_mode(mode)
    if not move_ids:
        raise ConfigError("move: the move is empty; give --move text or --move-ids")
    if top < 0:
        raise ConfigError(f"--top must be >= 0, got {top}")
    if tau is not None:
        check_tau(tau)
    moves = torch.tensor([move_ids], dtype=torch.long)
    taylor = judge.taylor(inst, moves)
    gate_logprobs = None
    if tau is not None:
        gate_logprobs = player_logprobs(player or judge.model, inst.prompt_ids, taylor.moves, forbidden=forbidden)
    rule = ("full" if mode == "full" else "taylor") + ("-gated" if tau is not None else "")
    cands = select_candidates(rule, taylor, gate_logprobs, top, tau=tau or 1e-4, forbidden=forbidden)
    exact = judge.rewards(inst, cands.children(taylor.moves)).tolist() if len(cands) else []
    edits = [
        Edit(position=int(p), token_id=int(v), token=tokenizer.decode([int(v)]), approx=float(a), exact=float(e))
        for p, v, a, e in zip(cands.position.tolist(), cands.token.tolist(), cands.approx.tolist(), exact, strict=True)
    ]
    bos = len(inst.judge_prefix) - len(inst.meta.get("begin_ids", inst.judge_prefix))
    return MoveReport(
        reward=float(taylor.rewards[0]),
        mode=mode,
        begin_ids=list(inst.judge_prefix[bos:]),
        move_ids=list(move_ids),
        end_ids=list(inst.judge_suffix),
        token_logprobs=taylor.token_logprobs[0].tolist(),
        edits=edits,
    )


def format_report(report: MoveReport, tokenizer: Any) -> str:
    """Human-readable text of a `MoveReport`."""
    lines = [f"reward: {report.reward:.3f} nats   (mode: {report.mode})", ""]
    lines.append("judge log-probs of the scored tokens (move, then end):")
    scored = report.move_ids + report.end_ids
    for i, (tok, lp) in enumerate(zip(scored, report.token_logprobs, strict=True)):
        part = "move" if i < len(report.move_ids) else "end "
        lines.append(f"  {part} {i:3d}  {tok:7d}  {tokenizer.decode([tok])!r:24}  {lp:9.3f}")
    lines += ["", f"top {len(report.edits)} single-token edits by Taylor score:"]
    lines.append("  pos  token_id  token                       approx     exact   exact-reward")
    for e in report.edits:
        lines.append(
            f"  {e.position:3d}  {e.token_id:8d}  {e.token!r:24}  {e.approx:9.3f} {e.exact:9.3f}"
            f"  {e.exact - report.reward:+9.3f}"
        )
    return "\n".join(lines)
