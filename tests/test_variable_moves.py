"""Variable-length moves and game signs through sampling, the Taylor grid, replacement and the loss; every game
through a training step; a game file through `frost train`."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from conftest import make_tiny_llama
from frost.config import config_from_dict
from frost.games import BUILTIN_GAMES, GameInstance, build_game, encode_plain
from frost.judge import Judge
from frost.losses import grpo_loss
from frost.models import LoadedModel
from frost.moves import content_lengths, decision_mask, move_masks
from frost.proposal import frost_step, select_candidates
from frost.run.trainer import Trainer
from frost.step import shared_prefix_sampler
from test_games import STORY


@pytest.fixture
def title_instance(char_tokenizer) -> GameInstance:
    game = build_game("title", char_tokenizer, {"move_length": 6, "text_tokens": 30, "exact_length": False})
    inst = game.instance(encode_plain(char_tokenizer, STORY))
    assert inst is not None
    return inst


def test_sampling_with_a_stop_token(tiny_model, title_instance):
    inst = title_instance
    masks = move_masks(inst, torch.zeros(97, dtype=torch.bool))
    sampled = shared_prefix_sampler(tiny_model, [inst], 64, [masks], 1.5, torch.Generator().manual_seed(0))[0]
    n = content_lengths(inst, sampled.moves)
    assert int(n.min()) >= 1 and int(n.max()) <= inst.move_length and len(set(n.tolist())) > 1
    for row, length in zip(sampled.moves.tolist(), n.tolist(), strict=True):
        assert all(t == inst.stop_id for t in row[length:])
        assert not any(t in inst.forbidden_ids or t == inst.stop_id for t in row[:length])
    assert bool(torch.all(sampled.logprobs[:, 0, inst.stop_id] == float("-inf")))  # never an empty move
    assert bool(torch.all(torch.isfinite(sampled.logprobs[:, 1, inst.stop_id])))


def test_grid_never_touches_slots_after_the_stop_and_own_term_is_exact(tiny_model, title_instance):
    inst = title_instance
    judge = Judge(tiny_model)
    rows = torch.tensor([inst.pad_move([10, 11]), inst.pad_move([12, 13, 14, 15, 16]), inst.pad_move([20])])
    taylor = judge.taylor(inst, rows)
    masks = move_masks(inst, torch.zeros(97, dtype=torch.bool))
    cands = select_candidates("full", taylor, None, 200, forbidden=masks.content)
    lengths = content_lengths(inst, rows)
    assert bool(torch.all(cands.position < lengths[cands.parent]))
    children = cands.children(rows)
    assert torch.equal(content_lengths(inst, children), lengths[cands.parent])
    assert not bool(masks.content[cands.token].any())
    # the full-minus-first-order difference is the exact change of the judge's own log-probability of the token
    diff = taylor.approx("full") - taylor.approx("taylor")
    first = Judge.first_target(inst)
    for k, j, v in [(0, 1, 40), (1, 3, 60), (2, 0, 70)]:
        child = rows[k].clone()
        child[j] = v
        slot = inst.move_start + j - first
        change = judge.score(inst, child[None]).logprobs[0, slot] - judge.score(inst, rows[k][None]).logprobs[0, slot]
        assert diff[k, j, v].item() == pytest.approx(change.item(), abs=1e-4)
    assert bool(torch.isinf(taylor.approx()[0, 2:]).all())  # slots after the stop are never proposed
    # exact children scores, then strict replacement
    record = frost_step(judge, inst, rows, None, rule="full", budget=8, forbidden=masks.content)
    assert torch.allclose(record.child_rewards, judge.rewards(inst, children[:8]), atol=1e-5)
    best = record.parent_rewards.clone()  # each parent keeps the best of itself and its children, by hand
    for parent, reward in zip(record.candidates.parent.tolist(), record.child_rewards, strict=True):
        best[parent] = torch.maximum(best[parent], reward)
    assert torch.equal(record.rewards, best)
    assert bool((record.chosen >= 0).any())  # some child replaced its parent
    assert torch.allclose(record.rewards, judge.rewards(inst, record.moves), atol=1e-5)  # the kept moves' own rewards


def test_sign_minus_one_negates_rewards_and_gradients(tiny_model, title_instance):
    import dataclasses

    flipped = dataclasses.replace(title_instance, sign=-1)
    rows = torch.tensor([title_instance.pad_move([10, 11, 12]), title_instance.pad_move([30, 31])])
    judge = Judge(tiny_model)
    plus, minus = judge.taylor(title_instance, rows), judge.taylor(flipped, rows)
    assert torch.allclose(minus.rewards, -plus.rewards)
    assert plus.grad is not None and minus.grad is not None
    assert torch.allclose(minus.grad, -plus.grad, atol=1e-6)
    assert torch.allclose(minus.rows_own_term(slice(0, 2)), -plus.rows_own_term(slice(0, 2)), atol=1e-6)


def test_masked_loss_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    k, length, vocab = 3, 4, 7
    policy = torch.log_softmax(torch.randn(k, length, vocab, generator=g), -1)
    reference = torch.log_softmax(torch.randn(k, length, vocab, generator=g), -1)
    moves = torch.randint(0, vocab, (k, length), generator=g)
    rewards = torch.tensor([1.0, -2.0, 0.5])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    terms = grpo_loss(policy, reference, moves, rewards, 0.3, mask=mask)
    mean = sum(rewards.tolist()) / k
    policy_term, kl = 0.0, 0.0
    for i in range(k):
        for j in range(length):
            if mask[i, j]:
                policy_term -= (rewards[i].item() - mean) * policy[i, j, moves[i, j]].item()
                p = policy[i, j].exp()
                kl += float((p * (policy[i, j] - reference[i, j])).sum())
    assert terms.policy == pytest.approx(policy_term / k, abs=1e-5)
    assert terms.kl == pytest.approx(kl / k, abs=1e-5)
    assert float(terms.loss) == pytest.approx(policy_term / k + 0.3 * kl / k, abs=1e-5)


def test_decision_mask_includes_the_stop(title_instance):
    rows = torch.tensor([title_instance.pad_move([10, 11]), title_instance.pad_move([10] * 6)])
    assert decision_mask(title_instance, rows).tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]


@pytest.mark.parametrize("game", BUILTIN_GAMES)
def test_every_builtin_game_trains_a_step(tmp_path, embedded_tokenizer, game):
    params = {
        "infilling": {"move_length": 3},
        "reverse": {"move_length": 3, "target_tokens": 12},
        "title": {"move_length": 4, "text_tokens": 24},
        "condense": {"move_length": 4, "text_tokens": 24},
        "rlp": {"move_length": 3, "context_tokens": 16, "target_tokens": 6},
    }[game]
    config = config_from_dict(
        {
            "model": {"name": "tiny"},
            "lora": {"rank": 4, "alpha": 8},
            "game": {"kind": game, **params},
            "frost": {"rule": "full-gated", "tau": 1e-3},
            "optim": {"lr": 3e-2},
            "data": {"source": "handwritten", "validation_size": 2},
            "train": {
                "K": 3,
                "batch_size": 2,
                "steps": 1,
                "val_every": 1,
                "val_samples": 2,
                "val_documents": 2,
                "run_dir": str(tmp_path),
            },
        }
    )
    model = make_tiny_llama(vocab=len(embedded_tokenizer), seed=3)
    base = LoadedModel(model, embedded_tokenizer, "tiny", torch.device("cpu"), torch.float32)
    unscored = game in ("reverse", "condense", "rlp")  # full-gated then equals taylor-gated, and says so
    with pytest.warns(UserWarning, match="position term is zero") if unscored else contextlib.nullcontext():
        trainer = Trainer(config, base=base)
    trainer.run(progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in records if "reward" in r)
    assert step["reward"] >= step["reward_parents_mean"] - 1e-6
    assert 1 <= step["completions/mean_length"] <= params["move_length"]
    assert (tmp_path / "game.yaml").is_file() and (tmp_path / "checkpoints" / "latest").is_file()


GAME_FILE = (
    "name: next-words\n"
    "move: {max_length: 3, stop: eos}\n"
    "forbid: [newlines]\n"
    "player: 'Name the topic of this text in at most {move_length} tokens: {doc:0:24}'\n"
    "judge:\n  - start: true\n  - text: 'Topic:'\n  - move: true\n  - text: '. '\n"
    "  - doc: [0, 24]\n    scored: true\n"
)


@pytest.mark.embedded
def test_frost_train_on_a_game_file_writes_a_run(tmp_path):
    from frost.cli import main

    game = tmp_path / "next-words.yaml"
    game.write_text(GAME_FILE)
    run = tmp_path / "run"
    argv = ["train", "--game", str(game), "--steps", "1", "--run-dir", str(run), "--no-progress", "--threads", "2",
            "--set", "train.K=2", "--set", "train.batch_size=1", "--set", "train.val_every=0",
            "--set", "data.source=handwritten", "--set", "data.validation_size=1"]  # fmt: skip
    assert main(argv) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 1 and metrics[-1]["judge_fwd_seqs"] >= 2
    assert "next-words" in (run / "game.yaml").read_text()
    assert (run / "checkpoints" / "latest").is_file()


@pytest.mark.embedded
def test_score_and_infill_on_the_title_and_condense_games(capsys):
    from frost.cli import main

    argv = ["score", "--game", "title", "--L", "2", "--doc", STORY, "--move", " A fox", "--top", "3", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["part"] for t in out["tokens"]][:2] == ["move", "move"] and len(out["edits"]) == 3
    argv = ["infill", "--game", "title", "--L", "3", "--doc", STORY, "--K", "3", "--rounds", "1", "--D", "3", "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["moves"][0]["reward"] >= res["initial_best"] - 1e-4
    assert all(len(m["ids"]) == 3 for m in res["moves"])  # the demo's title: exactly L tokens
    argv = ["infill", "--game", "condense", "--L", "6", "--doc", STORY, "--K", "3", "--rounds", "1", "--D", "3",
            "--json"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert all(1 <= len(m["ids"]) <= 6 for m in res["moves"])  # at most L, ended by the player's end of reply


def test_game_on_the_command_line_replaces_a_shipped_configs_game(tmp_path):
    """`--game FILE` with a config written for infilling: the infilling fields go, the move length stays."""
    from frost.config import load_config

    game = tmp_path / "next-words.yaml"
    game.write_text(GAME_FILE)
    config = load_config("configs/cpu-demo-frost.yaml", ["train.K=2"], game=str(game))
    assert config.game.kind == str(game) and config.game.move_length == 8
    assert config.game.params() == {"move_length": 8}
    assert config.train.K == 2 and config.frost.rule == "taylor-gated"  # the rest of the file is kept
    title = load_config("configs/cpu-demo-frost.yaml", ["game.move_length=5"], game="title")
    assert title.game.kind == "title" and title.game.move_length == 5  # --set still wins


def test_frost_train_takes_a_game_file_and_the_model_options_with_a_shipped_config(tmp_path):
    from frost.cli import main

    game = tmp_path / "next-words.yaml"
    game.write_text(GAME_FILE)
    run = tmp_path / "run"
    argv = ["train", "--config", "configs/cpu-demo-frost.yaml", "--game", str(game), "--model", "qwen3-tiny-shape",
            "--device", "cpu", "--dtype", "float32", "--steps", "1", "--run-dir", str(run), "--no-progress",
            "--set", "train.K=2", "--set", "train.batch_size=1", "--set", "train.val_every=0",
            "--set", "data.source=handwritten", "--set", "data.validation_size=1", "--set", "lora.rank=4"]  # fmt: skip
    assert main(argv) == 0
    saved = (run / "config.yaml").read_text()
    assert "name: qwen3-tiny-shape" in saved and "device: cpu" in saved and "dtype: float32" in saved
    assert "next-words" in (run / "game.yaml").read_text()
