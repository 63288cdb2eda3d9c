"""The training loop: GRPO and Frost-GRPO (Algorithm 1, §3.4), validation, compute accounting, checkpoints, resume.

One step takes B texts (`frost.step`, all texts batched in every phase, `train.micro_batch` at a time): sample K
moves per text from one prefill of the prompts (keeping the player's distributions); GRPO scores them with one judge
forward; Frost runs one judge forward+backward, proposes D children per text with the selection rule, scores them
exactly and replaces parents by strictly better children. The GRPO loss of the (replaced) groups is back-propagated
into the LoRA adapter; then one AdamW step.

The judge and the KL reference are the frozen base model. When the judge is the player's base, they are the same
weights with the adapter switched off: no second copy is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from frost.config import Config
from frost.errors import FrostError
from frost.games import GameInstance, spec_to_yaml
from frost.models import LoadedModel
from frost.phases import PhaseTimer
from frost.run import checkpoint, distributed, runlog
from frost.run.build import build_run
from frost.run.evaluation import score_samples, summary_of
from frost.run.folder import prepare_run_dir
from frost.run.metrics import GroupSummary, StepCounts, group_summary, phase_metrics, step_metrics
from frost.run.reporting import MetricsReporter
from frost.run.signals import StopSignals
from frost.sampling import SampledMoves
from frost.step import (
    Generators,
    GroupRecord,
    play_step,
    step_loss,
)


@dataclass
class DataCursor:
    """Position in the seed-shuffled training order; every epoch is reshuffled with seed + epoch."""

    size: int
    seed: int
    epoch: int = 0
    index: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._shuffle()

    def _shuffle(self) -> None:
        self._order = list(range(self.size))
        random.Random(self.seed * 7919 + self.epoch).shuffle(self._order)

    def take(self, n: int) -> list[int]:
        """The next `n` training indices, reshuffled at each epoch's end."""
        out = []
        for _ in range(n):
            if self.index >= self.size:
                self.epoch, self.index = self.epoch + 1, 0
                self._shuffle()
            out.append(self._order[self.index])
            self.index += 1
        return out

    def state(self) -> dict[str, int]:
        """Where the cursor stands (a checkpoint stores it)."""
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict[str, int]) -> None:
        """Continue from a stored `state()` (the epoch's order is rebuilt from the seed)."""
        self.epoch, self.index = state["epoch"], state["index"]
        self._shuffle()


@dataclass
class RankPlay:
    """What one rank played in a step (gathered from every rank)."""

    groups: list[GroupSummary]
    judge_fwd_seqs: int
    judge_bwd_seqs: int

    def same(self, other: RankPlay) -> bool:
        """Whether two ranks of one FSDP group played their step alike: the same judge work, move lengths and
        rewards (within 1e-2 nats: the same moves, up to kernel rounding)."""
        mine, theirs = (self.judge_fwd_seqs, self.judge_bwd_seqs), (other.judge_fwd_seqs, other.judge_bwd_seqs)
        if mine != theirs or len(self.groups) != len(other.groups):
            return False
        for x, y in zip(self.groups, other.groups, strict=True):
            if x.lengths != y.lengths or len(x.rewards) != len(y.rewards):
                return False
            if any(not math.isclose(r, q, abs_tol=1e-2) for r, q in zip(x.rewards, y.rewards, strict=True)):
                return False
        return True


