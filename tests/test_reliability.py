"""Non-finite guards (NaN injected into the loss and into the judge) and the second stop signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frost.errors import ConfigError
from frost.run import checkpoint
from frost.run.trainer import Trainer, TrainingError
from test_trainer import read_metrics, strip_times, tiny_base, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def lora_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.player.named_parameters() if p.requires_grad}


def adam_state(trainer: Trainer) -> list[torch.Tensor]:
    return [v.clone() for st in trainer.optimizer.state.values() for v in st.values() if torch.is_tensor(v)]


def test_a_non_finite_loss_skips_the_update_and_is_logged(tmp_path, embedded_tokenizer, monkeypatch):
    import frost.step as step_module

    trainer = Trainer(tiny_config(tmp_path, steps=3, val_every=0), base=tiny_base(embedded_tokenizer))
    real_loss = step_module.grpo_loss

    def poisoned(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        if trainer.step == 1:  # the second step
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(step_module, "grpo_loss", poisoned)
    first = trainer.train_step()
    weights, moments = lora_state(trainer), adam_state(trainer)
    second = trainer.train_step()
    assert all(torch.equal(weights[n], v) for n, v in lora_state(trainer).items())
    assert all(torch.equal(a, b) for a, b in zip(moments, adam_state(trainer), strict=True))
    third = trainer.train_step()
    assert not all(torch.equal(weights[n], v) for n, v in lora_state(trainer).items())
    assert [first["train/skipped_steps"], second["train/skipped_steps"], third["train/skipped_steps"]] == [0, 1, 1]
    assert trainer.skipped_in_a_row == 0


def test_nan_from_the_judge_stops_the_run_after_max_skipped_steps(tmp_path, embedded_tokenizer, monkeypatch):
    from frost.judge import Judge

    trainer = Trainer(
        tiny_config(tmp_path, steps=2, val_every=0, checkpoint_every=1), base=tiny_base(embedded_tokenizer)
    )
    trainer.run(progress=False)  # two good steps, checkpointed
    saved = lora_state(trainer)
    real = Judge._target_logprobs

    def nan_logprobs(self, logits, targets):
        return real(self, logits, targets) * float("nan")

    monkeypatch.setattr(Judge, "_target_logprobs", nan_logprobs)
    trainer.config.train.steps = 8
    with pytest.raises(TrainingError, match="max_skipped_steps"):
        trainer.run(progress=False)
    assert trainer.step == 5 and trainer.skipped_in_a_row == 3
    assert all(torch.equal(saved[n], v) for n, v in lora_state(trainer).items())
    assert [m["train/skipped_steps"] for m in read_metrics(tmp_path)] == [0, 0, 1, 2, 3]
    # the checkpoints of the skipped steps hold the adapter of step 2: nothing non-finite reached them
    from safetensors.torch import load_file

    latest = load_file(str(checkpoint.resolve_checkpoint(tmp_path)[1] / "adapter_model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in latest.values())
    by_suffix = {n.split("base_model.model.")[-1].replace(".default", ""): v for n, v in saved.items()}
    assert all(torch.equal(v, by_suffix[k.split("base_model.model.")[-1]]) for k, v in latest.items())


def test_a_second_signal_stops_at_once_and_the_last_checkpoint_loads(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "frost.cli", "train", "--steps", "500", "--run-dir", str(run), "--threads", "1",
            "--no-progress", "--set", "model.name=qwen3-tiny-shape", "--set", "model.device=cpu", "--set",
            "data.source=handwritten", "--set", "data.validation_size=2", "--set", "train.val_every=0", "--set",
            "train.checkpoint_every=1", "--set", "train.K=2", "--set", "lora.rank=4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoints" / "latest").is_file():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _, path = checkpoint.resolve_checkpoint(run)
    assert (path / "adapter_model.safetensors").is_file() and (path / "state.json").is_file()
    assert path.name.startswith("step-")


class NotData:
    """Anything a weights-only unpickler must refuse."""


def test_a_checkpoint_holding_code_is_refused_with_one_line(tmp_path, embedded_tokenizer):
    trainer = Trainer(
        tiny_config(tmp_path, steps=1, val_every=0, checkpoint_every=1), base=tiny_base(embedded_tokenizer)
    )
    trainer.run(progress=False)
    _, path = checkpoint.resolve_checkpoint(tmp_path)
    torch.save({"generator": None, "torch": torch.get_rng_state(), "python": NotData(), "cuda": None}, path / "rng.pt")
    with pytest.raises(ConfigError, match="refusing to unpickle"):
        Trainer(tiny_config(tmp_path, steps=2, val_every=0), base=tiny_base(embedded_tokenizer), resume=True)


def test_the_judge_halves_its_passes_on_out_of_memory_and_gets_the_same_results(tiny_model, monkeypatch):
    from conftest import make_instance, random_moves
    from frost.judge import Judge, JudgeOutOfMemory

    inst = make_instance(move_length=4)
    moves = random_moves(8, 4, seed=3)
    want = Judge(tiny_model, batch_size=8)
    want_scores, want_taylor = want.rewards(inst, moves), want.taylor(inst, moves)
    real = Judge._logits

    def small_memory(self, batch, rows, **kwargs):  # a device that holds at most 2 sequences per pass
        if batch.ids.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(self, batch, rows, **kwargs)

    monkeypatch.setattr(Judge, "_logits", small_memory)
    judge = Judge(tiny_model, batch_size=8)
    with pytest.warns(UserWarning) as caught:
        taylor = judge.taylor(inst, moves)
    assert [str(w.message) for w in caught] == [
        "judge: out of memory at 8 sequences per pass; continuing with 4",
        "judge: out of memory at 4 sequences per pass; continuing with 2",
    ]
    assert judge.batch_size == 2 and judge.backward_sequences == 8 and judge.forward_sequences == 8
    assert torch.allclose(taylor.rewards, want_taylor.rewards, atol=1e-5)
    assert taylor.grad is not None and want_taylor.grad is not None
    assert torch.allclose(taylor.grad, want_taylor.grad, atol=1e-5)
    assert torch.allclose(judge.rewards(inst, moves), want_scores, atol=1e-5)

    def no_memory(self, batch, rows, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(Judge, "_logits", no_memory)
    with pytest.warns(UserWarning), pytest.raises(JudgeOutOfMemory, match="one sequence per pass"):
        Judge(tiny_model, batch_size=4).rewards(inst, moves)


def test_the_loss_halves_its_passes_on_out_of_memory_and_gets_the_same_step(tmp_path, embedded_tokenizer, monkeypatch):
    import frost.step as step_module
    from frost.step import LossOutOfMemory

    base = tiny_base(embedded_tokenizer)
    want = Trainer(tiny_config(tmp_path / "want", steps=1, val_every=0, batch_size=4, micro_batch=1), base=base)
    want_metrics = want.train_step()
    base = tiny_base(embedded_tokenizer)
    trainer = Trainer(tiny_config(tmp_path / "got", steps=1, val_every=0, batch_size=4, micro_batch=4), base=base)
    real = step_module.policy_distributions_batch
    pairs = []

    def small_memory(player, prompts, moves, **kwargs):  # fits 1 text, and the first 2 texts (policy + reference)
        pairs.extend([len(prompts)] if len(prompts) == 2 else [])
        if len(prompts) > 2 or (len(prompts) == 2 and len(pairs) > 2):
            raise torch.OutOfMemoryError("simulated")
        return real(player, prompts, moves, **kwargs)

    monkeypatch.setattr(step_module, "policy_distributions_batch", small_memory)
    with pytest.warns(UserWarning) as caught:
        got_metrics = trainer.train_step()  # texts 0-1 back-propagate before 2-3 run out: their gradient is undone
    assert [str(w.message) for w in caught] == [
        "loss: out of memory at 4 texts per pass; continuing with 2",
        "loss: out of memory at 2 texts per pass; continuing with 1",
    ]
    assert trainer.settings.text_batch == 1
    assert strip_times([got_metrics]) == strip_times([want_metrics])
    got, expected = lora_state(trainer), lora_state(want)
    assert all(torch.allclose(got[n], expected[n], atol=1e-6) for n in expected)

    monkeypatch.setattr(step_module, "policy_distributions_batch", lambda *a, **k: (_ for _ in ()).throw(
        torch.OutOfMemoryError("simulated")))  # fmt: skip
    with pytest.raises(LossOutOfMemory, match="one text per policy pass"):
        trainer.train_step()
