"""`frost data synth`: valid, deduplicated, resumable records (on a tiny random model)."""

from __future__ import annotations

import json

import pytest

from conftest import make_tiny_llama
from frost.tools.synth import SynthSettings, clean_story, grid, rejection_reason, shingles, synthesize


def test_clean_story_drops_chatty_preamble_and_title():
    text = "Sure! Here is a story:\n**The Fox**\n\nOnce upon a time a fox lived.\nThe end."
    assert clean_story(text) == "Once upon a time a fox lived.\nThe end."


def test_rejection_reasons():
    settings = SynthSettings(min_tokens=10)
    assert rejection_reason(list(range(5)), "short", [], settings) == "too short"
    assert rejection_reason([1, 2, 3, 4] * 10, "loop", [], settings) == "repetition loop"
    text = "the cat sat on the mat and looked at the little bird in the tree"
    assert rejection_reason(list(range(40)), text, [shingles(text)], settings) == "near-duplicate"
    assert rejection_reason(list(range(40)), text, [], settings) is None


def test_grid_order_is_seeded():
    assert grid(0) == grid(0) and grid(0) != grid(1)
    assert len({i.id for i in grid(0)}) == len(grid(0))


@pytest.fixture(scope="module")
def tiny_story_model(embedded_tokenizer):
    return make_tiny_llama(vocab=len(embedded_tokenizer)), embedded_tokenizer


SETTINGS = SynthSettings(batch_size=2, max_new_tokens=40, min_tokens=5)


def test_synth_writes_valid_records_and_resumes_without_duplicates(tmp_path, tiny_story_model):
    model, tok = tiny_story_model
    straight = tmp_path / "a" / "stories.jsonl"
    synthesize(straight, target=5, settings=SETTINGS, model=model, tokenizer=tok, progress=False)
    resumed = tmp_path / "b" / "stories.jsonl"
    synthesize(resumed, target=3, settings=SETTINGS, model=model, tokenizer=tok, progress=False)
    counts = synthesize(resumed, target=5, settings=SETTINGS, model=model, tokenizer=tok, progress=False)
    rows = [json.loads(line) for line in resumed.read_text().splitlines()]
    assert 5 <= len(rows) == counts["accepted"] < 5 + SETTINGS.batch_size
    assert len({r["id"] for r in rows}) == len(rows) and all(r["text"].strip() for r in rows)
    assert straight.read_text() == resumed.read_text()  # resuming writes exactly what one run would
    record = json.loads(resumed.with_suffix(".record.json").read_text())
    assert record["settings"]["seed"] == 0 and "{topic}" in record["prompt_template"]
    assert record["counts"]["accepted"] == len(rows)
