"""Frost inside TRL's `GRPOTrainer` (TRL 1.16, its public `rollout_func` hook): the trainer's player samples K moves
of a Cross-Entropy Game per prompt, Frost proposes single-token children with the judge (the same base weights with
the adapter off) and replaces each parent by its best child when strictly better, and the replaced group, with its
exact judge rewards, is what TRL's GRPO loss trains on.

    from frost.integrations.trl import FrostRollout, judge_reward
    rollout = FrostRollout(build_game("infilling", tokenizer), rule="judge-gated", D=4)
    trainer = GRPOTrainer(model=model, reward_funcs=judge_reward, args=GRPOConfig(num_generations=4, ...),
                          train_dataset=rollout.dataset(documents), rollout_func=rollout, peft_config=LoraConfig(...))

The moves are Frost's own step (`frost.step.play_step`: one prefill, the game's move masks, the judge's exact scores
from token ids); TRL owns the advantage, the loss, the KL and the optimizer. Frost's own trainer corresponds to
`GRPOConfig(scale_rewards="none", loss_type="dr_grpo", beta=...)` up to TRL's length normalisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from frost.games import GameInstance
from frost.judge import Judge
from frost.models import forbidden_token_mask
from frost.moves import decision_mask
from frost.step import GroupRecord, GroupSettings, play_step


class FrostRollout:
    """TRL's `rollout_func`: each run of equal prompts in the process's slice is one group; its moves are sampled by
    the trainer's model, improved by Frost and returned with their exact rewards (`frost_reward`, for
    `judge_reward`). `last` holds the last call's Frost step records (`frost.step.GroupRecord`)."""

    def __init__(
        self,
        game: Any,
        *,
        rule: str = "judge-gated",
        D: int = 4,
        tau: float = 1e-4,
        rounds: int = 1,
        rank_by: str = "reward",
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.game = game
        self.settings = GroupSettings(
            algorithm="frost", rule=rule, budget=D, tau=tau, rank_by=rank_by, temperature=temperature, rounds=rounds
        )
        self.seed = seed
        self.instances: dict[str, GameInstance] = {}
        self.last: list[GroupRecord] = []

    def dataset(self, documents: Sequence[str]) -> Any:
        """A `datasets.Dataset` of prompts for TRL, one per usable document: each prompt is the game's player prompt
        as text, a key back to its instance (the player reads the instance's token ids, never re-tokenised text)."""
        from datasets import Dataset

        instances, _ = self.game.instances([(f"document {i}", text) for i, text in enumerate(documents)])
        prompts = []
        for inst in instances:
            key = self.game.tokenizer.decode(inst.prompt_ids)
            if key not in self.instances:
                self.instances[key] = inst
                prompts.append(key)
        return Dataset.from_dict({"prompt": prompts})

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, Any]:
        player = trainer.accelerator.unwrap_model(trainer.model)
        if not hasattr(player, "disable_adapter"):
            raise ValueError("FrostRollout needs a peft model (pass peft_config to GRPOTrainer): its base is the judge")
        judge = Judge(player, context=player.disable_adapter)
        vocab = player.get_input_embeddings().weight.shape[0]
        device = player.get_input_embeddings().weight.device
        forbidden = forbidden_token_mask(self.game.tokenizer, vocab, device)
        groups = _runs(prompts)
        step = int(trainer.state.global_step)
        self.last = [None] * len(groups)  # type: ignore[list-item]
        for k in sorted({len(g) for g in groups}):
            which = [i for i, g in enumerate(groups) if len(g) == k]
            gens = [
                torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step * 10_007 + groups[i][0])
                for i in which
            ]
            was_training = player.training
            player.eval()
            records = play_step(
                player, judge, [self.instances[prompts[groups[i][0]]] for i in which],
                dataclasses.replace(self.settings, K=k), base_forbidden=forbidden, generator=gens,
            )  # fmt: skip
            player.train(was_training)
            for i, record in zip(which, records, strict=True):
                self.last[i] = record
        prompt_ids, completion_ids, rewards = [], [], []
        for record in self.last:
            decisions = decision_mask(record.inst, record.moves).sum(-1).tolist()
            for move, n, reward in zip(record.moves.tolist(), decisions, record.rewards.tolist(), strict=True):
                prompt_ids.append(list(record.inst.prompt_ids))
                completion_ids.append(move[:n])
                rewards.append(float(reward))
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "frost_reward": rewards}


def judge_reward(completions: list[Any], frost_reward: list[float], **kwargs: Any) -> list[float]:
    """TRL reward function: the exact judge reward `FrostRollout` computed for each completion."""
    return list(frost_reward)


def _runs(prompts: list[str]) -> list[list[int]]:
    """Indices of each run of equal consecutive prompts (TRL repeats each prompt num_generations times in a row)."""
    runs: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        if runs and prompts[runs[-1][0]] == prompt:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
