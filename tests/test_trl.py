"""Frost inside TRL's GRPOTrainer (`frost.integrations.trl`, TRL pinned in the `trl` extra): one TRL step on a tiny
random model whose rollout is Frost's, checked against Frost's own step on the same sampled moves, with a replaced
move in TRL's loss. Skipped when TRL is not installed (the rest of the suite needs no TRL)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import make_tiny_llama

trl = pytest.importorskip("trl")

DOCUMENTS = [
    "Once upon a time there was a small fox who lived at the edge of a quiet forest with her brothers.",
    "The old lighthouse keeper climbed the stairs every night to light the lamp for the ships at sea.",
    "A young girl found a shiny stone in the river and decided to keep it as a secret treasure forever.",
    "Every morning the baker opened his shop early and filled the street with the smell of fresh bread.",
]


def test_one_trl_step_trains_on_frosts_replaced_group(tmp_path, embedded_tokenizer):
    from peft import LoraConfig

    from frost.games import build_game
    from frost.integrations.trl import FrostRollout, judge_reward
    from frost.judge import Judge
    from frost.models import forbidden_token_mask
    from frost.sampling import SampledMoves
    from frost.step import play_step

    torch.manual_seed(0)
    game = build_game(
        "infilling", embedded_tokenizer, {"move_length": 4, "begin_tokens": 8, "gap_tokens": 4, "end_tokens": 8}
    )
    rollout = FrostRollout(game, rule="full-gated", D=4, tau=1e-9)
    dataset = rollout.dataset(DOCUMENTS)
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"), num_generations=4, per_device_train_batch_size=8, max_completion_length=4,
        max_steps=1, learning_rate=1e-2, beta=0.1, scale_rewards="none", loss_type="dr_grpo", use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, seed=0, bf16=False,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(
        model=make_tiny_llama(vocab=len(embedded_tokenizer), seed=3).train().requires_grad_(True),
        reward_funcs=judge_reward, args=args, train_dataset=dataset, processing_class=embedded_tokenizer,
        rollout_func=rollout, peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )  # fmt: skip
    seen: list[torch.Tensor] = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *a, **k):  # what TRL's loss trains on
        seen.append(inputs["completion_ids"].clone())
        return compute_loss(model, inputs, *a, **k)

    trainer.compute_loss = recording
    trainer.train()
    records = rollout.last
    assert len(records) == 2 and all(r.moves.shape == (4, 4) for r in records)
    replaced = [(r, k) for r in records for k in range(4) if not torch.equal(r.moves[k], r.sampled.moves[k])]
    assert replaced, "no parent was replaced: the step would not test Frost inside TRL"
    trained = {tuple(row.tolist()) for batch in seen for row in batch}
    assert all(tuple(r.moves[k].tolist()) in trained for r, k in replaced)  # a replaced move entered the loss
    logged = next(h for h in trainer.state.log_history if "reward" in h)  # TRL's reward: the judge's exact rewards
    assert logged["reward"] == pytest.approx(float(torch.cat([r.rewards for r in records]).mean()), abs=1e-3)

    # Frost's own step on the same sampled moves gives the same replaced groups and rewards (the first round's gate
    # reads the sampling distributions, kept with the moves; the judge is the base: TRL's update does not matter)
    player = trainer.accelerator.unwrap_model(trainer.model)
    recorded = [r.sampled for r in records]

    def replay(player, insts, k, masks, temperature, generator) -> list[SampledMoves]:
        return recorded

    judge = Judge(player, context=player.disable_adapter)
    forbidden = forbidden_token_mask(embedded_tokenizer, player.get_input_embeddings().weight.shape[0], "cpu")
    settings = dataclasses.replace(rollout.settings, K=4)
    mine = play_step(player, judge, [r.inst for r in records], settings, base_forbidden=forbidden, sampler=replay)
    for got, want in zip(records, mine, strict=True):
        assert torch.equal(got.moves, want.moves)
        assert torch.allclose(got.rewards, want.rewards, atol=1e-4)
