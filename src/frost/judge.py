"""The judge: exact rewards of moves, and the one-backward Taylor scores of all their single-token mutations.

For a move y_k of L tokens, write g_kj = dR/dE[y_k[j]], the gradient of the reward with respect to the input
embedding of its j-th token, with the judge's weights frozen. The first-order (GCG / HotFlip) estimate of the reward
after setting token j to v is (§2.1, Eq. 2)

    a(k, j, v) = R(y_k) + (E[v] - E[y_k[j]]) . g_kj.

The gradient cannot see the judge's own log-probability of the token at position j (it depends on the token's
*index*, not on its input embedding), so the `full` mode adds its exact change, free from the same forward (Eq. 1):

    a_full(k, j, v) = a(k, j, v) + log P_J(v | prefix, y<j) - log P_J(y_k[j] | prefix, y<j)

(the last two terms only when the move itself is scored).

One forward and one backward over the K parents give their exact rewards, every g_kj and every position term.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from frost.errors import ConfigError
from frost.games import GameInstance
from frost.models import causal_lm_logits

TaylorMode = Literal["first-order", "full"]
TAYLOR_MODES: tuple[str, ...] = ("first-order", "full")


def check_mode(mode: str) -> TaylorMode:
    """Validate a Taylor mode name."""
    if mode not in TAYLOR_MODES:
        raise ConfigError(f"mode must be one of {', '.join(TAYLOR_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def gradient_term(grad_rows: torch.Tensor, tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """T = (E[v] - E[y]) . g for a block of rows: `grad_rows` [R, H], `tokens` [R] -> [R, V] in float32.

    One matmul against the embedding matrix; the v = y entry is exactly zero (it is subtracted from the same product).
    """
    dots = (grad_rows.to(embedding.dtype) @ embedding.T).float()
    return dots.sub_(dots.gather(1, tokens.view(-1, 1)))


def own_term(logprob_rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """O = log P_J(v | ...) - log P_J(y | ...) for a block of rows: [R, V], [R] -> [R, V]."""
    rows = logprob_rows.float()
    return rows - rows.gather(1, tokens.view(-1, 1))


@dataclass
class TaylorResult:
    """What one judge forward+backward over K parent moves gives."""

    moves: torch.Tensor
    """[K, L] the parents' token ids."""
    rewards: torch.Tensor
    """[K] exact rewards R(y_k), float32."""
    token_logprobs: torch.Tensor
    """[K, n_scored] the judge's log-probabilities of the scored tokens (move then suffix), float32."""
    grad: torch.Tensor | None
    """[K, L, H] g_kj = dR/dE[y_k[j]], float32; None when the pass ran without a backward."""
    judge_logprobs: torch.Tensor
    """[K, L, V] log P_J(v | prefix, y_k[<j]) over the whole vocabulary, float32."""
    embedding: torch.Tensor
    """[V, H] the judge's input embedding matrix (a reference, not a copy)."""
    move_scored: bool
    """Whether the move's own tokens count in the reward (then the `full` mode adds the position term)."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(K, L, V) of the mutation grid."""
        k, length = self.moves.shape
        return k, length, self.embedding.shape[0]

    def rows_gradient_term(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """T over flattened (k, j) rows `rows` (indices into K*L, or a slice of them): [R, V], a fresh tensor."""
        k, length, _ = self.shape
        if self.grad is None:
            raise ValueError("this TaylorResult was computed with with_grad=False; it has no gradient term")
        grad = self.grad.reshape(k * length, -1)[rows]
        return gradient_term(grad, self.moves.reshape(-1)[rows], self.embedding)

    def rows_judge_logprobs(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """log P_J(v | prefix, y<j) over flattened (k, j) rows: [R, V] (a view for a slice); zero when the move is
        not scored, so that the position term vanishes."""
        k, length, v = self.shape
        flat = self.judge_logprobs.reshape(k * length, v)[rows]
        return flat if self.move_scored else torch.zeros_like(flat)

    def rows_own_term(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """O over flattened (k, j) rows: [R, V], a fresh tensor; zero when the move is not scored."""
        return own_term(self.rows_judge_logprobs(rows), self.moves.reshape(-1)[rows])

    def approx(self, mode: str = "first-order") -> torch.Tensor:
        """a(k, j, v) for every parent, position and token: [K, L, V] (materialises the whole grid)."""
        check_mode(mode)
        k, length, v = self.shape
        rows = torch.arange(k * length, device=self.moves.device)
        grid = self.rows_gradient_term(rows)
        if mode == "full":
            grid = grid + self.rows_own_term(rows)
        return grid.view(k, length, v) + self.rewards.view(k, 1, 1)


class Judge:
    """A frozen causal LM that scores moves of a Cross-Entropy Game exactly, from token ids.

    `context` is entered around every judge pass; when the judge shares weights with a LoRA player it is the
    adapter-disabling context, so no second copy of the base model is needed.
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 16,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"judge.batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self._context = context or contextlib.nullcontext
        self.forward_sequences = 0
        """Sequences passed forward so far (compute accounting)."""
        self.backward_sequences = 0
        """Sequences passed backward so far."""

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def embedding(self) -> torch.Tensor:
        """The effective input embedding matrix [V, H]: what the model adds to its residual stream for each token.

        Models whose embedding layer scales its output (Gemma's `embed_scale`) get the scaled table, so that
        `(E[v] - E[y]) . g` is the first-order change for gradients taken at the embedding layer's output.
        """
        layer = self.model.get_input_embeddings()
        scale = getattr(layer, "embed_scale", None)
        weight = layer.weight
        return weight if scale is None else weight * scale.to(weight.dtype)

    def _layout(self, inst: GameInstance) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        """(prefix ids, suffix ids, first target index, scored-target mask over targets first..S-1)."""
        dev = self.device
        prefix = torch.tensor(inst.judge_prefix, dtype=torch.long, device=dev)
        suffix = torch.tensor(inst.judge_suffix, dtype=torch.long, device=dev)
        scored = inst.scored_positions()
        if not scored:
            raise ConfigError("game instance scores no token: score the move or a span of the suffix")
        first = min(scored[0], inst.move_start) if inst.move_start > 0 else scored[0]
        if first < 1:
            raise ConfigError("game instance: the first scored token has no judge context; add a judge prefix (BOS)")
        mask = torch.zeros(inst.judge_length - first, dtype=torch.bool, device=dev)
        mask[torch.tensor(scored, device=dev) - first] = True
        return prefix, suffix, first, mask

    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        with self._context():
            yield

    def _target_logprobs(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log-softmax of `logits` [N, T, V] at `targets` [N, T], float32, without a [N, T, V] log-softmax copy."""
        logits = logits.float()
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    def token_logprobs(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        """[N, n_scored] judge log-probabilities of the scored tokens of each move (deduplicated, batched)."""
        moves = self._check_moves(inst, moves)
        unique, inverse = torch.unique(moves, dim=0, return_inverse=True)
        prefix, suffix, first, mask = self._layout(inst)
        keep = inst.judge_length - first + 1
        out = []
        with torch.inference_mode(), self._eval():
            for chunk in unique.split(self.batch_size):
                n = chunk.shape[0]
                ids = torch.cat([prefix.expand(n, -1), chunk, suffix.expand(n, -1)], dim=1)
                logits = causal_lm_logits(self.model, input_ids=ids, keep=keep)[:, :-1]
                out.append(self._target_logprobs(logits, ids[:, first:])[:, mask])
                self.forward_sequences += n
        return torch.cat(out)[inverse].clone()

    def rewards(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        """[N] exact rewards (nats) of moves [N, L]; identical moves are scored once."""
        return self.token_logprobs(inst, moves).sum(-1)

    def taylor(self, inst: GameInstance, moves: torch.Tensor, *, with_grad: bool = True) -> TaylorResult:
        """One forward+backward over the parents: rewards, gradients to the move embeddings, position terms.

        With `with_grad=False` only the forward runs (rules that do not use the gradient term need no backward).
        """
        moves = self._check_moves(inst, moves)
        prefix, suffix, first, mask = self._layout(inst)
        keep = inst.judge_length - first + 1
        emb_layer = self.model.get_input_embeddings()
        move_rows = slice(inst.move_start - first, inst.move_start - first + inst.move_length)
        rewards: list[torch.Tensor] = []
        token_lps: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        judge_lps: list[torch.Tensor] = []
        with self._eval():
            for chunk in moves.split(self.batch_size):
                n = chunk.shape[0]
                with torch.no_grad():
                    before = emb_layer(prefix).expand(n, -1, -1)
                    after = emb_layer(suffix).expand(n, -1, -1)
                move_emb = emb_layer(chunk).detach().requires_grad_(with_grad)
                with torch.set_grad_enabled(with_grad):
                    embeds = torch.cat([before, move_emb, after], dim=1)
                    logits = causal_lm_logits(self.model, inputs_embeds=embeds, keep=keep)[:, :-1]
                ids = torch.cat([prefix.expand(n, -1), chunk, suffix.expand(n, -1)], dim=1)
                targets = ids[:, first:].unsqueeze(-1)
                with torch.no_grad():
                    full = logits.detach().float()
                    lps = self._target_logprobs(full, targets.squeeze(-1))
                    reward = (lps * mask).sum(-1)
                if with_grad:
                    # d reward / d logits = mask * (one_hot(target) - softmax): one fused softmax instead of autograd's
                    # much slower trip back through logsumexp over the [n, T, V] logits
                    with torch.no_grad():
                        dlogits = torch.softmax(full, dim=-1).neg_()
                        dlogits.scatter_add_(-1, targets, torch.ones_like(targets, dtype=dlogits.dtype))
                        dlogits.mul_(mask.view(1, -1, 1))
                    (grad,) = torch.autograd.grad(logits, move_emb, grad_outputs=dlogits.to(logits.dtype))
                    grads.append(grad.float())
                    self.backward_sequences += n
                with torch.no_grad():
                    if inst.move_start > 0:
                        judge_lps.append(torch.log_softmax(full[:, move_rows], dim=-1))
                    else:  # nothing predicts the first move token; no position term
                        judge_lps.append(torch.zeros(n, inst.move_length, logits.shape[-1], device=logits.device))
                rewards.append(reward.detach())
                token_lps.append(lps.detach()[:, mask])
                self.forward_sequences += n
        return TaylorResult(
            moves=moves,
            rewards=torch.cat(rewards),
            token_logprobs=torch.cat(token_lps),
            grad=torch.cat(grads) if with_grad else None,
            judge_logprobs=torch.cat(judge_lps),
            embedding=self.embedding.detach(),
            move_scored=inst.score_move,
        )

    def _check_moves(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        moves = torch.as_tensor(moves, dtype=torch.long, device=self.device)
        if moves.dim() == 1:
            moves = moves.unsqueeze(0)
        if moves.dim() != 2 or moves.shape[1] != inst.move_length or moves.shape[0] == 0:
            raise ConfigError(f"moves must be [N, {inst.move_length}] token ids; got shape {tuple(moves.shape)}")
        vocab = self.embedding.shape[0]
        if int(moves.min()) < 0 or int(moves.max()) >= vocab:
            raise ConfigError(f"move token ids must lie in [0, {vocab}); got {int(moves.min())}..{int(moves.max())}")
        return moves
