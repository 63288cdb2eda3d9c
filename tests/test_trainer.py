"""The trainer on a tiny random model: Frost steps, the loss input, KL, resume equality, outputs and config errors."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from conftest import make_tiny_llama
from frost.cli import main
from frost.config import config_from_dict
from frost.errors import ConfigError
from frost.games import copies_text as copies_beginning
from frost.models import LoadedModel
from frost.run.trainer import Trainer


def tiny_base(tokenizer) -> LoadedModel:
    model = make_tiny_llama(vocab=len(tokenizer), seed=3)
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny", device=torch.device("cpu"), dtype=torch.float32)


def tiny_config(run_dir, **train):
    return config_from_dict(
        {
            "model": {"name": "tiny"},
            "lora": {"rank": 4, "alpha": 8},
            "game": {"move_length": 3},
            "frost": {"rule": "taylor-gated", "tau": 1e-3},
            "optim": {"lr": 3e-2},
            "data": {"source": "handwritten", "validation_size": 2},
            "train": {
                "algorithm": "frost",
                "K": 3,
                "batch_size": 2,
                "steps": 4,
                "val_every": 2,
                "val_samples": 2,
                "val_documents": 2,
                "checkpoint_every": 2,
                "run_dir": str(run_dir),
                **train,
            },
        }
    )


def strip_times(records):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_frost_step_feeds_the_post_replacement_group_to_the_loss(tmp_path, embedded_tokenizer, monkeypatch):
    seen = {"records": [], "loss_inputs": []}
    import frost.step as step_module

    real_step, real_loss = step_module.frost_step_batch, step_module.grpo_loss

    def spy_step(*args, **kwargs):
        records = real_step(*args, **kwargs)
        seen["records"].extend(records)
        return records

    def spy_loss(policy, reference, moves, rewards, beta, mask=None, **kwargs):
        seen["loss_inputs"].append((moves.clone(), rewards.clone()))
        return real_loss(policy, reference, moves, rewards, beta, mask=mask, **kwargs)

    monkeypatch.setattr(step_module, "frost_step_batch", spy_step)
    monkeypatch.setattr(step_module, "grpo_loss", spy_loss)
    trainer = Trainer(tiny_config(tmp_path, steps=2, val_every=0), base=tiny_base(embedded_tokenizer))
    trainer.run(progress=False)
    assert len(seen["records"]) == len(seen["loss_inputs"]) == 4
    for record, (moves, rewards) in zip(seen["records"], seen["loss_inputs"], strict=True):
        assert torch.equal(moves, record.moves) and torch.equal(rewards, record.rewards)
        replaced = record.chosen >= 0
        assert torch.all(record.rewards[replaced] > record.parent_rewards[replaced])
        assert torch.all(record.rewards >= record.parent_rewards)
    metrics = read_metrics(tmp_path)
    assert all(m["reward"] >= m["reward_parents_mean"] - 1e-6 for m in metrics)
    assert all(m["judge_fwd_seqs"] >= 2 * 3 and m["judge_bwd_seqs"] == 2 * 3 for m in metrics)


def test_kl_is_zero_at_the_first_step_and_never_negative(tmp_path, embedded_tokenizer):
    trainer = Trainer(tiny_config(tmp_path, steps=3, val_every=0), base=tiny_base(embedded_tokenizer))
    trainer.run(progress=False)
    kls = [m["kl"] for m in read_metrics(tmp_path)]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero: the player is the reference
    assert all(k >= -1e-6 for k in kls) and kls[-1] > 0


def test_judge_weights_unchanged_and_adapter_off_equals_base(tmp_path, embedded_tokenizer):
    base = tiny_base(embedded_tokenizer)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    reference = make_tiny_llama(vocab=len(embedded_tokenizer), seed=3)
    trainer = Trainer(tiny_config(tmp_path, steps=2, val_every=0), base=base)
    trainer.run(progress=False)
    after = {
        k.replace("base_layer.", ""): v
        for k, v in trainer.player.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # base weights (judge and reference) never move
    ids = torch.tensor([[20, 30, 40, 50]])
    with torch.no_grad(), trainer.player.disable_adapter():
        off = trainer.player(input_ids=ids).logits
    with torch.no_grad():
        assert torch.allclose(off, reference(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(trainer.player(input_ids=ids).logits, off, atol=1e-5)  # the adapter learned


@pytest.mark.parametrize("algorithm", ["frost", "grpo"])
def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(tmp_path, embedded_tokenizer, algorithm):
    straight = tmp_path / "straight"
    Trainer(tiny_config(straight, algorithm=algorithm), base=tiny_base(embedded_tokenizer)).run(progress=False)
    split = tmp_path / "split"
    Trainer(tiny_config(split, algorithm=algorithm, steps=2), base=tiny_base(embedded_tokenizer)).run(progress=False)
    resumed = Trainer(tiny_config(split, algorithm=algorithm), resume=True, base=tiny_base(embedded_tokenizer))
    assert resumed.step == 2
    resumed.run(progress=False)
    assert strip_times(read_metrics(split)) == strip_times(read_metrics(straight))
    assert (split / "samples.jsonl").read_text() == (straight / "samples.jsonl").read_text()


def test_run_directory_outputs(tmp_path, embedded_tokenizer):
    Trainer(tiny_config(tmp_path), base=tiny_base(embedded_tokenizer)).run(progress=False)
    assert (tmp_path / "config.yaml").is_file()
    metrics = read_metrics(tmp_path)
    train = [m for m in metrics if "loss" in m]
    val = [m for m in metrics if "val/reward_mean" in m]
    assert [m["num_tokens"] for m in train] == list(itertools.accumulate(m["tokens"] for m in train))  # TRL's meaning
    assert [m["step"] for m in train] == [1, 2, 3, 4] and [m["step"] for m in val] == [0, 2, 4]
    for key in (
        "reward", "reward_std", "reward_best", "frac_reward_zero_std", "kl", "entropy", "frost/frac_replaced",
        "frost/hit_rate", "frost/mean_lift", "loss", "grad_norm", "learning_rate", "judge_fwd_seqs", "judge_bwd_seqs",
        "time/step_s", "time/sample_s", "time/judge_s", "time/loss_s", "time/optim_s",
    ):  # fmt: skip
        assert key in train[0], key
    for key in ("val/reward_mean", "val/best_of_2", "val/score_var", "val/token_entropy", "val/frac_zero_var",
                "val/frac_copy_begin"):  # fmt: skip
        assert key in val[0], key
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 2 and all(len(s["moves"]) == 2 for s in samples)
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step-0000004"
    for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "rng.pt", "state.json"):
        assert (checkpoints / "step-0000004" / name).is_file()
    assert list((tmp_path / "tensorboard").glob("events.*"))


def test_copy_detection():
    assert copies_beginning("I live in Astoria, Oregon,", "I live in Astoria, Oregon,")
    assert copies_beginning(" Astoria, Oregon", "I live in Astoria, Oregon,")
    assert not copies_beginning(" a small town with rain", "I live in Astoria, Oregon,")


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("train:\n  K: 0\n", "train.K"),
        ("train:\n  bogus: 1\n", "'train.bogus'"),
        ("frost:\n  D: -1\n", "frost.D"),
        ("frost:\n  tau: 1.5\n", "frost.tau"),
        ("game:\n  move_length: 0\n", "game.move_length"),
        ("model:\n  name: ''\n", "model.name"),
        ("frost:\n  rule: best\n", "frost.rule"),
        ("frost:\n  rank_by: gain\n", "frost.rank_by"),
        ("train:\n  algorithm: ppo\n", "train.algorithm"),
        ("train:\n  K: eight\n", "train.K"),
    ],
)
def test_bad_configs_exit_2_with_one_line_naming_the_field(tmp_path, yaml_text, field, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path, embedded_tokenizer):
    Trainer(tiny_config(tmp_path, steps=1, val_every=0), base=tiny_base(embedded_tokenizer)).run(progress=False)
    with pytest.raises(ConfigError, match=r"train\.run_dir: .* already holds a run; pass --resume"):
        Trainer(tiny_config(tmp_path, steps=1, val_every=0), base=tiny_base(embedded_tokenizer))
    Trainer(tiny_config(tmp_path, steps=1, val_every=0), overwrite=True, base=tiny_base(embedded_tokenizer))


def test_unwritable_run_dir_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--run-dir", str(blocker / "run"), "--set", "model.name=embedded"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.run_dir" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("length", [1, 4])
def test_shared_prompt_loss_equals_k_full_sequences_in_value_and_gradient(length):
    from peft import LoraConfig, get_peft_model

    from frost.losses import grpo_loss
    from frost.sampling import policy_distributions

    torch.manual_seed(0)
    player = get_peft_model(make_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in player.named_parameters():  # non-zero B so the adapter matters
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    prompt = tuple(range(5, 30))
    moves = torch.randint(3, 97, (3, length), generator=torch.Generator().manual_seed(1))
    rewards = torch.tensor([-3.0, -1.0, -2.0])
    forbidden = torch.zeros(97, dtype=torch.bool)
    forbidden[:3] = True
    reference = torch.log_softmax(torch.randn(3, length, 97), -1)
    grads, losses = [], []
    for shared in (True, False):
        player.zero_grad()
        dist = policy_distributions(player, prompt, moves, temperature=0.9, forbidden=forbidden, shared_prompt=shared)
        loss = grpo_loss(dist, reference, moves, rewards, 0.1).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in player.named_parameters() if p.requires_grad})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_diagnose_samples_tables_from_two_runs(tmp_path, embedded_tokenizer):
    from frost.analysis.samples import diagnose_samples

    for name, algorithm in (("a", "frost"), ("b", "grpo")):
        config = tiny_config(tmp_path / name, algorithm=algorithm, steps=1, val_every=0)
        Trainer(config, base=tiny_base(embedded_tokenizer)).run(progress=False)
    trainer_for_data = Trainer(tiny_config(tmp_path / "c", steps=0, val_every=0), base=tiny_base(embedded_tokenizer))
    prompts = trainer_for_data.validation
    checkpoint_b = tmp_path / "b" / "checkpoints" / "step-0000001"  # a checkpoint folder works as well as a run
    result, markdown = diagnose_samples(
        tmp_path / "a",
        checkpoint_b,
        tiny_base(embedded_tokenizer),
        prompts,
        trainer_for_data.game,
        samples=3,
        examples=1,
    )
    assert set(result["table1"]) == {"a", "b/step-0000001"}
    row = result["table1"]["a"]
    assert row["mean_reward"] == pytest.approx(-(row["prefix_ce"] + row["text_ce"]), rel=1e-5)
    assert row["best_of_k"] >= row["mean_reward"]
    t2 = result["table2"]
    assert t2["prompts"] == len(prompts) and 0 <= t2["a_best_beats_b_best"] <= len(prompts)
    assert "## Table 1" in markdown and "**" in markdown
    assert all(len(g["texts"]) == 3 for g in result["groups"]["a"])


def test_sigint_saves_a_checkpoint_and_stops(tmp_path, embedded_tokenizer):
    import os
    import signal

    trainer = Trainer(
        tiny_config(tmp_path, steps=4, val_every=0, checkpoint_every=0), base=tiny_base(embedded_tokenizer)
    )
    step = trainer.run(progress=False, on_metrics=lambda m: os.kill(os.getpid(), signal.SIGINT))
    assert step == 1
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-0000001"
    resumed = Trainer(tiny_config(tmp_path, steps=2, val_every=0), resume=True, base=tiny_base(embedded_tokenizer))
    assert resumed.run(progress=False) == 2


def test_a_run_stopped_during_its_first_validation_resumes_without_validating_step_0_twice(
    tmp_path, embedded_tokenizer
):
    import os
    import signal

    whole = Trainer(tiny_config(tmp_path / "whole", steps=2, val_every=1), base=tiny_base(embedded_tokenizer))
    whole.run(progress=False)
    stopped = Trainer(tiny_config(tmp_path / "cut", steps=2, val_every=1), base=tiny_base(embedded_tokenizer))
    validate = stopped.validate

    def validate_then_signal():
        result = validate()
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 0 is being validated
        return result

    stopped.validate = validate_then_signal  # type: ignore[method-assign]
    assert stopped.run(progress=False) == 0
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text().strip() == "step-0000000"
    resumed = Trainer(
        tiny_config(tmp_path / "cut", steps=2, val_every=1), resume=True, base=tiny_base(embedded_tokenizer)
    )
    assert resumed.run(progress=False) == 2
    cut = strip_times(read_metrics(tmp_path / "cut"))
    assert [r["step"] for r in cut if "val/reward_mean" in r] == [0, 1, 2]
    assert cut == strip_times(read_metrics(tmp_path / "whole"))


def test_selection_from_a_checkpoint_plays_the_adapter_and_judges_with_the_base(tmp_path, embedded_tokenizer):
    from conftest import make_instance
    from frost.analysis.selection import run_selection
    from frost.judge import Judge
    from frost.run.checkpoint import load_players, resolve_checkpoint

    Trainer(tiny_config(tmp_path / "a", steps=1, val_every=0), base=tiny_base(embedded_tokenizer)).run(progress=False)
    with pytest.raises(ConfigError, match="checkpoint"):
        resolve_checkpoint(tmp_path / "nowhere")
    player = load_players([tmp_path / "a"], tiny_base(embedded_tokenizer))
    judge = Judge(player, context=player.disable_adapter)
    plain = tiny_base(embedded_tokenizer).model
    inst = make_instance(move_length=3)
    moves = torch.randint(3, 90, (4, 3))
    assert torch.allclose(judge.rewards(inst, moves), Judge(plain).rewards(inst, moves), atol=1e-5)
    ids = torch.tensor([inst.prompt_ids])
    with torch.no_grad():
        assert not torch.allclose(player(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-6)
    rows = run_selection(judge, player, [inst], rules=["topprob", "judge-gated"], K=2, budgets=[1, 2], tau=1e-3)
    assert len(rows) == 4 and all(r.best_after >= r.best_before for r in rows)
