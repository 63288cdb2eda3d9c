"""TRL's GRPOTrainer on the same model, game, K, B, L, LoRA and beta as `frost bench`'s GRPO arms, timed the same
way (the median of timed steps after one warm-up step), so the two GRPO steps can be compared side by side.

    PYTHONPATH=src python3 scripts/trl_side_by_side.py --model qwen3-14b-shape --K 8 --B 4 --L 8 --lora-rank 256 \\
        --json results/gpu/trl.json

The reward is the Cross-Entropy Game's, computed by Frost's judge on the token ids TRL generated (the base model
with the adapter switched off, as in Frost), so both trainers do the same work per step: generate B*K moves of
exactly L tokens (`min_new_tokens`), score them with the judge, one policy and one reference pass, one AdamW step.
TRL's settings that differ by default are set to Frost's: advantage r - mean(r) (`scale_rewards="none"`), the
GRPO loss, beta 0.1, no vLLM, no dropout. Needs `trl` and `datasets` (not dependencies of Frost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from frost.config import DataConfig
from frost.games import build_game
from frost.judge import Judge
from frost.models import load_model
from frost.run.data import load_split

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="a model name or shape (qwen3-14b-shape: random weights)")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path)
    return p.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, __version__

    lm = load_model(args.model, device=args.device, dtype=args.dtype, random_weights=args.random_weights)
    tokenizer = lm.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    game = build_game("infilling", tokenizer, {"move_length": args.L})
    texts = load_split(DataConfig(source="handwritten", validation_size=0), game).train
    rows = [{"prompt": tokenizer.decode(inst.prompt_ids), "text_index": i} for i, inst in enumerate(texts)]
    holder: dict[str, Any] = {}

    def game_reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], text_index: list[int],
                    **_: Any) -> list[float]:  # fmt: skip
        judge = holder["judge"]
        items = []
        for i, ids in zip(text_index, completion_ids, strict=True):
            move = (list(ids) + [tokenizer.pad_token_id] * args.L)[: args.L]
            items.append((texts[i], torch.tensor([move])))
        return [float(r[0]) for r in judge.rewards_many(items)]

    cuda = lm.device.type == "cuda"
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-side-by-side-"),
        per_device_train_batch_size=args.B * args.K,
        num_generations=args.K,
        max_completion_length=args.L,
        generation_kwargs={"min_new_tokens": args.L},
        temperature=1.0,
        beta=0.1,
        loss_type="grpo",
        scale_rewards="none",
        learning_rate=1e-4,
        max_steps=args.steps + 1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=cuda and lm.dtype == torch.bfloat16,
        use_cpu=not cuda,
        disable_dropout=True,
        shuffle_dataset=False,
        use_vllm=False,
        gradient_checkpointing=False,
    )
    stamps: list[float] = []

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            synchronize(lm.device)
            stamps.append(time.perf_counter())

        def on_step_end(self, *a: Any, **k: Any) -> None:
            synchronize(lm.device)
            stamps.append(time.perf_counter())

    trainer = GRPOTrainer(
        model=lm.model,
        reward_funcs=game_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank, target_modules=PROJECTIONS),
        callbacks=[StepClock()],
    )
    holder["judge"] = Judge(trainer.model, context=trainer.model.disable_adapter)
    if cuda:
        torch.cuda.reset_peak_memory_stats(lm.device)
    trainer.train()
    step_s = [end - begin for begin, end in zip(stamps[0::2], stamps[1::2], strict=True)][1:]  # after the warm-up
    result = {
        "trainer": f"trl {__version__} GRPOTrainer",
        "model": lm.name,
        "device": str(lm.device),
        "dtype": str(lm.dtype),
        "K": args.K,
        "B": args.B,
        "L": args.L,
        "lora_rank": args.lora_rank,
        "step_s": statistics.median(step_s),
        "steps_s": step_s,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(lm.device) if cuda else None,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
