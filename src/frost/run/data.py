"""Documents in, game instances out.

Sources, all giving `(id, text)` documents in a deterministic order:

* `embedded`: the story set shipped with Frost (written by `frost data synth` with the embedded model);
* `handwritten`: eight hand-written stories (tests and quick checks);
* `cosmopedia`: the paper's data, `HuggingFaceTB/cosmopedia` subset `stories`, streamed through `datasets`;
* a local `.jsonl` file (text in `field`), a `.txt` file (one document per blank-line separated block), a folder of
  `.txt` files (one document per file), or a `.parquet` file (text in column `field`).

The first `validation_size` documents are the validation (dev) set (the paper: 128); `test_size` documents from
`test_start` on are a test split that training and validation never read (`load_test_split` alone returns it); the
rest are the training pool, whose order is shuffled by the seed. Unreadable documents (not UTF-8, broken JSON,
missing text) are skipped and counted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frost.config import DataConfig
from frost.errors import ConfigError, DataError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUILTIN_SETS = {"embedded": ASSETS / "stories.jsonl", "handwritten": ASSETS / "handwritten_stories.jsonl"}
HUB_SOURCES = {"cosmopedia": ("HuggingFaceTB/cosmopedia", "stories")}


@dataclass
class Documents:
    """Documents read from a source, and what was skipped."""

    source: str
    docs: list[tuple[str, str]]
    skipped: Counter[str] = field(default_factory=Counter)
    fingerprint: str = ""
    """Changes whenever the documents could have changed (content hash for local files)."""


def _decode(raw: bytes, what: str, skipped: Counter[str]) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        skipped["not UTF-8"] += 1
        return None


def _read_jsonl(path: Path, field_name: str, skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    seen_field = False
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        line = _decode(raw, f"{path}:{n}", skipped)
        if line is None:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            skipped["invalid JSON"] += 1
            continue
        if not isinstance(obj, dict):
            skipped["not a JSON object"] += 1
            continue
        if field_name not in obj:
            if not seen_field:
                raise DataError(
                    f"data.field: {path}:{n} has no field {field_name!r}; its fields are {sorted(obj)} "
                    "(set data.field / --field)"
                )
            skipped[f"no field {field_name!r}"] += 1
            continue
        seen_field = True
        text = obj[field_name]
        if not isinstance(text, str) or not text.strip():
            skipped["empty text"] += 1
            continue
        yield str(obj.get("id", f"{path.stem}:{n}")), text


def _read_txt(path: Path, skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    raw = path.read_bytes().replace(b"\r\n", b"\n")
    blocks = [b for b in raw.split(b"\n\n") if b.strip()]
    for n, block in enumerate(blocks, 1):
        text = _decode(block, f"{path} block {n}", skipped)
        if text is not None:
            yield f"{path.stem}:{n}", text.strip()


def _read_folder(path: Path, skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"data.source: folder {path} holds no .txt files")
    for p in files:
        text = _decode(p.read_bytes(), str(p), skipped)
        if text is None:
            continue
        if not text.strip():
            skipped["empty text"] += 1
            continue
        yield str(p.relative_to(path)), text.strip()


def _read_parquet(path: Path, field_name: str, skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise DataError(f"data.source: {path} is not a readable parquet file ({exc})") from exc
    if field_name not in schema.names:
        raise DataError(f"data.field: {path} has no column {field_name!r}; its columns are {schema.names}")
    columns = [field_name] + (["id"] if "id" in schema.names else [])
    table = pq.read_table(path, columns=columns)
    texts = table.column(field_name).to_pylist()
    ids = table.column("id").to_pylist() if "id" in columns else [f"{path.stem}:{i}" for i in range(len(texts))]
    for doc_id, text in zip(ids, texts, strict=True):
        if not isinstance(text, str) or not text.strip():
            skipped["empty text"] += 1
            continue
        yield str(doc_id), text


def _read_hub(name: str, field_name: str, limit: int, skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    from frost.models import hub_reachable

    repo, subset = HUB_SOURCES[name]
    local = ", ".join(sorted(BUILTIN_SETS))
    if not hub_reachable():
        raise DataError(
            f"data.source: {name!r} streams {repo} ({subset}) from the Hugging Face Hub, which cannot be reached; "
            f"use a built-in set ({local}) or a local .jsonl/.txt/.parquet file or folder"
        )
    import datasets

    try:
        stream = datasets.load_dataset(repo, subset, split="train", streaming=True)
    except Exception as exc:
        raise DataError(f"data.source: could not open {repo} ({subset}): {str(exc).splitlines()[0]}") from exc
    for n, row in enumerate(stream):
        if n >= limit:
            break
        text = row.get(field_name)
        if not isinstance(text, str) or not text.strip():
            skipped["empty text"] += 1
            continue
        yield f"{name}:{n}", text


def read_documents(source: str, *, field: str = "text", limit: int | None = None) -> list[tuple[str, str]]:
    """`(id, text)` documents of a source (see the module docstring), in their deterministic order."""
    return load_documents(source, field=field, limit=limit).docs


def load_documents(source: str, *, field: str = "text", limit: int | None = None) -> Documents:
    """Documents of a source with skip counts and a fingerprint."""
    skipped: Counter[str] = Counter()
    if source in HUB_SOURCES:
        cap = limit if limit is not None else 20_000
        docs = list(_read_hub(source, field, cap, skipped))
        return Documents(source, docs, skipped, fingerprint=f"hub:{HUB_SOURCES[source]}:{field}:{cap}")
    path = BUILTIN_SETS.get(source, Path(source).expanduser())
    if source in BUILTIN_SETS and not path.is_file():
        raise DataError(f"data.source: the built-in set {source!r} is missing from this install ({path})")
    if not path.exists():
        known = ", ".join([*BUILTIN_SETS, *HUB_SOURCES])
        raise DataError(f"data.source: {source!r} is not a file, a folder, nor one of {known}")
    if path.is_dir():
        reader: Iterator[tuple[str, str]] = _read_folder(path, skipped)
        digest = hashlib.sha256()
        for p in sorted(path.rglob("*.txt")):
            digest.update(str(p.relative_to(path)).encode() + p.read_bytes())
    else:
        if path.stat().st_size == 0:
            raise DataError(f"data.source: {path} is empty")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            reader = _read_jsonl(path, field, skipped)
        elif suffix == ".txt":
            reader = _read_txt(path, skipped)
        elif suffix == ".parquet":
            reader = _read_parquet(path, field, skipped)
        else:
            raise DataError(
                f"data.source: {path} has an unknown type {suffix!r}; use .jsonl, .txt, .parquet or a folder"
            )
        digest = hashlib.sha256(path.read_bytes())
    docs = []
    for doc in reader:
        docs.append(doc)
        if limit is not None and len(docs) >= limit:
            break
    if not docs:
        raise DataError(f"data.source: {source!r} holds no readable documents ({dict(skipped) or 'nothing found'})")
    return Documents(source, docs, skipped, fingerprint=f"{digest.hexdigest()}:{field}:{limit}")


@dataclass
class Split:
    """Game instances split into validation (first N, fixed order) and training (seed-shuffled order)."""

    validation: list[Any]
    train: list[Any]
    skipped: Counter[str]
    documents: int


def split_instances(instances: list[Any], validation_size: int, seed: int) -> tuple[list[Any], list[Any]]:
    """First `validation_size` for validation; the rest shuffled by `seed` for training."""
    validation = instances[:validation_size]
    train = list(instances[validation_size:])
    random.Random(seed).shuffle(train)
    return validation, train


def _instance_to_json(inst: Any) -> dict[str, Any]:
    d = asdict(inst)
    d["meta"] = {k: v for k, v in inst.meta.items() if isinstance(v, list | str | int | float)}
    return d


def _instance_from_json(d: dict[str, Any]) -> Any:
    from frost.games import GameInstance

    tuples = ("prompt_ids", "judge_prefix", "judge_suffix", "prefix_scored", "forbidden_ids")
    values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in d.items()}
    if values.get("suffix_scored") is not None:
        values["suffix_scored"] = tuple(tuple(span) for span in values["suffix_scored"])
    if values.get("allowed_ids") is not None:
        values["allowed_ids"] = tuple(values["allowed_ids"])
    return GameInstance(**values)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash that changes when the tokenizer or its chat template changes."""
    parts = [str(getattr(tokenizer, "name_or_path", "")), str(len(tokenizer))]
    parts.append(str(getattr(tokenizer, "chat_template", "")))
    parts.append(json.dumps(sorted(tokenizer.get_vocab().items())[:2000]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_split(config: DataConfig, game: Any, *, cache: bool = True) -> Split:
    """Game instances of a data config, split into validation and training (the test split, when there is one, is
    left out of both), with tokenised instances cached under `$FROST_CACHE/instances` (keyed by the documents, the
    tokenizer and the game's own key)."""
    instances, skipped, documents = _usable_instances(config, game, cache=cache)
    lo, hi = config.test_start, config.test_start + config.test_size
    if config.test_size and hi > len(instances):
        raise ConfigError(
            f"data.test_size: the test split needs usable documents {lo}-{hi - 1}, but {config.source!r} has "
            f"{len(instances)}; lower data.test_start or data.test_size"
        )
    kept = instances[:lo] + instances[hi:] if config.test_size else instances
    validation, train = split_instances(kept, config.validation_size, config.seed)
    return Split(validation=validation, train=train, skipped=skipped, documents=documents)


def load_test_split(config: DataConfig, game: Any, *, cache: bool = True) -> list[Any]:
    """The test split's game instances, in order: only a final test phase calls this (training and validation go
    through `load_split`, which leaves them out)."""
    if not config.test_size:
        raise ConfigError("data.test_size: this run declares no test split (data.test_start, data.test_size)")
    instances, _, _ = _usable_instances(config, game, cache=cache)
    lo, hi = config.test_start, config.test_start + config.test_size
    if hi > len(instances):
        raise ConfigError(f"data.test_size: {config.source!r} has {len(instances)} usable documents, fewer than {hi}")
    return instances[lo:hi]


def _usable_instances(config: DataConfig, game: Any, *, cache: bool) -> tuple[list[Any], Counter[str], int]:
    """Every usable game instance of the source, in document order; the skip counts; the documents read."""
    from frost.models import frost_cache_dir

    config.validate()
    documents = load_documents(config.source, field=config.field, limit=config.max_documents)
    key_parts = [
        documents.fingerprint,
        tokenizer_fingerprint(game.tokenizer),
        game.cache_key(),
        "instances-v2",
    ]
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:24]
    path = frost_cache_dir() / "instances" / f"{key}.json"
    skipped = Counter(documents.skipped)
    if cache and path.is_file():
        payload = json.loads(path.read_text())
        instances = [_instance_from_json(d) for d in payload["instances"]]
        skipped.update(payload["game_skipped"])
    else:
        instances, report = game.instances(documents.docs, warn=False)
        skipped.update(report.counts)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = {"instances": [_instance_to_json(i) for i in instances], "game_skipped": dict(report.counts)}
            # A temporary file of this writer's own: workers that start together (one per core or GPU) all miss
            # the cache and write it; a shared temporary name let one worker's rename take the file from another.
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
            try:
                tmp.write_text(json.dumps(payload))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)  # left only when the write or the rename failed
    if not instances:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))
        raise DataError(
            f"data.source: {config.source!r} gave no usable game instance ({reasons}); give longer documents or a "
            "game with shorter parts (game.move_length, the game file's spans)"
        )
    if skipped:
        warnings.warn(
            f"data: skipped {sum(skipped.values())} of {len(documents.docs) + sum(documents.skipped.values())} "
            f"documents of {config.source!r}: " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())),
            stacklevel=2,
        )
    return instances, skipped, len(documents.docs)


