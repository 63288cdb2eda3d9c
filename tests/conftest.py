"""Shared fixtures: a tiny randomly initialised Llama (same family as the embedded SmolLM2) and the embedded model."""

from __future__ import annotations

import types
from typing import Any, ClassVar

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from frost.games import GameInstance

TINY_VOCAB = 97


def make_tiny_llama(dtype: torch.dtype = torch.float32, seed: int = 0, vocab: int = TINY_VOCAB) -> Any:
    """A 2-layer Llama with tied embeddings, frozen and in eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # larger weights than the default init give less uniform, more informative distributions
        model.get_input_embeddings().weight.normal_(0, 0.15)
    model.eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def tiny_model() -> Any:
    return make_tiny_llama()


def _rms_norm_float64(self: Any, hidden: torch.Tensor) -> torch.Tensor:
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture(scope="session")
def tiny_model64() -> Any:
    """The tiny model in float64 end to end, for finite differences (Llama's RMSNorm rounds through float32)."""
    model = make_tiny_llama(torch.float64)
    for module in model.modules():
        if type(module).__name__ == "LlamaRMSNorm":
            module.forward = types.MethodType(_rms_norm_float64, module)
    return model


def make_instance(move_length: int = 4, prefix_len: int = 5, suffix_len: int = 7, seed: int = 1) -> GameInstance:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_VOCAB, (20 + prefix_len + suffix_len,), generator=g).tolist()
    return GameInstance(
        prompt_ids=tuple(ids[:20]),
        judge_prefix=tuple(ids[20 : 20 + prefix_len]),
        judge_suffix=tuple(ids[20 + prefix_len :]),
        move_length=move_length,
    )


@pytest.fixture
def instance() -> GameInstance:
    return make_instance()


def random_moves(k: int, length: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, TINY_VOCAB, (k, length), generator=g)


@pytest.fixture(scope="session")
def embedded() -> Any:
    from frost.models import load_model

    return load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def embedded_tokenizer() -> Any:
    from frost.models import load_tokenizer

    return load_tokenizer("embedded")


class TinyCharTokenizer:
    """A character tokenizer whose ids fit the tiny model's vocabulary: 0 `<|endoftext|>`, 1 `<|im_start|>`,
    2 `<|im_end|>` (EOS), then one id per character. No chat template, no BOS on plain text."""

    CHARS = "\n !\"',.:?-" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "0123456789"
    chat_template = None
    bos_token_id = 1
    eos_token_id = 2
    pad_token_id = 2
    all_special_ids: ClassVar[list[int]] = [0, 1, 2]
    added_tokens_decoder: ClassVar[dict[int, Any]] = {}

    def __init__(self) -> None:
        self.ids = {c: i + 3 for i, c in enumerate(self.CHARS)}
        self.chars = {i: c for c, i in self.ids.items()} | {0: "<|endoftext|>", 1: "<|im_start|>", 2: "<|im_end|>"}

    def __len__(self) -> int:
        return TINY_VOCAB

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [self.ids[c] for c in text if c in self.ids]}

    def decode(self, ids: Any) -> str:
        return "".join(self.chars.get(int(i), "") for i in ids)

    def get_vocab(self) -> dict[str, int]:
        return {v: k for k, v in self.chars.items()}


@pytest.fixture(scope="session")
def char_tokenizer() -> TinyCharTokenizer:
    return TinyCharTokenizer()


def plain_reward(model: Any, ids: list[int], scored: list[int], sign: int = 1) -> float:
    """An independent reward: one plain forward over hand-built ids, summing log P(ids[i] | ids[<i]) at `scored`."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lps = torch.log_softmax(logits, -1)
    return sign * float(sum(lps[i - 1, ids[i]] for i in scored))
