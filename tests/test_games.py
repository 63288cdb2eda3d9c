"""The games package: built-in games (layouts, prompts, rewards against an independent computation), game files
(the infilling re-expression, the bad-file errors), the document-start token, variable-length moves."""

from __future__ import annotations

import textwrap

import pytest
import torch

from conftest import TinyCharTokenizer, plain_reward
from frost.errors import ConfigError
from frost.games import (
    BUILTIN_GAMES,
    INFILLING_PROMPT,
    GameInstance,
    InfillingGame,
    build_game,
    document_start_id,
    encode_plain,
    load_game_file,
    render_prompt,
    spec_to_yaml,
)
from frost.judge import Judge

STORY = (
    "Once upon a time a small fox lived by the river. Every morning she walked to the water and looked at the "
    "fish. One day a heron came and asked her why she never went fishing herself. She said she was afraid of "
    "the cold water, so the heron taught her to wait on a stone. "
) * 3


def enc(tok, text):
    return encode_plain(tok, text)


def test_extraction_offsets_are_8_24_64(char_tokenizer):
    game = InfillingGame(char_tokenizer)
    ids = list(range(3, 3 + 90)) * 2
    x, gap, z = game.split(ids)
    assert x == ids[:8] and gap == ids[8:32] and z == ids[32:96]
    assert game.split(ids[:95]) is None and game.split(ids[:96]) is not None


def test_infilling_layout_starts_with_the_document_start_token(char_tokenizer):
    game = InfillingGame(char_tokenizer, move_length=4)
    ids = [10] * 8 + [11] * 24 + [12] * 70
    inst = game.instance(ids)
    assert inst is not None
    assert inst.judge_prefix == (0, *[10] * 8)  # <|endoftext|>, then x
    assert inst.judge_suffix == (12,) * 64
    assert inst.judge_ids([5, 6, 7, 8]) == [0, *[10] * 8, 5, 6, 7, 8, *[12] * 64]
    assert inst.scored_positions() == list(range(9, 9 + 4 + 64))
    assert inst.meta["gap_ids"] == [11] * 24
    assert InfillingGame(char_tokenizer, move_length=4, start=False).instance(ids).judge_prefix == (10,) * 8


def test_document_start_token_choice(char_tokenizer, embedded_tokenizer):
    assert document_start_id(char_tokenizer) == 0
    assert document_start_id(embedded_tokenizer) == 0  # SmolLM2: <|endoftext|>, its pretraining separator


def test_too_short_documents_are_skipped_counted_and_warned_once(char_tokenizer):
    game = InfillingGame(char_tokenizer)
    docs = [("a", "x" * 200), ("b", "short"), ("c", "y" * 95), ("d", "z" * 96)]
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 documents: 2 shorter than 96 tokens") as record:
        instances, skipped = game.instances(docs)
    assert len(record) == 1
    assert [i.source for i in instances] == ["a", "d"]
    assert skipped.total == 2


def test_plain_prompt_fallback_has_appendix_c_text(char_tokenizer):
    game = InfillingGame(char_tokenizer, move_length=12, gap_tokens=24)
    inst = game.instance_from_parts(enc(char_tokenizer, "Once upon"), enc(char_tokenizer, " a time"))
    text = char_tokenizer.decode(list(inst.prompt_ids))
    assert text.startswith("A text begins with:\n'''\nOnce upon\n'''")
    assert "After a gap of 24 tokens, it continues with:\n'''\n a time\n'''" in text
    assert "Provide exactly 12 tokens" in text and "Respond with exactly 12 tokens" in text
    assert text.endswith("\n\nAnswer:")


def test_chat_template_prompt_on_the_embedded_tokenizer(embedded_tokenizer):
    game = InfillingGame(embedded_tokenizer, move_length=8)
    x = encode_plain(embedded_tokenizer, "Once upon a time, in a small village")[:8]
    z = encode_plain(embedded_tokenizer, " there lived a girl who loved the sea and every shell on it.")
    inst = game.instance_from_parts(x, z)
    text = embedded_tokenizer.decode(list(inst.prompt_ids))
    user = INFILLING_PROMPT.format(begin=embedded_tokenizer.decode(x), end=embedded_tokenizer.decode(z), gap=24, L=8)
    assert "<|im_start|>user\n" + user + "<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert inst.judge_prefix == (0, *x)


