"""The infilling game: extraction offsets, prompts, judge layout, skipped documents."""

from __future__ import annotations

import pytest

from frost.errors import ConfigError
from frost.games import INFILLING_PROMPT, GameInstance, InfillingGame, encode_plain, render_prompt


class CharTokenizer:
    """A stand-in tokenizer: one token per character (ids = code points), no chat template, no BOS."""

    chat_template = None
    bos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_extraction_offsets_are_8_24_64():
    game = InfillingGame(CharTokenizer())
    ids = list(range(1000, 1000 + 150))
    x, gap, z = game.split(ids)
    assert x == ids[:8]
    assert gap == ids[8:32]
    assert z == ids[32:96]
    assert game.split(ids[:95]) is None and game.split(ids[:96]) is not None


def test_judge_layout_and_scored_positions():
    game = InfillingGame(CharTokenizer(), move_length=4)
    inst = game.instance([ord("a")] * 8 + [ord("b")] * 24 + [ord("c")] * 70)
    assert inst is not None
    assert inst.judge_prefix == (ord("a"),) * 8 and inst.judge_suffix == (ord("c"),) * 64
    assert inst.judge_ids([1, 2, 3, 4]) == [ord("a")] * 8 + [1, 2, 3, 4] + [ord("c")] * 64
    assert inst.scored_positions() == list(range(8, 8 + 4 + 64))
    assert inst.meta["gap_ids"] == [ord("b")] * 24


def test_too_short_documents_are_skipped_counted_and_warned_once():
    game = InfillingGame(CharTokenizer())
    docs = [("a", "x" * 200), ("b", "short"), ("c", "y" * 95), ("d", "z" * 96)]
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 documents: 2 shorter than 96 tokens") as record:
        instances, skipped = game.instances(docs)
    assert len(record) == 1
    assert [i.source for i in instances] == ["a", "d"]
    assert skipped.total == 2


def test_plain_prompt_fallback_has_appendix_c_text():
    game = InfillingGame(CharTokenizer(), move_length=12, gap_tokens=24)
    inst = game.instance_from_parts([ord(c) for c in "Once upon"], [ord(c) for c in " a time"])
    text = CharTokenizer().decode(list(inst.prompt_ids))
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
    assert inst.judge_prefix == tuple(x)  # SmolLM2 adds no BOS to plain text, so neither does the judge


def test_enable_thinking_false_reaches_a_qwen3_style_template():
    class ThinkingTokenizer(CharTokenizer):
        chat_template = "qwen3-like"

        def apply_chat_template(self, messages, add_generation_prompt, enable_thinking=True, tokenize=True):
            text = f"<user>{messages[0]['content']}</user><assistant>"
            if not enable_thinking:
                text += "<think>\n\n</think>\n\n"
            return {"input_ids": [ord(c) for c in text]}

    ids = render_prompt(ThinkingTokenizer(), "hi")
    assert CharTokenizer().decode(ids).endswith("<think>\n\n</think>\n\n")


def test_bad_game_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="move_length"):
        InfillingGame(CharTokenizer(), move_length=0)
    with pytest.raises(ConfigError, match="exactly 3"):
        GameInstance((1,), (2,), (3,), 3).judge_ids([1, 2])
