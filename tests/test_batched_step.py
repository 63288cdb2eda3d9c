"""Every phase batched across the texts of a step gives what one text at a time gives: sampling distributions,
judge scores, Taylor results, children, policy and reference distributions, the loss and its gradient. Plus the
same-path replacement on bf16 and the automatic micro-batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import make_instance, make_tiny_llama, random_moves
from frost.games import GameInstance, build_game, encode_plain
from frost.judge import Judge
from frost.moves import content_lengths, move_masks
from frost.proposal import Candidates, replace
from frost.sampling import (
    PromptBatch,
    SampledMoves,
    player_logprobs,
    policy_distributions,
    policy_distributions_batch,
    sample_moves_batch,
)
from frost.step import GroupSettings, play_step, step_loss
from test_games import STORY

L = 6
ATOL = 2e-5


@pytest.fixture
def mixed_instances(char_tokenizer) -> list[GameInstance]:
    """Texts of different prompt and judge lengths, a game with a stop token and sign +1, fixed-length ones with
    sign +1 and -1, and one whose move starts the judge sequence."""
    title = build_game("title", char_tokenizer, {"move_length": L, "text_tokens": 30, "exact_length": False}).instance(
        encode_plain(char_tokenizer, STORY)
    )
    assert title is not None
    a = make_instance(move_length=L, prefix_len=3, suffix_len=9, seed=4)
    b = dataclasses.replace(make_instance(move_length=L, prefix_len=7, suffix_len=5, seed=5), sign=-1)
    d = make_instance(move_length=L, prefix_len=1, suffix_len=6, seed=6)
    c = GameInstance(prompt_ids=d.prompt_ids[:11], judge_prefix=(), judge_suffix=d.judge_suffix, move_length=L,
                     score_move=False)  # fmt: skip
    return [title, a, b, c]


def moves_for(inst: GameInstance, k: int, seed: int) -> torch.Tensor:
    """K valid moves of an instance: content tokens the instance allows, variable lengths for stop games."""
    allowed = (~move_masks(inst, torch.zeros(97, dtype=torch.bool)).content).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    rows = allowed[torch.randint(0, len(allowed), (k, L), generator=g)]
    if inst.stop_id is not None:
        rows = torch.tensor([inst.pad_move(r[: 1 + (n % L)]) for n, r in enumerate(rows.tolist())])
    return rows


def test_left_padded_prompts_have_masks_and_restarting_positions():
    batch = PromptBatch.build([[5, 6, 7], [8]], torch.device("cpu"))
    assert batch.ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.mask is not None and batch.mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.positions is not None and batch.positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    step = batch.continuation(2, 2)
    assert step["position_ids"].tolist() == [[3, 4], [3, 4], [1, 2], [1, 2]]
    assert PromptBatch.build([[1, 2], [3, 4]], torch.device("cpu")).mask is None


def test_batched_sampling_keeps_each_prompts_own_distributions(tiny_model, mixed_instances):
    masks = [move_masks(inst, torch.zeros(97, dtype=torch.bool)) for inst in mixed_instances]
    out = sample_moves_batch(
        tiny_model,
        [inst.prompt_ids for inst in mixed_instances],
        5,
        L,
        temperature=1.3,
        forbidden=[m.sampling for m in masks],
        stop_ids=[inst.stop_id for inst in mixed_instances],
        generator=torch.Generator().manual_seed(0),
    )
    assert len(out) == len(mixed_instances)
    for inst, mask, sampled in zip(mixed_instances, masks, out, strict=True):
        # the kept distributions are what a separate forward over this prompt + move gives
        again = player_logprobs(tiny_model, inst.prompt_ids, sampled.moves, temperature=1.3, forbidden=mask.sampling)
        n = content_lengths(inst, sampled.moves)
        decided = torch.arange(L).view(1, -1) <= n.view(-1, 1)
        finite = torch.isfinite(again)
        assert torch.equal(finite[decided], torch.isfinite(sampled.logprobs)[decided])
        assert torch.allclose(sampled.logprobs[decided][finite[decided]], again[decided][finite[decided]], atol=ATOL)
        taken = mask.sampling.unsqueeze(0).expand(5, -1, -1).gather(-1, sampled.moves.unsqueeze(-1)).squeeze(-1)
        assert not bool(taken[decided].any())  # no forbidden token was ever sampled
        if inst.stop_id is not None:
            for row, length in zip(sampled.moves.tolist(), n.tolist(), strict=True):
                assert all(t == inst.stop_id for t in row[length:])


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_batched_policy_pass_equals_one_prompt_at_a_time_in_values_and_gradients(mixed_instances, shared_prompt):
    model = make_tiny_llama(seed=7)
    weight = model.model.layers[0].mlp.up_proj.weight
    weight.requires_grad_(True)
    masks = [move_masks(inst, torch.zeros(97, dtype=torch.bool)).sampling for inst in mixed_instances]
    groups = [moves_for(inst, 3, seed=n) for n, inst in enumerate(mixed_instances)]
    prompts = [inst.prompt_ids for inst in mixed_instances]
    batched = policy_distributions_batch(model, prompts, groups, forbidden=masks, shared_prompt=shared_prompt)
    picked = sum((d.gather(-1, g.unsqueeze(-1)).sum() for d, g in zip(batched, groups, strict=True)), torch.zeros(()))
    (grad_batched,) = torch.autograd.grad(picked, weight)
    total = torch.zeros(())
    for prompt, group, mask, dist in zip(prompts, groups, masks, batched, strict=True):
        alone = policy_distributions(model, prompt, group, forbidden=mask, shared_prompt=shared_prompt)
        finite = torch.isfinite(alone)
        assert torch.equal(finite, torch.isfinite(dist))
        assert torch.allclose(dist[finite], alone[finite], atol=ATOL)
        total = total + alone.gather(-1, group.unsqueeze(-1)).sum()
    (grad_alone,) = torch.autograd.grad(total, weight)
    assert torch.allclose(grad_batched, grad_alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch_size", [16, 5])
def test_judge_batched_across_texts_equals_one_text_at_a_time(tiny_model, mixed_instances, batch_size):
    judge = Judge(tiny_model, batch_size=batch_size)
    items = [(inst, moves_for(inst, 4, seed=10 + n)) for n, inst in enumerate(mixed_instances)]
    items[1] = (items[1][0], torch.cat([items[1][1], items[1][1][:2]]))  # duplicates are scored once
    many = judge.score_many(items)
    taylors = judge.taylor_many(items)
    distinct = sum(torch.unique(moves, dim=0).shape[0] for _, moves in items)
    assert judge.backward_sequences == distinct < sum(moves.shape[0] for _, moves in items)
    duplicated = taylors[1]
    assert duplicated.grad is not None and torch.equal(duplicated.grad[-2:], duplicated.grad[:2])
    for (inst, moves), scores, taylor in zip(items, many, taylors, strict=True):
        alone = Judge(tiny_model, batch_size=1)
        single = alone.score(inst, moves)
        assert torch.allclose(scores.rewards, single.rewards, atol=ATOL)
        assert torch.equal(scores.scored, single.scored) and torch.equal(scores.in_move, single.in_move)
        one = alone.taylor(inst, moves)
        assert torch.allclose(taylor.rewards, one.rewards, atol=ATOL)
        assert torch.allclose(taylor.rewards, single.rewards, atol=ATOL)
        assert taylor.grad is not None and one.grad is not None
        assert torch.allclose(taylor.grad, one.grad, atol=ATOL)
        assert torch.allclose(taylor.judge_logprobs, one.judge_logprobs, atol=ATOL)
        assert torch.equal(taylor.valid, one.valid) and taylor.sign == inst.sign


class FixedSampler:
    """Returns the same pre-drawn moves and distributions, so two step layouts can be compared move for move."""

    def __init__(self, player, insts, k: int) -> None:
        masks = [move_masks(inst, torch.zeros(97, dtype=torch.bool)) for inst in insts]
        self.by_prompt = {}
        for n, (inst, mask) in enumerate(zip(insts, masks, strict=True)):
            moves = moves_for(inst, k, seed=20 + n)
            dists = player_logprobs(player, inst.prompt_ids, moves, forbidden=mask.sampling)
            self.by_prompt[inst.prompt_ids] = SampledMoves(moves=moves, logprobs=dists)

    def __call__(self, player, insts, k, masks, temperature, generator):
        return [self.by_prompt[inst.prompt_ids] for inst in insts]


@pytest.mark.parametrize("algorithm", ["frost", "grpo"])
def test_play_step_and_loss_batched_equal_one_text_at_a_time(mixed_instances, algorithm):
    from peft import LoraConfig, get_peft_model

    player = get_peft_model(
        make_tiny_llama(seed=8),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    player.eval()
    judge = Judge(player, context=player.disable_adapter)
    sampler = FixedSampler(player, mixed_instances, 4)
    results = {}
    for text_batch in (0, 1):
        settings = GroupSettings(algorithm=algorithm, K=4, rule="full-gated", budget=3, tau=1e-3, text_batch=text_batch)
        player.zero_grad()
        records = play_step(
            player, judge, mixed_instances, settings, base_forbidden=torch.zeros(97, dtype=torch.bool),
            sampler=sampler,
        )  # fmt: skip
        terms = step_loss(player, records, settings, reference=player.disable_adapter, scale=0.25)
        grads = [p.grad.clone() for p in player.parameters() if p.requires_grad]
        results[text_batch] = (records, terms, grads)
    (rec_b, terms_b, grads_b), (rec_1, terms_1, grads_1) = results[0], results[1]
    for a, b, ta, tb in zip(rec_b, rec_1, terms_b, terms_1, strict=True):
        assert torch.equal(a.moves, b.moves)
        assert torch.allclose(a.rewards, b.rewards, atol=ATOL)
        assert torch.allclose(a.parent_rewards, b.parent_rewards, atol=ATOL)
        if algorithm == "frost":
            assert a.frost is not None and b.frost is not None
            assert torch.equal(a.frost.candidates.token, b.frost.candidates.token)
            assert torch.equal(a.frost.chosen, b.frost.chosen)
        # rewards agree to 2e-5 (fp32 rounding: padded and unpadded prefixes), moves weigh ~30 nats in the loss
        assert ta.loss.item() == pytest.approx(tb.loss.item(), abs=6e-4)
        assert ta.kl == pytest.approx(tb.kl, abs=1e-6)
    for ga, gb in zip(grads_b, grads_1, strict=True):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
    if algorithm == "frost":  # the comparison covers replaced parents, not only proposals
        replaced = [r.frost is not None and bool((r.frost.chosen >= 0).any()) for r in rec_b]
        assert any(replaced), replaced


def test_a_child_identical_to_its_parent_never_replaces_it_on_bf16():
    model = make_tiny_llama(dtype=torch.bfloat16, seed=9)
    judge = Judge(model, batch_size=3)
    inst = make_instance(move_length=L, prefix_len=5, suffix_len=20, seed=11)
    parents = random_moves(5, L, seed=12)
    taylor = judge.taylor(inst, parents)
    assert judge.dtype == torch.bfloat16
    # every "mutation" writes back the parent's own token: each child is its parent
    parent = torch.arange(5).repeat_interleave(2)
    position = torch.tensor([0, 3] * 5)
    token = parents[parent, position]
    cands = Candidates(parent, position, token, torch.zeros(10), torch.zeros(10))
    record = replace(judge, inst, taylor.moves, taylor.rewards, cands)
    assert bool((record.chosen == -1).all())
    assert torch.equal(record.child_rewards, record.parent_rewards[parent])
    # the Taylor pass (inputs_embeds, with gradients) and the ids pass are two numeric paths on bf16: compared
    # across them, the same move can look "strictly better"
    separate = judge.rewards(inst, parents)
    assert torch.equal(record.parent_rewards, separate)


def test_micro_batch_is_every_text_on_the_cpu(tmp_path, embedded_tokenizer):
    from frost.run.trainer import Trainer
    from test_trainer import tiny_base, tiny_config

    trainer = Trainer(tiny_config(tmp_path, steps=1, val_every=0), base=tiny_base(embedded_tokenizer))
    assert trainer.settings.text_batch == trainer.config.train.batch_size


@pytest.mark.parametrize("n_texts", [1, 3])
def test_judge_prefix_cache_equals_full_sequences(mixed_instances, n_texts):
    """Moves run from each text's prefix KV cache (left-padded prefixes of different lengths, stop-token and fixed
    moves, both signs) give the full forward's log-probabilities, rewards, gradients and position terms."""
    model = make_tiny_llama(seed=3)
    items = [(inst, moves_for(inst, 5, seed=40 + n)) for n, inst in enumerate(mixed_instances[:n_texts])]
    cached, full = Judge(model, prefix_cache=True), Judge(model, prefix_cache=False)
    rows = [(n, inst, m) for n, (inst, moves) in enumerate(items) for m in moves.tolist()]
    assert cached._cached(rows, len(items)) and not full._cached(rows, len(items))
    for a, b in zip(cached.score_many(items), full.score_many(items), strict=True):
        assert torch.equal(a.scored, b.scored)
        assert torch.allclose(a.logprobs, b.logprobs, atol=2e-5)
    for a, b in zip(cached.taylor_many(items), full.taylor_many(items), strict=True):
        assert torch.allclose(a.rewards, b.rewards, atol=2e-5)
        assert a.grad is not None and b.grad is not None
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)
        assert torch.allclose(a.judge_logprobs, b.judge_logprobs, atol=2e-5)
    empty_prefix = mixed_instances[3]
    assert not cached._cached([(0, empty_prefix, [1] * L)] * 2, 1)  # the move starts the judge: no prefix to cache
    auto = Judge(model)  # by default only where the prefix tokens saved reach the tokens each row still runs
    long_prefix = make_instance(move_length=L, prefix_len=30, suffix_len=4, seed=9)
    assert auto._cached([(0, long_prefix, [1] * L)] * 4, 1) and not auto._cached(rows, len(items))