def test_enable_thinking_false_reaches_a_qwen3_style_template(char_tokenizer):
    class ThinkingTokenizer(TinyCharTokenizer):
        chat_template = "qwen3-like"

        def apply_chat_template(self, messages, add_generation_prompt, enable_thinking=True, tokenize=True):
            text = f"user: {messages[0]['content']} assistant:"
            if not enable_thinking:
                text += "\n\nno thinking\n\n"
            return {"input_ids": self(text)["input_ids"]}

    ids = render_prompt(ThinkingTokenizer(), "hi")
    assert char_tokenizer.decode(ids).endswith("no thinking\n\n")


def test_bad_game_settings_are_clear_errors(char_tokenizer):
    with pytest.raises(ConfigError, match="move_length"):
        InfillingGame(char_tokenizer, move_length=0)
    with pytest.raises(ConfigError, match="rows of 3"):
        GameInstance((1,), (2,), (3,), 3).judge_ids([1, 2])
    with pytest.raises(ConfigError, match="does not apply to the title game"):
        build_game("title", char_tokenizer, {"begin_tokens": 8})
    with pytest.raises(ConfigError, match="unknown game"):
        build_game("chess", char_tokenizer)


# ------------------------------------------------------------------------------------ rewards, game by game
def _check_reward(model, inst, row, ids, scored, sign=1):
    judge = Judge(model)
    assert inst.judge_ids(row) == ids
    got = float(judge.rewards(inst, torch.tensor([row]))[0])
    assert got == pytest.approx(plain_reward(model, ids, scored, sign), abs=1e-4)
    taylor = judge.taylor(inst, torch.tensor([row]))
    assert float(taylor.rewards[0]) == pytest.approx(got, abs=1e-4)


def test_infilling_reward_matches_a_plain_forward(tiny_model, char_tokenizer):
    tok = char_tokenizer
    game = build_game("infilling", tok, {"move_length": 4})
    ids = enc(tok, STORY)
    inst = game.instance(ids)
    move = enc(tok, "abcd")
    judge_ids = [0, *ids[:8], *move, *ids[32:96]]
    _check_reward(tiny_model, inst, move, judge_ids, list(range(9, len(judge_ids))))


def test_reverse_reward_scores_the_target_only(tiny_model, char_tokenizer):
    tok = char_tokenizer
    game = build_game("reverse", tok, {"move_length": 5, "target_tokens": 20})
    ids = enc(tok, STORY)
    inst = game.instance(ids)
    move = enc(tok, "Hello")
    judge_ids = [0, *move, *ids[:20]]
    _check_reward(tiny_model, inst, move, judge_ids, list(range(6, 26)))
    assert not inst.score_move
    fixed = build_game("reverse", tok, {"move_length": 5, "target_text": "Sure, here it is"}).instance(ids)
    target = enc(tok, "Sure, here it is")
    _check_reward(tiny_model, fixed, move, [0, *move, *target], list(range(6, 6 + len(target))))
    assert "Sure, here it is" in tok.decode(list(fixed.prompt_ids))


@pytest.mark.parametrize("content", ["Fox", "The fox by"])
def test_title_reward_full_and_short_moves(tiny_model, char_tokenizer, content):
    tok = char_tokenizer
    game = build_game("title", tok, {"move_length": 10, "text_tokens": 40, "exact_length": False})
    ids = enc(tok, STORY)
    inst = game.instance(ids)
    assert inst.stop_id == 2 and inst.variable_length
    move = enc(tok, content)
    row = inst.pad_move(move)
    head = [0, *enc(tok, "Title:")]
    judge_ids = [*head, *move, *enc(tok, "\n\n"), *ids[:40]]
    title = list(range(len(head), len(head) + len(move)))
    text = list(range(len(head) + len(move) + 2, len(judge_ids)))
    _check_reward(tiny_model, inst, row, judge_ids, title + text)
    assert set(ids[:40]) <= set(inst.forbidden_ids)  # the text's own tokens may not appear in the title
    assert tok.ids["\n"] in inst.forbidden_ids


