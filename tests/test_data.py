"""Document readers, skip counts, splits, the instance cache and error messages."""

from __future__ import annotations

import json

import pytest

from frost.errors import DataError
from frost.games import InfillingGame
from frost.run import data
from frost.run.data import DataConfig, load_documents, load_split, read_documents, split_instances


def test_jsonl_reader_skips_and_counts_bad_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": "a", "text": "first story"}).encode(),
        b'{"id": "b", "text": "caf\xe9 not utf8"}',
        b"{broken json",
        json.dumps({"id": "c", "body": "no text field"}).encode(),
        json.dumps({"id": "d", "text": "   "}).encode(),
        json.dumps({"id": "e", "text": "second story"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs = load_documents(str(path))
    assert docs.docs == [("a", "first story"), ("e", "second story")]
    assert docs.skipped == {"not UTF-8": 1, "invalid JSON": 1, "no field 'text'": 1, "empty text": 1}


def test_jsonl_wrong_field_is_a_one_line_error_naming_the_fields(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "a", "body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"data\.field: .* has no field 'text'; its fields are \['body', 'id'\]"):
        read_documents(str(path))
    assert read_documents(str(path), field="body") == [("a", "x")]


def test_txt_reader_splits_on_blank_lines_and_skips_bad_blocks(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(b"one\nstill one\n\n\ntwo\r\n\r\nbad \xff block\n\nthree\n")
    docs = load_documents(str(path))
    assert [t for _, t in docs.docs] == ["one\nstill one", "two", "three"]
    assert docs.skipped == {"not UTF-8": 1}


def test_folder_reader_one_document_per_file_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe")
    (tmp_path / "ignored.md").write_text("not a txt")
    docs = load_documents(str(tmp_path))
    assert docs.docs == [("a.txt", "ay"), ("b.txt", "bee")]
    assert docs.skipped == {"not UTF-8": 1}


def test_parquet_reader_and_wrong_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["hello", "world"]}), path)
    assert read_documents(str(path)) == [("x", "hello"), ("y", "world")]
    with pytest.raises(DataError, match=r"data\.field: .* no column 'story'"):
        read_documents(str(path), field="story")


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.jsonl", "is not a file, a folder"),
        (lambda p: _write(p / "empty.jsonl", ""), "is empty"),
        (lambda p: _write(p / "x.csv", "a,b"), "unknown type '.csv'"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as exc:
        read_documents(str(path))
    assert "\n" not in str(exc.value)


def test_hub_source_offline_names_the_local_alternatives(monkeypatch):
    import frost.models

    monkeypatch.setattr(frost.models, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError, match=r"cannot be reached; use a built-in set \(embedded, handwritten\)"):
        read_documents("cosmopedia")


def test_split_is_deterministic_and_training_order_follows_the_seed():
    items = list(range(300))
    val_a, train_a = split_instances(items, 128, seed=1)
    _, train_b = split_instances(items, 128, seed=1)
    _, train_c = split_instances(items, 128, seed=2)
    assert val_a == list(range(128)) and train_a == train_b
    assert sorted(train_a) == list(range(128, 300)) and train_a != train_c


def test_load_split_caches_tokenised_instances(tmp_path, monkeypatch, embedded_tokenizer):
    monkeypatch.setenv("FROST_CACHE", str(tmp_path / "cache"))
    game = InfillingGame(embedded_tokenizer, move_length=4)
    config = DataConfig(source="handwritten", validation_size=3, seed=5)
    first = load_split(config, game)
    assert len(list((tmp_path / "cache" / "instances").glob("*.json"))) == 1
    second = load_split(config, game)
    assert first.validation == second.validation and first.train == second.train
    assert len(first.validation) == 3 and len(first.train) == 5
    assert first.validation[0].source == "hand-00"


def test_instance_cache_survives_two_writers_that_start_together(tmp_path, monkeypatch, embedded_tokenizer):
    """Two workers that miss the cache together both write it: the second writer finishes (writes its temporary file
    and renames it into place) between the first one's write and rename, and neither fails or leaves a partial file."""
    monkeypatch.setenv("FROST_CACHE", str(tmp_path / "cache"))
    game = InfillingGame(embedded_tokenizer, move_length=4)
    config = DataConfig(source="handwritten", validation_size=3, seed=5)
    real_replace = data.os.replace
    interleaved = []

    def replace_after_a_second_writer(src, dst):
        if not interleaved:  # the first writer is about to rename: the second writer runs from start to end first
            interleaved.append(True)
            data._usable_instances(config, game, cache=True)
        real_replace(src, dst)

    monkeypatch.setattr(data.os, "replace", replace_after_a_second_writer)
    instances, _, _ = data._usable_instances(config, game, cache=True)
    assert interleaved
    files = sorted(p.name for p in (tmp_path / "cache" / "instances").iterdir())
    assert len(files) == 1 and files[0].endswith(".json")  # no temporary file left behind
    monkeypatch.setattr(data.os, "replace", real_replace)
    assert load_split(config, game).validation == instances[:3]


def test_shipped_story_set_is_usable(embedded_tokenizer):
    """The story set in the package: at least 600 distinct stories, every one long enough for infilling."""
    docs = read_documents("embedded")
    assert len(docs) >= 600
    assert len({t for _, t in docs}) == len(docs) and len({i for i, _ in docs}) == len(docs)
    instances, skipped = InfillingGame(embedded_tokenizer).instances(docs, warn=False)
    assert len(instances) == len(docs) and skipped.total == 0
    record = json.loads(data.BUILTIN_SETS["embedded"].with_suffix(".record.json").read_text())
    assert record["model"] == "embedded" and record["counts"]["accepted"] == len(docs)