def inspect_source(
    source: str, *, field: str = "text", game: str = "infilling", params: dict[str, Any] | None = None,
    model: str = "embedded",
) -> str:  # fmt: skip
    """What `frost data inspect` prints: counts, skips, token lengths, three example instances of a game."""
    from frost.games import build_game, encode_plain
    from frost.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    documents = load_documents(source, field=field)
    played = build_game(game, tokenizer, params)
    lengths = [len(encode_plain(tokenizer, text)) for _, text in documents.docs]
    instances, report = played.instances(documents.docs, warn=False)
    skipped = Counter(documents.skipped) + report.counts
    lines = [
        f"source: {source}",
        f"game: {played.name}",
        f"documents read: {len(documents.docs)}",
        f"usable: {len(instances)}",
        f"skipped: {sum(skipped.values())}"
        + (f" ({', '.join(f'{n} {r}' for r, n in skipped.items())})" if skipped else ""),
        f"tokens per document: min {min(lengths)}, median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}",
        "",
        "token length histogram:",
    ]
    edges = [0, 64, 96, 128, 192, 256, 384, 512, 10**9]
    for lo, hi in itertools.pairwise(edges):
        n = sum(lo <= v < hi for v in lengths)
        label = f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}"
        lines.append(f"  {label:>9} {n:6d} {'#' * min(60, round(60 * n / max(1, len(lengths))))}")
    kind = f"at most {played.move_length}" if played.spec.move.stop else f"exactly {played.move_length}"
    lines += ["", f"example game instances of {played.name} (moves of {kind} tokens):"]
    for inst in instances[:3]:
        before = tokenizer.decode(list(inst.judge_prefix))
        after = tokenizer.decode(list(inst.judge_suffix))
        lines += [f"- [{inst.source}]", f"  judge before the move: {before!r}", f"  judge after the move: {after!r}"]
        if "gap_ids" in inst.meta:
            lines.append(f"  gap (hidden): {tokenizer.decode(inst.meta['gap_ids'])!r}")
    return "\n".join(lines)
