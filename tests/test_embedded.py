"""End to end on the embedded SmolLM2-135M-Instruct: `frost score --json` against an independent implementation."""

from __future__ import annotations

import json

import pytest
import torch

from frost.cli import main
from frost.games import InfillingGame, encode_plain
from frost.judge import Judge
from frost.models import forbidden_token_mask
from frost.sampling import sample_moves

pytestmark = pytest.mark.embedded

BEGIN = "Once upon a time, in a village"
END = (
    " and learning new things every day! One day, they stumbled upon a magical forest full of vibrant colors and"
    " fascinating creatures."
)
MOVE = " there lived a curious kiwi named Kiki"


def test_score_json_agrees_with_an_independent_implementation(embedded, capsys):
    assert main(["score", "--begin", BEGIN, "--end", END, "--move", MOVE, "--top", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"reward", "rule", "sign", "judge_ids", "move_ids", "tokens", "edits"}
    model, tok = embedded.model, embedded.tokenizer
    # the judge reads <|endoftext|> (the document-start token), x, y, z; y and z are scored
    x = [0, *encode_plain(tok, BEGIN)]
    y, z = encode_plain(tok, MOVE), encode_plain(tok, END)
    assert out["judge_ids"] == x + y + z and out["move_ids"] == y

    # independent R: one plain forward over the ids, gather, sum
    ids = torch.tensor(x + y + z)
    emb = model.get_input_embeddings().weight
    one_hot = torch.nn.functional.one_hot(ids, emb.shape[0]).float().requires_grad_(True)
    logp = torch.log_softmax(model(inputs_embeds=(one_hot @ emb).unsqueeze(0)).logits[0].float(), -1)
    targets = range(len(x), len(ids))
    token_lps = torch.stack([logp[t - 1, ids[t]] for t in targets])
    reward = token_lps.sum()
    assert out["reward"] == pytest.approx(reward.item(), abs=0.02)
    assert [t["logprob"] for t in out["tokens"]] == pytest.approx(token_lps.tolist(), abs=0.01)
    assert [t["position"] for t in out["tokens"]] == list(targets)

    # independent first-order Taylor scores from the gradient with respect to one-hot inputs (Eq. 1)
    (grad,) = torch.autograd.grad(reward, one_hot)
    forbidden = forbidden_token_mask(tok, emb.shape[0])
    scores = []
    for j, yj in enumerate(y):
        g = grad[len(x) + j]
        a = reward.item() + (g - g[yj])
        a[forbidden] = float("-inf")
        a[yj] = float("-inf")
        scores.append(a)
    grid = torch.stack(scores).view(-1)
    top = torch.topk(grid, 10)
    expected = [(int(i) // emb.shape[0], int(i) % emb.shape[0]) for i in top.indices]
    got = [(e["position"], e["token_id"]) for e in out["edits"]]
    assert got == expected
    assert [e["approx"] for e in out["edits"]] == pytest.approx(top.values.tolist(), abs=0.05)
    approx = [e["approx"] for e in out["edits"]]
    assert approx == sorted(approx, reverse=True)

    # exact scores recomputed for real, independently
    for e in out["edits"][:3]:
        child = list(y)
        child[e["position"]] = e["token_id"]
        cid = torch.tensor([x + child + z])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=cid).logits[0].float(), -1)
        exact = sum(float(lp[t - 1, cid[0, t]]) for t in targets)
        assert e["exact"] == pytest.approx(exact, abs=0.02)
        assert e["token"] == tok.decode([e["token_id"]])


def test_edits_rank_by_the_rule_given_and_the_older_mode_name_still_works(capsys):
    outs = {}
    for flags in (["--rule", "full"], ["--mode", "full"], ["--rule", "taylor"], ["--mode", "first-order"]):
        assert main(["score", "--begin", BEGIN, "--end", END, "--move", MOVE, "--top", "5", *flags, "--json"]) == 0
        outs[" ".join(flags)] = json.loads(capsys.readouterr().out)
    assert outs["--rule full"] == outs["--mode full"] and outs["--rule taylor"] == outs["--mode first-order"]
    full, taylor = outs["--rule full"], outs["--rule taylor"]
    assert (full["rule"], taylor["rule"]) == ("full", "taylor") and len(full["edits"]) == 5
    approx = [e["approx"] for e in full["edits"]]
    assert approx == sorted(approx, reverse=True)
    assert [(e["position"], e["token_id"]) for e in full["edits"]] != [
        (e["position"], e["token_id"]) for e in taylor["edits"]
    ]  # the judge's exact position term changes the ranking


def test_embedded_sampling_gives_exactly_l_ordinary_tokens(embedded):
    tok = embedded.tokenizer
    game = InfillingGame(tok, move_length=8)
    inst = game.instance_from_parts(encode_plain(tok, BEGIN), encode_plain(tok, END))
    vocab = embedded.model.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(tok, vocab)
    assert forbidden[:17].all() and not forbidden[17:].any()
    s = sample_moves(
        embedded.model, inst.prompt_ids, 8, 8, forbidden=forbidden, generator=torch.Generator().manual_seed(0)
    )
    assert s.moves.shape == (8, 8) and int(s.moves.min()) >= 17
    rewards = Judge(embedded.model).rewards(inst, s.moves)
    assert torch.all(torch.isfinite(rewards)) and torch.all(rewards < 0)


def test_infill_never_returns_worse_than_sampled(capsys):
    argv = ["infill", "--begin", BEGIN, "--end", END, "--L", "4", "--K", "4", "--rounds", "1", "--D", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["moves"][0]["reward"] >= out["initial_best"]
    assert all(len(m["ids"]) == 4 for m in out["moves"])