def test_title_is_exactly_n_tokens_by_default_and_condense_at_most(tiny_model, char_tokenizer):
    """The built-in title is the authors' demo game: exactly N tokens, no stop, and the prompt says "exactly";
    `exact_length` turns either game into the other kind, and its value must be a boolean."""
    tok = char_tokenizer
    ids = enc(tok, STORY)
    title = build_game("title", tok, {"move_length": 5, "text_tokens": 40}).instance(ids)
    assert not title.variable_length and title.move_length == 5 and title.stop_id is None
    assert "a title of exactly 5 tokens" in tok.decode(list(title.prompt_ids))
    move = enc(tok, "Foxes")
    head = [0, *enc(tok, "Title:")]
    judge_ids = [*head, *move, *enc(tok, "\n\n"), *ids[:40]]
    scored = list(range(len(head), len(head) + 5)) + list(range(len(head) + 7, len(judge_ids)))
    _check_reward(tiny_model, title, move, judge_ids, scored)
    loose = build_game("title", tok, {"move_length": 5, "text_tokens": 40, "exact_length": False}).instance(ids)
    assert loose.variable_length and "a title of at most 5 tokens" in tok.decode(list(loose.prompt_ids))
    condense = build_game("condense", tok, {"move_length": 5, "text_tokens": 30})
    assert condense.instance(ids).variable_length
    fixed = build_game("condense", tok, {"move_length": 5, "text_tokens": 30, "exact_length": True}).instance(ids)
    assert not fixed.variable_length and "in exactly 5 tokens" in tok.decode(list(fixed.prompt_ids))
    with pytest.raises(ConfigError, match=r"game\.exact_length must be true or false"):
        build_game("title", tok, {"exact_length": "yes"})
    with pytest.raises(ConfigError, match="does not apply to the infilling game"):
        build_game("infilling", tok, {"exact_length": True})


@pytest.mark.parametrize("content", ["abcdefgh", "ab"])
def test_condense_reward_full_and_short_moves(tiny_model, char_tokenizer, content):
    tok = char_tokenizer
    game = build_game("condense", tok, {"move_length": 8, "text_tokens": 30})
    ids = enc(tok, STORY)
    inst = game.instance(ids)
    move = enc(tok, content)
    judge_ids = [0, *move, *enc(tok, "\n\n"), *ids[:30]]
    _check_reward(tiny_model, inst, inst.pad_move(move), judge_ids, list(range(len(move) + 3, len(judge_ids))))


def test_rlp_reward_scores_the_next_tokens_after_the_thought(tiny_model, char_tokenizer):
    tok = char_tokenizer
    game = build_game("rlp", tok, {"move_length": 4, "context_tokens": 24, "target_tokens": 6})
    ids = enc(tok, STORY)
    inst = game.instance(ids)
    move = enc(tok, "hmmm")
    judge_ids = [0, *ids[:24], *move, *ids[24:30]]
    _check_reward(tiny_model, inst, move, judge_ids, list(range(29, 35)))


def test_variable_length_moves_batch_with_different_lengths(tiny_model, char_tokenizer):
    tok = char_tokenizer
    inst = build_game("title", tok, {"move_length": 6, "text_tokens": 30, "exact_length": False}).instance(
        enc(tok, STORY)
    )
    rows = [inst.pad_move(enc(tok, t)) for t in ("Q", "QQQ", "QZQZQZ")]
    together = Judge(tiny_model).rewards(inst, torch.tensor(rows))
    alone = [float(Judge(tiny_model).rewards(inst, torch.tensor([r]))[0]) for r in rows]
    assert together.tolist() == pytest.approx(alone, abs=1e-4)


# ------------------------------------------------------------------------------------------------ game files
INFILLING_FILE = """
name: my-infilling
move: {length: 4}
player: |
  A text begins with:
  '''
  {doc:0:8}
  '''

  After a gap of 24 tokens, it continues with:
  '''
  {doc:32:96}
  '''

  Provide exactly {move_length} tokens to bridge between the opening and the continuation, maximizing the likelihood of the full sequence. Respond with exactly {move_length} tokens; only these will be used.
judge:
  - start: true
  - doc: [0, 8]
  - move: true
    scored: true
  - doc: [32, 96]
    scored: true
sign: 1
"""  # noqa: E501


