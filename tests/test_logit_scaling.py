"""Model families whose causal-LM head post-processes its logits (Granite divides by `logits_scaling`, Cohere
multiplies by `logit_scale`): the judge's rewards, Taylor pass, prefix-cached pass and the policy's distributions
must equal a plain forward of the model, which applies it."""

from __future__ import annotations

import pytest
import torch

from conftest import make_instance, random_moves
from frost.judge import Judge
from frost.sampling import policy_distributions
from test_judge import naive_reward


def tiny(family: str):
    torch.manual_seed(0)
    common = {
        "vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 2,
    }  # fmt: skip
    if family == "granite":
        from transformers import GraniteConfig, GraniteForCausalLM

        model = GraniteForCausalLM(GraniteConfig(**common, logits_scaling=4.0))
    else:
        from transformers import CohereConfig, CohereForCausalLM

        model = CohereForCausalLM(CohereConfig(**common, logit_scale=0.25))
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.3)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("family", ["granite", "cohere"])
@pytest.mark.parametrize("prefix_cache", [False, True])
def test_rewards_and_taylor_pass_apply_the_models_logit_scaling(family, prefix_cache):
    model = tiny(family)
    inst = make_instance(move_length=4, prefix_len=12, suffix_len=3)
    moves = random_moves(3, inst.move_length)
    judge = Judge(model, prefix_cache=prefix_cache)
    want = torch.tensor([naive_reward(model, inst, m.tolist()) for m in moves], dtype=torch.float64)
    unscaled = torch.tensor([naive_reward(_without_scaling(model), inst, m.tolist()) for m in moves])
    assert (want - unscaled).abs().max() > 0.1  # the scaling matters for these rewards
    assert torch.allclose(judge.rewards(inst, moves).double(), want, atol=1e-4)
    assert torch.allclose(judge.taylor(inst, moves).rewards.double(), want, atol=1e-4)


@pytest.mark.parametrize("family", ["granite", "cohere"])
def test_policy_distributions_apply_the_models_logit_scaling(family):
    model = tiny(family)
    prompt = tuple(range(5, 25))
    moves = random_moves(2, 3)
    dists = policy_distributions(model, prompt, moves)
    with torch.no_grad():
        full = model(input_ids=torch.cat([torch.tensor([prompt] * 2), moves], 1)).logits
    want = torch.log_softmax(full[:, len(prompt) - 1 : -1].float(), -1)
    assert torch.allclose(dists, want, atol=1e-5)


class _without_scaling:  # a model with its post-processing undone
    def __init__(self, model):
        self.model = model

    def __call__(self, input_ids):
        hidden = self.model.get_decoder()(input_ids=input_ids).last_hidden_state

        class Out:
            logits = self.model.get_output_embeddings()(hidden)

        return Out()