def test_parents_are_rescored_beside_their_children_wherever_matmuls_round():
    """bf16 and fp16 judges, and float32 on CUDA with TF32 on (which `frost.models` turns on), compare a child with
    its parent re-scored in the same pass; float32 on the CPU and float64 compare with the Taylor pass's reward."""
    from frost.proposal import needs_same_path

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert needs_same_path(torch.bfloat16, cpu) and needs_same_path(torch.float16, cuda)
    assert not needs_same_path(torch.float64, cuda)
    precision, tf32 = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert needs_same_path(torch.float32, cuda) and not needs_same_path(torch.float32, cpu)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        assert not needs_same_path(torch.float32, cuda) and not needs_same_path(torch.float32, cpu)
        torch.set_float32_matmul_precision("high")  # TF32 allowed through the precision setting
        assert needs_same_path(torch.float32, cuda)
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cuda.matmul.allow_tf32 = tf32


def test_same_path_rescores_every_parent_of_a_text_so_its_group_has_one_numeric_path(monkeypatch):
    """With `same_path`, a group's rewards (hence its advantages) all come from the children's pass, also for the
    parents that have no child; a text without children keeps the Taylor pass's rewards for all its parents; the
    re-scored rows are judge forward sequences and `rescored` counts them. The Taylor pass is given an offset here,
    standing in for a second numeric path (inputs_embeds with gradients on a bf16 judge)."""
    from frost.judge import TaylorResult
    from frost.proposal import FrostInput, frost_step_batch

    class OtherPath(TaylorResult):
        @property
        def rewards(self) -> torch.Tensor:
            return self.scores.rewards + 0.5

    model = make_tiny_llama(seed=9)
    judge = Judge(model, batch_size=4)
    real = judge.taylor_many

    def other_path(items, **kw):
        out = real(items, **kw)
        return [OtherPath(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)}) for t in out]

    monkeypatch.setattr(judge, "taylor_many", other_path)
    with_children = make_instance(move_length=L, prefix_len=5, suffix_len=12, seed=11)
    without = make_instance(move_length=L, prefix_len=4, suffix_len=10, seed=12)
    parents = [random_moves(5, L, seed=13), random_moves(5, L, seed=14)]
    exact = [judge.rewards(with_children, parents[0]), judge.rewards(without, parents[1])]
    every_token = torch.ones(model.config.vocab_size, dtype=torch.bool)
    texts = [FrostInput(with_children, parents[0], None), FrostInput(without, parents[1], None, every_token)]
    # the random rule proposes D=2 children of random parents for one text (at least 3 parents have none), and none
    # for the other (every token forbidden)
    fwd = judge.forward_sequences
    records = frost_step_batch(
        judge, texts, rule="random", budget=2, generator=torch.Generator().manual_seed(0), same_path=True
    )
    children = len(torch.unique(records[0].candidates.children(parents[0]), dim=0))
    assert records[0].rescored == 5 and records[1].rescored == 0
    childless = sorted(set(range(5)) - set(records[0].candidates.parent.tolist()))
    assert childless  # the check below covers parents without a child
    assert torch.allclose(records[0].parent_rewards, exact[0], atol=ATOL)  # every parent, from the children's pass
    kept = records[0].chosen < 0
    assert torch.allclose(records[0].rewards[kept], exact[0][kept], atol=ATOL)
    assert torch.allclose(records[1].rewards, exact[1] + 0.5)  # no children: the Taylor pass's rewards, all of them
    assert judge.forward_sequences - fwd == 10 + children + 5  # the Taylor pass, the children, the parents again
