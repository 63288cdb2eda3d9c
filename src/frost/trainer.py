"""The training loop: GRPO and Frost-GRPO (Algorithm 1, §3.4), validation, compute accounting, checkpoints, resume.

One step takes B texts. For each: sample K moves from one prefilled prompt (keeping the player's distributions);
GRPO scores them with one judge forward; Frost runs one judge forward+backward, proposes D children with the
selection rule, scores them exactly and replaces parents by strictly better children. The GRPO loss of the (replaced)
group is back-propagated into the LoRA adapter; after the B texts, one AdamW step.

The judge and the KL reference are the frozen base model. When the judge is the player's base, they are the same
weights with the adapter switched off: no second copy is loaded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from frost.config import Config
from frost.errors import ConfigError
from frost.frost import get_rule, replace, select_candidates
from frost.games import GameInstance, InfillingGame
from frost.grpo import grpo_loss
from frost.judge import Judge
from frost.models import LoadedModel, causal_lm_logits, forbidden_token_mask, load_model
from frost.sampling import SampledMoves, cache_io, sample_moves, sampling_distribution

CHECKPOINT_KEEP = 2
PHASES = (
    "time/sample_s",
    "time/judge_s",
    "time/judge_pass_s",
    "time/select_s",
    "time/children_s",
    "time/loss_s",
    "time/policy_s",
    "time/reference_s",
    "time/optim_s",
)
"""Per-step wall time by phase: sampling; judge_s = judge_pass (rewards, with the backward when the rule uses the
gradient) + select (grid and top-D) + children (exact scoring, replacement); loss_s = policy (forward + backward of
the loss) + reference (adapter off); optimizer."""


def policy_distributions(
    model: Any,
    prompt_ids: tuple[int, ...],
    moves: torch.Tensor,
    *,
    temperature: float,
    forbidden: torch.Tensor | None,
    shared_prompt: bool = True,
) -> torch.Tensor:
    """[K, L, V] log pi(. | P, y_k<j) at each move position (differentiable when grad is enabled).

    The distribution is the one moves are sampled from (forbidden tokens masked, temperature). With `shared_prompt`
    the prompt is encoded once and its KV cache (with its autograd history) is repeated for the K moves, so a step
    runs P + K*L tokens through the player instead of K*(P + L): the same values and gradients as K full sequences
    (without LoRA dropout, which would then share one mask across the group).
    """
    device = moves.device
    k, length = moves.shape
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device).view(1, -1)
    if not shared_prompt:
        ids = torch.cat([prompt.expand(k, -1), moves], dim=1)
        logits = causal_lm_logits(model, input_ids=ids, keep=length + 1)[:, :-1]
        return sampling_distribution(logits, forbidden, temperature)
    cache_kw, cache_attr = cache_io(model)
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1:].expand(k, 1, -1)
    if length == 1:
        return sampling_distribution(first, forbidden, temperature)
    cache = getattr(out, cache_attr)
    if k > 1:
        cache.batch_repeat_interleave(k)
    rest = model(input_ids=moves[:, :-1], use_cache=True, **{cache_kw: cache}).logits
    return sampling_distribution(torch.cat([first, rest], dim=1), forbidden, temperature)


def copies_beginning(move_text: str, begin_text: str) -> bool:
    """Whether a move repeats the beginning x (the GRPO collapse mode of §3.7): one stripped text contains the other."""
    a, b = " ".join(move_text.split()).lower(), " ".join(begin_text.split()).lower()
    return bool(a) and bool(b) and (a in b or b in a)


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
        out = []
        for _ in range(n):
            if self.index >= self.size:
                self.epoch, self.index = self.epoch + 1, 0
                self._shuffle()
            out.append(self._order[self.index])
            self.index += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._shuffle()


class Trainer:
    """GRPO / Frost-GRPO on the infilling game. `run()` trains to `config.train.steps`."""

    def __init__(
        self, config: Config, *, resume: bool = False, overwrite: bool = False, base: LoadedModel | None = None
    ) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        from frost.data import load_split

        self.config = config.validate()
        t = config.train
        self.run_dir = Path(t.run_dir)
        self._prepare_run_dir(resume, overwrite)
        torch.manual_seed(t.seed)
        base = base or load_model(config.model.name, device=config.model.device, dtype=config.model.dtype)
        self.device, self.tokenizer = base.device, base.tokenizer
        lora = config.lora
        peft_config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            self.player = get_peft_model(base.model, peft_config)
        except ValueError as exc:
            raise ConfigError(f"lora.target_modules: {str(exc).splitlines()[0]}") from exc
        self.player.eval()  # no dropout in sampling; LoRA dropout applies only in the loss pass
        if config.model.judge is None:
            self.judge = Judge(
                self.player, batch_size=config.model.judge_batch_size, context=self.player.disable_adapter
            )
        else:
            judge_lm = load_model(config.model.judge, device=config.model.device, dtype=config.model.dtype)
            if judge_lm.tokenizer.get_vocab() != self.tokenizer.get_vocab():
                raise ConfigError(
                    f"model.judge: {config.model.judge!r} has a different tokenizer from {config.model.name!r}; "
                    "the judge scores the player's token ids, so both must share one vocabulary"
                )
            self.judge = Judge(judge_lm.model, batch_size=config.model.judge_batch_size)
        vocab = self.player.get_input_embeddings().weight.shape[0]
        self.forbidden = forbidden_token_mask(self.tokenizer, vocab, self.device)
        g = config.game
        self.game = InfillingGame(
            self.tokenizer,
            move_length=g.move_length,
            begin_tokens=g.begin_tokens,
            gap_tokens=g.gap_tokens,
            end_tokens=g.end_tokens,
        )
        split = load_split(config.data, self.game)
        self.validation = split.validation[: t.val_documents]
        self.train_set = split.train
        if not self.train_set:
            raise ConfigError(
                f"data: no training documents left after {len(split.validation)} validation ones; "
                "lower data.validation_size or use more documents"
            )
        params = [p for p in self.player.parameters() if p.requires_grad]
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            params, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, weight_decay=o.weight_decay
        )
        self.generator = torch.Generator(device=self.device).manual_seed(t.seed)
        self.cursor = DataCursor(len(self.train_set), t.seed)
        self.step = 0
        self._stop_signal: int | None = None
        self._writer = self._tensorboard()
        if resume:
            self.load_checkpoint()
        else:
            (self.run_dir / "config.yaml").write_text(config.to_yaml())

    # ----------------------------------------------------------------------------------------------- run directory
    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"train.run_dir: cannot write to {self.run_dir} ({exc.strerror})") from exc
        if resume and not (self.run_dir / "checkpoints" / "latest").is_file():
            raise ConfigError(f"--resume: {self.run_dir} has no checkpoint to resume from")
        if not resume and not overwrite and (self.run_dir / "metrics.jsonl").exists():
            raise ConfigError(
                f"train.run_dir: {self.run_dir} already holds a run; pass --resume to continue it, "
                "--overwrite to start it again, or choose another --run-dir"
            )
        if not resume:
            for name in ("metrics.jsonl", "samples.jsonl"):
                (self.run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
            shutil.rmtree(self.run_dir / "tensorboard", ignore_errors=True)

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _log(self, record: dict[str, Any]) -> None:
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key, value, record["step"])
            self._writer.flush()

    # ------------------------------------------------------------------------------------------------ one step
    def _sample(self, inst: GameInstance, k: int, generator: torch.Generator) -> SampledMoves:
        """K on-policy moves for one text from the current player, with their sampling distributions."""
        return sample_moves(
            self.player,
            inst.prompt_ids,
            k,
            inst.move_length,
            temperature=self.config.train.temperature,
            forbidden=self.forbidden,
            generator=generator,
        )

    def _group(self, inst: GameInstance, phase: dict[str, float], counts: dict[str, int]) -> dict[str, Any]:
        """Sample, score, (Frost: propose and replace), and back-propagate the loss of one text's group."""
        t, cfg = self.config.train, self.config
        clock = self.clock
        t0 = clock()
        sampled = self._sample(inst, t.K, self.generator)
        counts["player_fwd_seqs"] += t.K
        counts["tokens"] += len(inst.prompt_ids) + t.K * inst.move_length
        t1 = clock()
        phase["time/sample_s"] += t1 - t0
        judged = self.judge.forward_sequences
        out: dict[str, Any] = {}
        if t.algorithm == "frost":
            # Algorithm 1 lines 3-7 (frost.frost_step), timed phase by phase
            rule = get_rule(cfg.frost.rule)
            taylor = self.judge.taylor(inst, sampled.moves, with_grad=rule.needs_gradient)
            ta = clock()
            candidates = select_candidates(
                rule, taylor, sampled.logprobs, cfg.budget, tau=cfg.frost.tau, forbidden=self.forbidden,
                generator=self.generator, rank_by=cfg.frost.rank_by,
            )  # fmt: skip
            tb = clock()
            record = replace(self.judge, inst, taylor.moves, taylor.rewards, candidates, rule=rule.name)
            phase["time/judge_pass_s"] += ta - t1
            phase["time/select_s"] += tb - ta
            phase["time/children_s"] += clock() - tb
            moves, rewards = record.moves, record.rewards
            out.update(
                parent_mean=float(record.parent_rewards.mean()),
                hit_rate=record.hit_rate,
                mean_lift=record.mean_lift,
                frac_replaced=record.frac_replaced,
            )
        else:
            moves = sampled.moves
            rewards = self.judge.rewards(inst, moves)
            phase["time/judge_pass_s"] += clock() - t1
            out.update(parent_mean=float(rewards.mean()))
        t2 = clock()
        phase["time/judge_s"] += t2 - t1
        counts["tokens"] += (self.judge.forward_sequences - judged) * inst.judge_length
        self.player.train()
        policy = policy_distributions(
            self.player, inst.prompt_ids, moves, temperature=t.temperature, forbidden=self.forbidden
        )
        self.player.eval()
        t3 = clock()
        with torch.no_grad(), self.player.disable_adapter():
            reference = policy_distributions(
                self.player, inst.prompt_ids, moves, temperature=t.temperature, forbidden=self.forbidden
            )
        t4 = clock()
        terms = grpo_loss(policy, reference, moves, rewards, t.beta)
        (terms.loss / t.batch_size).backward()
        counts["player_fwd_seqs"] += 2 * t.K
        counts["player_bwd_seqs"] += t.K
        counts["tokens"] += 2 * (len(inst.prompt_ids) + t.K * inst.move_length)
        t5 = clock()
        phase["time/reference_s"] += t4 - t3
        phase["time/policy_s"] += (t3 - t2) + (t5 - t4)
        phase["time/loss_s"] += t5 - t2
        out.update(
            rewards=rewards.tolist(),
            loss=float(terms.loss.detach()),
            kl=terms.kl,
            entropy=terms.entropy,
        )
        return out

    def clock(self) -> float:
        """Wall time in seconds, after the device's queued work has finished (phase timings on GPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over B texts; returns its metrics."""
        t = self.config.train
        start = self.clock()
        fwd0, bwd0 = self.judge.forward_sequences, self.judge.backward_sequences
        phase = dict.fromkeys(PHASES, 0.0)
        counts = {"player_fwd_seqs": 0, "player_bwd_seqs": 0, "tokens": 0}
        groups = [self._group(self.train_set[i], phase, counts) for i in self.cursor.take(t.batch_size)]
        t_opt = self.clock()
        params = [p for p in self.player.parameters() if p.requires_grad]
        max_norm = self.config.optim.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        phase["time/optim_s"] = self.clock() - t_opt
        self.step += 1
        all_rewards = [r for g in groups for r in g["rewards"]]
        stds = [statistics.pstdev(g["rewards"]) for g in groups]
        metrics: dict[str, Any] = {
            "step": self.step,
            "reward_mean": statistics.fmean(all_rewards),
            "reward_std": statistics.fmean(stds),
            "reward_best": statistics.fmean(max(g["rewards"]) for g in groups),
            "reward_parents_mean": statistics.fmean(g["parent_mean"] for g in groups),
            "frac_reward_zero_std": statistics.fmean(s == 0 for s in stds),
            "kl": statistics.fmean(g["kl"] for g in groups),
            "entropy": statistics.fmean(g["entropy"] for g in groups),
            "loss": statistics.fmean(g["loss"] for g in groups),
            "grad_norm": float(grad_norm),
            "lr": self.optimizer.param_groups[0]["lr"],
            "judge_fwd_seqs": self.judge.forward_sequences - fwd0,
            "judge_bwd_seqs": self.judge.backward_sequences - bwd0,
            **counts,
        }
        if t.algorithm == "frost":
            for key in ("hit_rate", "mean_lift", "frac_replaced"):
                vals = [g[key] for g in groups if math.isfinite(g[key])]
                metrics[f"frost/{key}"] = statistics.fmean(vals) if vals else float("nan")
        metrics["time/step_s"] = self.clock() - start
        metrics.update(phase)
        return metrics

    # ---------------------------------------------------------------------------------------------- validation
    def validate(self) -> dict[str, Any]:
        """Sample `val_samples` moves per validation text under the current player and score them exactly."""
        t = self.config.train
        rows, samples = [], []
        for n, inst in enumerate(self.validation):
            gen = torch.Generator(device=self.device).manual_seed(t.seed * 1_000_003 + 17 + n)
            s = self._sample(inst, t.val_samples, gen)
            rewards = self.judge.rewards(inst, s.moves).tolist()
            texts = [self.tokenizer.decode(m) for m in s.moves.tolist()]
            begin = self.tokenizer.decode(list(inst.meta.get("begin_ids", inst.judge_prefix)))
            best = max(range(len(rewards)), key=rewards.__getitem__)
            rows.append(
                {
                    "mean": statistics.fmean(rewards),
                    "best": rewards[best],
                    "var": statistics.pvariance(rewards),
                    "entropy": float(s.entropy().mean()),
                    "copy": copies_beginning(texts[best], begin),
                }
            )
            samples.append(
                {
                    "step": self.step,
                    "doc": inst.source,
                    "moves": [{"text": x, "reward": r} for x, r in zip(texts, rewards, strict=True)],
                }
            )
        with (self.run_dir / "samples.jsonl").open("a") as f:
            for s_row in samples:
                f.write(json.dumps(s_row) + "\n")
        return {
            "step": self.step,
            "val/reward_mean": statistics.fmean(r["mean"] for r in rows),
            f"val/best_of_{t.val_samples}": statistics.fmean(r["best"] for r in rows),
            "val/score_var": statistics.fmean(r["var"] for r in rows),
            "val/token_entropy": statistics.fmean(r["entropy"] for r in rows),
            "val/frac_zero_var": statistics.fmean(r["var"] == 0 for r in rows),
            "val/frac_copy_begin": statistics.fmean(r["copy"] for r in rows),
        }

    # --------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write adapter, optimizer, RNG states, step and data position atomically; keep the last few."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        root = self.run_dir / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{self.step:07d}"
        tmp = root / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.player).items()}
        save_file(adapter, str(tmp / "adapter.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(
            {
                "generator": self.generator.get_state(),
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            tmp / "rng.pt",
        )
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "cursor": self.cursor.state()}))
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = root / ".latest.tmp"
        latest_tmp.write_text(name + "\n")
        os.replace(latest_tmp, root / "latest")
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-CHECKPOINT_KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self) -> None:
        """Restore the latest checkpoint and drop logged records after its step."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        root = self.run_dir / "checkpoints"
        path = root / (root / "latest").read_text().strip()
        set_peft_model_state_dict(self.player, load_file(str(path / "adapter.safetensors"), device=str(self.device)))
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.device))
        rng = torch.load(path / "rng.pt", weights_only=False)
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        state = json.loads((path / "state.json").read_text())
        self.step = state["step"]
        self.cursor.restore(state["cursor"])
        for name in ("metrics.jsonl", "samples.jsonl"):
            log = self.run_dir / name
            if log.is_file():
                kept = [ln for ln in log.read_text().splitlines() if json.loads(ln)["step"] <= self.step]
                log.write_text("".join(ln + "\n" for ln in kept))

    # ---------------------------------------------------------------------------------------------------- loop
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum: int, frame: Any) -> None:
            self._stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def run(self, *, progress: bool = True, on_metrics: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Train until `train.steps`; validates, logs and checkpoints on schedule. Returns the last step reached.

        SIGINT or SIGTERM finishes the current step, writes a checkpoint and returns.
        """
        from tqdm import tqdm

        t = self.config.train
        bar = tqdm(total=t.steps, initial=self.step, disable=not progress, desc=t.algorithm, dynamic_ncols=True)
        best_key = f"val/best_of_{t.val_samples}"
        last_val: dict[str, Any] = {}
        with self._signals():
            if self.step == 0 and t.val_every and self.validation:
                last_val = self.validate()
                self._log(last_val)
            while self.step < t.steps and self._stop_signal is None:
                metrics = self.train_step()
                self._log(metrics)
                if on_metrics is not None:
                    on_metrics(metrics)
                done = self.step >= t.steps
                if t.val_every and self.validation and (self.step % t.val_every == 0 or done):
                    last_val = self.validate()
                    self._log(last_val)
                if done or (t.checkpoint_every and self.step % t.checkpoint_every == 0):
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(
                    reward=f"{metrics['reward_mean']:.1f}", best8=f"{last_val.get(best_key, float('nan')):.1f}"
                )
            if self._stop_signal is not None:
                self.save_checkpoint()
                bar.write(
                    f"stopped by signal {self._stop_signal} at step {self.step}; checkpoint saved, resume with --resume"
                )
        bar.close()
        if self._writer is not None:
            self._writer.close()
        return self.step