def test_a_game_file_reexpressing_infilling_equals_the_builtin(tmp_path, tiny_model, embedded_tokenizer):
    path = tmp_path / "infilling.yaml"
    path.write_text(INFILLING_FILE)
    docs = [("a", STORY), ("b", STORY[40:] + STORY[:40]), ("short", "too short")]
    mine, skipped_mine = build_game(str(path), embedded_tokenizer).instances(docs, warn=False)
    builtin, skipped_builtin = build_game("infilling", embedded_tokenizer, {"move_length": 4}).instances(
        docs, warn=False
    )
    assert skipped_mine.total == skipped_builtin.total == 1
    for a, b in zip(mine, builtin, strict=True):
        assert (a.prompt_ids, a.judge_prefix, a.judge_suffix) == (b.prompt_ids, b.judge_prefix, b.judge_suffix)
        assert a.scored_positions() == b.scored_positions()
    # the file's layout written out by hand from its parts: start token, doc[0:8], the move, doc[32:96]
    doc = encode_plain(embedded_tokenizer, STORY)
    start = document_start_id(embedded_tokenizer)
    assert mine[0].judge_prefix == (*([start] if start is not None else []), *doc[:8])
    assert mine[0].judge_suffix == tuple(doc[32:96])
    # its reward, against a plain forward over those ids with the move and doc[32:96] scored (the layout mapped into
    # the tiny model's vocabulary): a file that scored another span, or the prefix, would fail here
    a = mine[0]
    small = GameInstance(a.prompt_ids, tuple(i % 97 for i in a.judge_prefix), tuple(i % 97 for i in a.judge_suffix), 4,
                         suffix_scored=a.suffix_scored)  # fmt: skip
    move = [5, 17, 33, 60]
    ids = [*small.judge_prefix, *move, *small.judge_suffix]
    _check_reward(tiny_model, small, move, ids, list(range(len(small.judge_prefix), len(ids))))


def test_builtin_games_round_trip_through_a_game_file(tmp_path, char_tokenizer):
    for name in BUILTIN_GAMES:
        game = build_game(name, char_tokenizer)
        path = tmp_path / f"{name}.yaml"
        path.write_text(spec_to_yaml(game.spec))
        assert load_game_file(path) == game.spec


BAD_FILES = {
    "no move part": ("judge: [{start: true}, {doc: [0, 8], scored: true}]", "no move part"),
    "two move parts": ("judge: [{start: true}, {move: true, scored: true}, {move: true}]", "two move parts"),
    "nothing scored": ("judge: [{start: true}, {move: true}, {doc: [0, 8]}]", "nothing is scored"),
    "slice out of order": ("judge: [{start: true}, {move: true}, {doc: [8, 4], scored: true}]", "out of order"),
    "negative slice": ("judge: [{start: true}, {move: true}, {doc: [-2, 4], scored: true}]", "negative"),
    "unknown part": ("judge: [{start: true}, {move: true}, {image: x.png, scored: true}]", "unknown part"),
    "unknown field": ("judge: [{move: true}, {doc: [0, 8], scored: true}]\ncolour: blue", "unknown field 'colour'"),
    "unknown placeholder": ("judge: [{move: true}, {doc: [0, 8], scored: true}]\nplayer: 'Go {story}'", "{story}"),
    "sign": ("judge: [{move: true}, {doc: [0, 8], scored: true}]\nsign: 2", "sign must be 1 or -1"),
    "move length": ("judge: [{move: true}, {doc: [0, 8], scored: true}]\nmove: {length: 0}", "move length must be"),
    "everything forbidden": (
        'judge: [{move: true}, {doc: [0, 8], scored: true}]\nforbid: [newlines]\nallow: "\\n\\n"',
        "every token is forbidden",
    ),
    "multi-token stop": (
        "judge: [{move: true}, {doc: [0, 8], scored: true}]\nmove: {max_length: 4, stop: 'ab'}",
        "exactly one token",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_game_files_give_one_line_naming_the_field(tmp_path, char_tokenizer, case):
    body, message = BAD_FILES[case]
    base = {"name": "name: bad", "move": "move: {length: 4}", "player": "player: 'Write {move_length} tokens'"}
    lines = body.splitlines()
    for key, line in base.items():
        if not any(ln.startswith(f"{key}:") for ln in lines):
            lines.insert(0, line)
    path = tmp_path / "bad.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=message) as err:
        build_game(str(path), char_tokenizer)
    assert "\n" not in str(err.value)


def test_game_file_parameters_and_cli_errors(tmp_path, char_tokenizer):
    path = tmp_path / "g.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: g
            move: {max_length: 5, stop: eos}
            player: "Sum up {doc:0:20} in {move_length} tokens"
            judge: [{start: true}, {move: true}, {text: " so:"}, {doc: [0, 20], scored: true}]
            sign: -1
            """
        )
    )
    game = build_game(str(path), char_tokenizer, {"move_length": 3})
    inst = game.instance(enc(char_tokenizer, STORY))
    assert inst.move_length == 3 and inst.sign == -1 and inst.stop_id == 2
    assert "Sum up" in char_tokenizer.decode(list(inst.prompt_ids)) and "in 3 tokens" in char_tokenizer.decode(
        list(inst.prompt_ids)
    )
    with pytest.raises(ConfigError, match=r"only game\.move_length"):
        build_game(str(path), char_tokenizer, {"text_tokens": 4})
