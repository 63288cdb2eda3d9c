"""Time a training step of TRL's GRPOTrainer with Frost's rollout (`frost.integrations.trl`) against Frost's own
trainer at the same settings: the embedded model on the CPU, infilling with 8-token moves, 2 texts x K=4 moves per
step, judge-gated D=4, LoRA rank 16 on every projection, beta 0.1. Each runs 1 warm-up step and `--steps` timed
ones; the medians go to --out (JSON). Usage: python scripts/trl_vs_frost_step.py --out results/trl-vs-frost.json"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def frost_steps(steps: int, run_dir: Path) -> list[float]:
    from frost.config import config_from_dict
    from frost.run.trainer import Trainer

    config = config_from_dict({
        "model": {"name": "embedded", "device": "cpu"}, "lora": {"rank": 16, "alpha": 32},
        "game": {"move_length": 8}, "frost": {"rule": "judge-gated", "D": 4, "tau": 1e-4},
        "optim": {"lr": 1e-5}, "data": {"source": "embedded", "validation_size": 2},
        "train": {"algorithm": "frost", "K": 4, "batch_size": 2, "steps": steps + 1, "val_every": 0,
                  "checkpoint_every": 0, "beta": 0.1, "run_dir": str(run_dir), "report_to": ["jsonl"]},
    })  # fmt: skip
    trainer = Trainer(config)
    times = []
    for _ in range(steps + 1):
        times.append(trainer.train_step()["time/step_s"])
    trainer.close()
    return times[1:]


def trl_steps(steps: int, out: Path) -> list[float]:
    import trl
    from peft import LoraConfig
    from transformers import TrainerCallback

    from frost.games import build_game
    from frost.integrations.trl import FrostRollout, judge_reward
    from frost.models import load_model
    from frost.run.data import read_documents

    lm = load_model("embedded", device="cpu")
    game = build_game("infilling", lm.tokenizer, {"move_length": 8})
    rollout = FrostRollout(game, rule="judge-gated", D=4, tau=1e-4)
    documents = [text for _, text in read_documents("embedded", limit=64)]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            times.append(time.perf_counter() - self.start)

    args = trl.GRPOConfig(
        output_dir=str(out), num_generations=4, per_device_train_batch_size=8, max_completion_length=8,
        max_steps=steps + 1, learning_rate=1e-5, beta=0.1, scale_rewards="none", loss_type="dr_grpo", use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, seed=0, bf16=False,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(
        model=lm.model.train().requires_grad_(True), reward_funcs=judge_reward, args=args,
        train_dataset=rollout.dataset(documents), processing_class=lm.tokenizer, rollout_func=rollout,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS), callbacks=[Clock()],
    )  # fmt: skip
    trainer.train()
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        frost = frost_steps(args.steps, Path(tmp) / "frost")
        trl = trl_steps(args.steps, Path(tmp) / "trl")
    result = {
        "settings": "embedded model, CPU fp32, infilling L=8, 2 texts x K=4, judge-gated D=4, LoRA r16 everywhere, "
        f"beta 0.1, {args.threads} thread(s); medians of {args.steps} steps after 1 warm-up",
        "frost_trainer_step_s": statistics.median(frost),
        "trl_frost_step_s": statistics.median(trl),
        "frost_steps_s": frost,
        "trl_steps_s": trl,
    }
    result["trl_over_frost"] = result["trl_frost_step_s"] / result["frost_trainer_step_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