class TrainingError(FrostError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""


class Trainer:
    """GRPO / Frost-GRPO on any Cross-Entropy Game. `run()` trains to `config.train.steps`."""

    def __init__(
        self, config: Config, *, resume: bool = False, overwrite: bool = False, base: LoadedModel | None = None
    ) -> None:
        self.config = config.validate()
        t = config.train
        self.world = distributed.init_world(config.model.device, shard_size=config.model.fsdp_shards)
        self.run_dir = Path(t.run_dir)
        if self.world.is_main:
            prepare_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        distributed.barrier(self.world)
        torch.manual_seed(t.seed)
        run = build_run(config, self.world, base=base)
        self.device, self.tokenizer, self.player, self.judge = run.device, run.tokenizer, run.player, run.judge
        self.agreement, self.game, self.forbidden = run.agreement, run.game, run.forbidden
        self.train_set, self.validation, self.optimizer = run.train_set, run.validation, run.optimizer
        self.settings, self.sampler, self._fsdp_bytes = run.settings, run.sampler, run.fsdp_bytes
        self.cursor = DataCursor(len(self.train_set), t.seed)
        self.step = 0
        self.skipped_steps = 0
        """Steps skipped because something was not finite (logged as `train/skipped_steps`)."""
        self.skipped_in_a_row = 0
        self.num_tokens = 0
        """Tokens through the player and the judge since the run began (TRL's `num_tokens`)."""
        self.resumed = resume
        """Whether the run continues from a checkpoint (whose step's validation, when due, is already logged)."""
        self._signals = StopSignals()
        self._reporter = MetricsReporter(
            self.run_dir, main=self.world.is_main, report_to=t.report_to, config=config.to_dict()
        )
        if resume:
            self.load_checkpoint()
        elif self.world.is_main:
            (self.run_dir / "config.yaml").write_text(config.to_yaml())
            (self.run_dir / "game.yaml").write_text(spec_to_yaml(self.game.spec))
        distributed.barrier(self.world)

    # ------------------------------------------------------------------------------------------------ one step
    def _generators(self, indices: list[int], stream: str) -> list[torch.Generator]:
        """One generator per text, seeded from (seed, step, text index): the same on any rank and in any batch."""
        seed, step = self.config.train.seed, self.step
        return [
            torch.Generator(device=self.device).manual_seed(distributed.text_seed(seed, step, i, stream))
            for i in indices
        ]

    def _sample(self, insts: list[GameInstance], k: int, generator: Generators) -> list[SampledMoves]:
        """K on-policy moves per text from the current player, with their sampling distributions."""
        from frost.moves import move_masks

        masks = [move_masks(inst, self.forbidden) for inst in insts]
        return self.sampler(self.player, insts, k, masks, self.config.train.temperature, generator)

    def clock(self) -> float:
        """Wall time in seconds, after the device's queued work has finished (phase timings on GPU)."""
        return PhaseTimer(self.device).clock()

    def train_groups(self, indices: list[int], timer: PhaseTimer) -> list[GroupRecord]:
        """The groups of the training texts `indices`: `step.play_step` then the first update's `step.step_loss`
        (the gradient is accumulated, scaled by 1/B of the whole step's B)."""
        records = play_step(
            self.player, self.judge, [self.train_set[i] for i in indices], self.settings,
            base_forbidden=self.forbidden, generator=self._generators(indices, "train"), timer=timer,
            sampler=self.sampler,
        )  # fmt: skip
        self.update_loss(records, timer)
        return records

    def update_loss(self, records: list[GroupRecord], timer: PhaseTimer) -> None:
        """One update's loss of the groups `records` (`step.step_loss`), its gradient accumulated, scaled by 1/B."""
        step_loss(
            self.player, records, self.settings, reference=self.player.disable_adapter,
            scale=1.0 / self.config.train.batch_size, timer=timer, on_backoff=self._lower_text_batch,
        )  # fmt: skip

    def _lower_text_batch(self, texts: int) -> None:
        """After the loss ran out of memory: every phase of every later step runs `texts` texts at a time."""
        self.settings = dataclasses.replace(self.settings, text_batch=texts)

    def _optimizer_update(self, finite_groups: bool) -> tuple[float, bool]:
        """Sum the gradients over the ranks, clip, and step AdamW when the gradient and `finite_groups` are finite
        (one NaN would corrupt the adapter and AdamW's moments for good); zero the gradients. Returns the gradient
        norm and whether the step was taken."""
        params = [p for p in self.player.parameters() if p.requires_grad]
        distributed.all_reduce_gradients(params, self.world)
        max_norm = self.config.optim.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
        finite = math.isfinite(float(grad_norm)) and finite_groups
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), finite

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over B texts (this rank's shard of them; the LoRA gradients summed over the ranks);
        returns its metrics, over all B texts."""
        t = self.config.train
        timer = PhaseTimer(self.device)
        start = timer.clock()
        fwd0, bwd0 = self.judge.forward_sequences, self.judge.backward_sequences
        indices = self.cursor.take(t.batch_size)
        mine = indices[distributed.shard(len(indices), self.world)]
        groups = self.train_groups(mine, timer) if mine else []
        local = RankPlay(
            [group_summary(g) for g in groups],
            self.judge.forward_sequences - fwd0,
            self.judge.backward_sequences - bwd0,
        )
        gathered = distributed.gather(local, self.world, agree=RankPlay.same)
        summaries = [g for part in gathered for g in part.groups]
        with timer.phase("optim"):
            grad_norm, finite = self._optimizer_update(all(g.finite for g in summaries))
        for _ in range(1, t.epochs if finite else 1):  # ppo-clip's further updates on the same groups
            self.update_loss(groups, timer)
            with timer.phase("optim"):
                finite = self._optimizer_update(True)[1]  # the gradient norm is over every rank's groups
            if not finite:  # the updates taken stay; the rest of this step's are dropped
                break
        if finite:
            self.skipped_in_a_row = 0
        else:
            self.skipped_steps += 1
            self.skipped_in_a_row += 1
        self.step += 1
        clip_fracs = passes = None
        if t.loss == "ppo-clip":
            clip_fracs = [f for part in distributed.gather([g.clip_fracs for g in groups], self.world) for f in part]
        if t.epochs > 1:  # the player passes of the further updates, counted again from every group
            mine_counts = (sum(g.player_fwd_seqs for g in groups), sum(g.player_bwd_seqs for g in groups),
                           sum(g.tokens for g in groups))  # fmt: skip
            every = distributed.gather(mine_counts, self.world)
            passes = (sum(c[0] for c in every), sum(c[1] for c in every), sum(c[2] for c in every))
        fsdp = None if self._fsdp_bytes is None else (self.world.shard_size, *self._fsdp_bytes)
        counts = StepCounts(
            judge_fwd_seqs=sum(part.judge_fwd_seqs for part in gathered),
            judge_bwd_seqs=sum(part.judge_bwd_seqs for part in gathered),
            grad_norm=float(grad_norm), lr=self.optimizer.param_groups[0]["lr"], skipped_steps=self.skipped_steps,
            clip_fracs=clip_fracs, player_passes=passes, world_size=self.world.size if self.world.active else None,
            fsdp=fsdp, tokens_before=self.num_tokens,
        )  # fmt: skip
        metrics = step_metrics(
            self.step, summaries, counts, frost=t.algorithm == "frost", rounds=self.config.frost.rounds
        )
        self.num_tokens = metrics["num_tokens"]
        metrics.update(phase_metrics(timer, timer.clock() - start))
        return metrics

    # ---------------------------------------------------------------------------------------------- validation
    def validate(self) -> dict[str, Any]:
        """Sample `val_samples` moves per validation text under the current player and score them exactly
        (`frost.run.evaluation.score_samples`)."""
        t = self.config.train
        mine = list(range(len(self.validation)))[distributed.shard(len(self.validation), self.world)]
        rows, samples = score_samples(
            self.player, self.judge, self.game, [self.validation[i] for i in mine],
            self._generators(mine, "validation"), samples=t.val_samples, sample=self._sample,
            text_batch=self.settings.text_batch, step=self.step,
        )  # fmt: skip
        gathered = distributed.gather((rows, samples), self.world, agree=_same_samples)
        rows = [r for part in gathered for r in part[0]]
        samples = [x for part in gathered for x in part[1]]
        if not self.world.is_main:
            return {"step": self.step}
        runlog.append(self.run_dir / "samples.jsonl", samples)
        self._reporter.log_moves(self.step, samples)
        return {"step": self.step, **summary_of(rows, t.val_samples, self.game.copy_metric_name)}

    # --------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write a checkpoint (`frost.run.checkpoint.save`; rank 0 only, every rank holds the same weights)."""
        state = checkpoint.TrainingState(step=self.step, cursor=self.cursor.state(), skipped_steps=self.skipped_steps)
        path = checkpoint.checkpoint_path(self.run_dir, self.step)
        if self.world.is_main:
            path = checkpoint.save(self.run_dir, player=self.player, optimizer=self.optimizer, state=state)
        distributed.barrier(self.world)
        return path

    def _keep_adapter(self) -> None:
        """With `train.keep_adapters`, keep this validation step's adapter (before its validation is logged, so a
        logged validation always has its adapter)."""
        if self.config.train.keep_adapters and self.world.is_main:
            checkpoint.save_adapter(self.run_dir, self.step, self.player)
        distributed.barrier(self.world)

    def load_checkpoint(self) -> None:
        """Restore the latest checkpoint and drop logged records after its step."""
        state = checkpoint.load(self.run_dir, player=self.player, optimizer=self.optimizer, device=self.device)
        self.step = state.step
        self.skipped_steps = state.skipped_steps
        self.cursor.restore(state.cursor)
        if self.world.is_main:
            for name in ("metrics.jsonl", "samples.jsonl"):
                runlog.trim(self.run_dir / name, self.step)
            self.num_tokens = sum(int(r.get("tokens", 0)) for r in runlog.read(self.run_dir / "metrics.jsonl"))
            for step in checkpoint.kept_adapter_steps(self.run_dir):  # kept past the checkpoint: kept again if reached
                if step > self.step:
                    checkpoint.discard(checkpoint.adapter_path(self.run_dir, step))

    # ---------------------------------------------------------------------------------------------------- loop
    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped the last `run` early (after saving), or None when it ran to its end."""
        return self._signals.received

    def _stopping(self) -> bool:
        """Whether a stop signal arrived (on any rank: all ranks stop after the same step)."""
        return distributed.any_rank(self._signals.received is not None, self.world, self.device)

    def close(self) -> None:
        """Close the logs and leave the process group."""
        self._reporter.close()
        distributed.shutdown(self.world)

    def run(self, *, progress: bool = True, on_metrics: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Train until `train.steps`; validates, logs and checkpoints on schedule. Returns the last step reached.

        SIGINT or SIGTERM finishes the current step, writes a checkpoint and returns; a second signal stops at once
        (KeyboardInterrupt), saving nothing: the last checkpoint stays intact. Raises `TrainingError` after
        `train.max_skipped_steps` non-finite steps in a row.
        """
        from tqdm import tqdm

        t = self.config.train
        bar = tqdm(
            total=t.steps, initial=self.step, disable=not (progress and self.world.is_main), desc=t.algorithm,
            dynamic_ncols=True,
        )  # fmt: skip
        best_key = f"val/best_of_{t.val_samples}"
        last_val: dict[str, Any] = {}
        with self._signals:
            if self.step == 0 and not self.resumed and t.val_every and self.validation:
                last_val = self.validate()
                self._keep_adapter()
                self._reporter.log(last_val)
            while self.step < t.steps and not self._stopping():
                metrics = self.train_step()
                self._reporter.log(metrics)
                if self.skipped_in_a_row >= t.max_skipped_steps:
                    raise TrainingError(
                        f"{self.skipped_in_a_row} steps in a row (to step {self.step}) had a non-finite loss, "
                        f"gradient, reward or KL and were skipped (train.max_skipped_steps); the adapter is as it was "
                        "before them and the last checkpoint is intact: lower optim.lr or check the data"
                    )
                if on_metrics is not None:
                    on_metrics(metrics)
                done = self.step >= t.steps
                if t.val_every and self.validation and (self.step % t.val_every == 0 or done):
                    last_val = self.validate()
                    self._keep_adapter()
                    self._reporter.log(last_val)
                if done or (t.checkpoint_every and self.step % t.checkpoint_every == 0):
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward']:.1f}", best8=f"{last_val.get(best_key, float('nan')):.1f}")
            if self._stopping():
                self.save_checkpoint()
                signum = self._signals.received
                bar.write(f"stopped by signal {signum} at step {self.step}; checkpoint saved, resume with --resume")
        bar.close()
        self._reporter.close()
        return self.step


def _same_samples(a: tuple[list[Any], list[Any]], b: tuple[list[Any], list[Any]]) -> bool:
    """Whether two ranks of one FSDP group sampled the same validation moves."""
    texts = [[[m["text"] for m in s["moves"]] for s in part[1]] for part in (a, b)]
    return texts[0] == texts[1]
