"""Decoding over a static KV cache (`frost.decode`): the path CUDA graphs capture, checked on the CPU against the
eager decode, its reuse across steps, its fallback, and a training run that uses it."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import make_tiny_llama
from frost.decode import StaticDecoder, cache_length, resolve_decode, static_decoder
from frost.errors import ConfigError
from frost.models import load_model
from frost.sampling import sample_moves_batch

PROMPTS = [[1, 5, 6, 7, 8, 9, 10], [1, 3, 4], [2] * 11]  # different lengths: left padding


def lora(model, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    player = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))  # fmt: skip
    return player.eval()


def sample(model, mode: str, k: int = 4, length: int = 6, stops=(None, 7, None), prompts=PROMPTS, forbidden=None):
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return sample_moves_batch(model, prompts, k, length, generator=gens, decode=mode, stop_ids=list(stops),
                              forbidden=forbidden)  # fmt: skip


def assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.moves, y.moves)
        assert torch.allclose(x.logprobs.exp(), y.logprobs.exp(), atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_static_decode_equals_eager_with_padding_stops_and_lora(attention):
    base = make_tiny_llama()
    base.config._attn_implementation = attention
    player = lora(base)
    vocab = player.get_input_embeddings().weight.shape[0]
    few = torch.ones(vocab, dtype=torch.bool)
    few[[5, 6, 7]] = False  # only three tokens allowed, so the stop (7) is drawn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback happened
        static = sample(player, "static")
        static_stops = sample(player, "static", forbidden=few)
    assert_same(sample(player, "eager"), static)
    assert_same(sample(player, "eager", forbidden=few), static_stops)
    stopped = static_stops[1].moves
    assert bool((stopped == 7).any()) and bool((stopped[:, -1] == 7).any())  # drawn, then held to the end


def test_static_decode_on_qwen3_and_the_embedded_model(embedded):
    qwen = lora(load_model("qwen3-tiny-shape", device="cpu").model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(sample(qwen, "eager"), sample(qwen, "static"))
    prompts = [embedded.tokenizer("Once upon a time")["input_ids"], embedded.tokenizer("A cat")["input_ids"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        static = sample(embedded.model, "static", k=3, length=5, stops=(None, None), prompts=prompts)
    assert_same(sample(embedded.model, "eager", k=3, length=5, stops=(None, None), prompts=prompts), static)


def test_a_decoder_is_kept_and_follows_the_adapter_weights():
    player = lora(make_tiny_llama())
    sample(player, "static")
    decoders = dict(player.frost_static_decoders)
    assert len(decoders) == 1
    with torch.no_grad():  # an optimizer step changes the LoRA weights in place
        for name, p in player.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    static = sample(player, "static")
    assert player.frost_static_decoders == decoders  # the same decoder (and, on CUDA, the same capture)
    assert_same(sample(player, "eager"), static)
    with player.disable_adapter():  # another adapter state gets its own decoder
        assert_same(sample(player, "eager"), sample(player, "static"))
    assert len(player.frost_static_decoders) == 2


def test_a_failing_static_path_warns_once_and_decodes_eagerly_with_the_same_draws(monkeypatch):
    player = lora(make_tiny_llama())
    want = sample(player, "eager")

    def broken(self, *args, **kwargs):
        raise RuntimeError("no static cache for this model")

    monkeypatch.setattr(StaticDecoder, "load", broken)
    with pytest.warns(UserWarning, match=r"model\.decode static: RuntimeError: no static cache"):
        got = sample(player, "static")
    assert_same(want, got)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the model decodes eagerly from now on
        assert_same(want, sample(player, "static"))
    assert resolve_decode("static", player, torch.device("cpu")) == "eager"


def test_modes_resolve_by_device_and_graphs_needs_cuda():
    model = make_tiny_llama()
    assert resolve_decode("auto", model, torch.device("cpu")) == "eager"
    assert resolve_decode("auto", model, torch.device("cuda")) == "graphs"
    assert resolve_decode("static", model, torch.device("cpu")) == "static"
    with pytest.raises(ConfigError, match=r"model\.decode: graphs needs a CUDA device"):
        sample(model, "graphs")
    with pytest.raises(ConfigError, match=r"model\.decode must be one of"):
        resolve_decode("fast", model, torch.device("cpu"))
    assert cache_length(169, 8) == 192 and cache_length(184, 8) == 192 and cache_length(185, 8) == 256


def test_train_mode_is_never_captured():
    player = lora(make_tiny_llama())
    player.train()
    assert not static_decoder(player, 4, 64, captured=True).captured


def test_training_with_the_static_decode_equals_eager(tmp_path):
    from frost.config import config_from_dict
    from frost.run.trainer import Trainer

    def run(mode: str) -> list[dict]:
        sections = {
            "model": {"name": "qwen3-tiny-shape", "device": "cpu", "decode": mode},
            "lora": {"rank": 4, "alpha": 8},
            "data": {"source": "handwritten", "validation_size": 2},
            "train": {"algorithm": "frost", "K": 2, "batch_size": 2, "steps": 2, "val_every": 2, "val_samples": 2,
                      "val_documents": 2, "checkpoint_every": 0, "run_dir": str(tmp_path / mode)},
            "optim": {"lr": 0.01},
        }  # fmt: skip
        trainer = Trainer(config_from_dict(sections))
        trainer.run(progress=False)
        trainer.close()
        return [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]

    eager, static = run("eager"), run("static")
    assert len(eager) == len(static) >= 3
    for a, b in zip(eager, static, strict=True):
        for key in ("reward", "loss", "kl", "val/best_of_2"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), key


def replaying_stand_in(step, rewind, model, noise: float = 0.0):
    """A CUDA graph's stand-in on the CPU: 'capturing' runs the step once, each replay runs it again into the same
    output tensor (plus `noise`, to play a capture that went wrong). As a real graph reads the memory it was captured
    on, each replay reads every parameter from the tensor it held at the capture: weights written in place (an
    optimizer step) are seen, weights rebound to new tensors after the capture are not (stale)."""
    out = step()
    held = [(p, p.data) for p in model.parameters()]

    def replay() -> None:
        now = [p.data for p, _ in held]
        for p, captured in held:
            p.data = captured
        try:
            out.copy_(step() + noise)
        finally:
            for (p, _), tensor in zip(held, now, strict=True):
                p.data = tensor

    return replay, out


def captured_sample(player, monkeypatch, noise: float = 0.0):
    """Sample as `graphs` does on CUDA, with the stand-in capture."""
    import frost.sampling

    real_init = StaticDecoder.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.capture = lambda step, rewind: replaying_stand_in(step, rewind, self.model, noise)

    monkeypatch.setattr(StaticDecoder, "__init__", init)
    real_resolve = frost.sampling.resolve_decode

    def resolve(mode, model, device):  # `graphs` wherever the static path runs; other modes as they are
        static = real_resolve("static", model, device) == "static"
        return "graphs" if mode == "graphs" and static else real_resolve(mode, model, device)

    monkeypatch.setattr(frost.sampling, "resolve_decode", resolve)
    got = sample(player, "graphs")
    decoders = list(getattr(player, "frost_static_decoders", {}).values())
    return got, decoders


def test_the_captured_path_rewinds_the_cache_and_replays_every_step(monkeypatch):
    """What `graphs` does around the capture (warm-up, check against the eager step, rewinds, replays), with the
    graph played by a stand-in: the same moves as eager decoding, step after step and call after call."""
    player = lora(make_tiny_llama())
    want = sample(player, "eager")
    got, decoders = captured_sample(player, monkeypatch)
    assert len(decoders) == 1 and decoders[0].captured and decoders[0].replay is not None
    assert_same(want, got)
    replay = decoders[0].replay
    assert_same(want, sample(player, "graphs"))  # the next call replays the same capture
    assert decoders[0].replay is replay


def test_a_capture_replays_with_the_lora_weights_an_optimizer_step_wrote(monkeypatch):
    """Training updates the LoRA weights between samplings while the capture is kept: the optimizer writes them in
    place, so the replayed graph samples from the new policy, as eager decoding does. Weights rebound to new tensors
    after the capture would be stale in a real graph, and the stand-in shows it."""
    player = lora(make_tiny_llama())
    _, decoders = captured_sample(player, monkeypatch)
    replay = decoders[0].replay
    trained = [p for p in player.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=0.5)
    for p in trained:
        p.grad = torch.randn_like(p)
    optimizer.step()
    want = sample(player, "eager")
    assert_same(want, sample(player, "graphs"))
    assert decoders[0].replay is replay  # the same capture, replayed with the new weights
    for p in trained:  # rebinding (not the trainer's way): the capture keeps reading the old tensors
        p.data = p.data * 3
    stale = sample(player, "graphs")
    now = sample(player, "eager")
    assert not all(torch.allclose(a.logprobs, b.logprobs, atol=1e-3) for a, b in zip(now, stale, strict=True))


def test_a_capture_that_disagrees_with_the_eager_step_falls_back(monkeypatch):
    player = lora(make_tiny_llama())
    want = sample(player, "eager")
    with pytest.warns(UserWarning, match="differ from the eager step"):
        got, _ = captured_sample(player, monkeypatch, noise=0.5)
    assert_same(want, got)
    assert resolve_decode("static", player, torch.device("cpu")) == "eager"  # eager from now on
