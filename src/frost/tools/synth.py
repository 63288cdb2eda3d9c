"""`frost data synth`: Cosmopedia-style short stories written by a local instruct model from a seed grid.

Cosmopedia's stories were written by an instruct model from seed prompts; this does the same with a local model
(the embedded SmolLM2 by default) so the project has an offline story set. Each grid item is a (topic, audience,
style) triple; items are processed in fixed batches of a seeded order, each batch sampled with its own seed, so a
resumed run writes exactly what an uninterrupted one would. Degenerate outputs are rejected and counted: repetition
loops, stories too short for infilling, near-duplicates of an accepted story.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from frost.errors import ConfigError

TOPICS = (
    "a lost kitten finding its way home", "a lighthouse keeper and a storm", "a robot who wants to paint",
    "two friends building a treehouse", "a girl who collects shells", "a boy learning to ride a bike",
    "a dragon afraid of the dark", "a baker who forgets an ingredient", "a garden that grows overnight",
    "a trip to the museum", "a snowy day in the mountains", "a detective looking for a missing sandwich",
    "a turtle who wants to fly", "a new student on the first day of school", "a family moving to a new town",
    "a squirrel preparing for winter", "a mysterious map in the attic", "a soccer match in the rain",
    "a fox and a crow who become friends", "a grandmother's old recipe", "a science fair project",
    "a boat trip on a quiet lake", "a library cat", "an astronaut looking back at Earth",
    "a village festival", "a broken music box", "a bee who lost its hive", "a knight who hates fighting",
    "a farmer and a clever goat", "a clock that runs backwards", "a penguin visiting the desert",
    "a letter from a pen pal", "planting the first tree in a city park", "a camping trip and a strange noise",
    "a shy owl who sings", "a king who loses his crown", "a river that talks", "a kite stuck in a tree",
    "a young inventor and a flying bicycle", "a night at the observatory",
)  # fmt: skip
AUDIENCES = ("young children", "middle school students", "teenagers", "adults", "a general audience")
STYLES = (
    "Write it as a simple narrative with dialogue",
    "Give it a gentle lesson at the end",
    "Make it funny and light",
    "Make it calm and descriptive",
    "Include a small surprise in the middle",
)
PROMPT = (
    "Write a short story for {audience} about {topic}. {style}. Start directly with the story, without a title, "
    "and write about 200 words."
)


@dataclass(frozen=True)
class SynthSettings:
    """How stories are sampled; recorded beside the stories."""

    model: str = "embedded"
    seed: int = 0
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_new_tokens: int = 224
    batch_size: int = 16
    min_tokens: int = 110
    """Shortest accepted story in tokens (infilling needs 8 + 24 + 64 = 96; a margin makes usable x/z spans)."""
    max_jaccard: float = 0.5
    """Near-duplicate threshold on 5-gram word shingles."""


@dataclass(frozen=True)
class GridItem:
    """One story request: a topic for an audience in a style (its id names the three)."""

    id: str
    topic: str
    audience: str
    style: str


def grid(seed: int) -> list[GridItem]:
    """Every (topic, audience, style) item in a seeded order."""
    items = [
        GridItem(f"t{t:02d}-a{a}-s{s}", topic, audience, style)
        for (t, topic), (a, audience), (s, style) in itertools.product(
            enumerate(TOPICS), enumerate(AUDIENCES), enumerate(STYLES)
        )
    ]
    random.Random(seed).shuffle(items)
    return items


_WORD = re.compile(r"\w+|[^\w\s]")


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The text's lower-cased word `n`-grams (for near-duplicate checks)."""
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))}


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    return len(a & b) / max(1, len(a | b))


def clean_story(text: str) -> str:
    """Strip a chatty preamble line ("Sure! Here is a story:") and a leading title line, and outer whitespace."""
    lines = text.strip().splitlines()
    while lines and (
        re.match(r"^(sure|here|certainly|of course)\b", lines[0].strip(), re.I)
        or re.match(r"^(title:|#)", lines[0].strip(), re.I)
        or (lines[0].strip().startswith("**") and lines[0].strip().endswith("**"))
        or not lines[0].strip()
    ):
        lines = lines[1:]
    return "\n".join(lines).strip()


def rejection_reason(ids: list[int], text: str, accepted: list[set[Any]], settings: SynthSettings) -> str | None:
    """Why a story is rejected, or None to accept it."""
    if len(ids) < settings.min_tokens:
        return "too short"
    grams = [tuple(ids[i : i + 4]) for i in range(len(ids) - 3)]
    if len(set(grams)) < 0.75 * len(grams):
        return "repetition loop"
    if re.search(r"(\b\w+\b)(\W+\1\b){3,}", text):
        return "repetition loop"
    sh = shingles(text)
    if any(jaccard(sh, other) > settings.max_jaccard for other in accepted):
        return "near-duplicate"
    return None


def _batches(items: list[GridItem], size: int) -> Iterator[tuple[int, list[GridItem]]]:
    for b in range(0, len(items), size):
        yield b // size, items[b : b + size]


def _read_progress(out: Path, log_path: Path) -> tuple[set[int], dict[str, int], list[set[Any]]]:
    """What an earlier run already wrote: the finished batches and the counts from the log, and the shingles of
    the accepted stories in `out` (whose number is the accepted count)."""
    done_batches: set[int] = set()
    counts = {"accepted": 0, "too short": 0, "repetition loop": 0, "near-duplicate": 0}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            entry = json.loads(line)
            done_batches.add(entry["batch"])
            for k, v in entry["counts"].items():
                counts[k] = counts.get(k, 0) + v
    accepted_sh: list[set[Any]] = []
    if out.exists():
        for line in out.read_text().splitlines():
            accepted_sh.append(shingles(json.loads(line)["text"]))
    counts["accepted"] = len(accepted_sh)
    return done_batches, counts, accepted_sh


def _generate_batch(
    model: Any, tokenizer: Any, items: list[GridItem], batch: int, settings: SynthSettings
) -> list[str]:
    """Sample one story per item of batch number `batch` with that batch's own seed; the cleaned texts."""
    from frost.games import render_prompt

    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [
        render_prompt(tokenizer, PROMPT.format(topic=i.topic, audience=i.audience, style=i.style)) for i in items
    ]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    torch.manual_seed(settings.seed * 100_003 + batch)
    with torch.inference_mode():
        gen = model.generate(
            input_ids=ids,
            attention_mask=attn,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            repetition_penalty=settings.repetition_penalty,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad,
        )
    eos = [t for t in (tokenizer.eos_token_id, pad) if t is not None]
    texts = []
    for seq in gen[:, width:].tolist():
        cut = next((n for n, t in enumerate(seq) if t in eos), len(seq))
        texts.append(clean_story(tokenizer.decode(seq[:cut], skip_special_tokens=True)))
    return texts


def _screen_batch(
    tokenizer: Any,
    items: list[GridItem],
    texts: list[str],
    batch: int,
    accepted_sh: list[set[Any]],
    settings: SynthSettings,
    keys: Iterable[str],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Accept or reject each story of a batch in order (adding the accepted ones' shingles to `accepted_sh`):
    the rows to write and the batch's counts under `keys`."""
    batch_counts = dict.fromkeys(keys, 0)
    rows = []
    for item, text in zip(items, texts, strict=True):
        story_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        reason = rejection_reason(story_ids, text, accepted_sh, settings)
        if reason is None:  # a batch is kept whole, so a resumed run writes what one run would
            accepted_sh.append(shingles(text))
            batch_counts["accepted"] += 1
            rows.append({"id": item.id, "text": text, "topic": item.topic, "audience": item.audience,
                         "style": item.style, "batch": batch})  # fmt: skip
        else:
            batch_counts[reason] += 1
    return rows, batch_counts


def _append_batch(
    out: Path, log_path: Path, batch: int, rows: list[dict[str, Any]], batch_counts: dict[str, int]
) -> None:
    """Append a finished batch's accepted stories to `out` and its line to the log."""
    with out.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    with log_path.open("a") as f:
        f.write(json.dumps({"batch": batch, "counts": batch_counts}) + "\n")


def _write_record(record_path: Path, record: dict[str, Any], counts: dict[str, int]) -> None:
    """Set the record's counts and (re)write it."""
    record["counts"] = counts
    record_path.write_text(json.dumps(record, indent=1) + "\n")


def synthesize(
    out: Path,
    *,
    target: int,
    settings: SynthSettings,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write accepted stories to `out` (JSONL) until at least `target` are accepted; resumable.

    Batches are kept whole, so the count can exceed `target` by less than a batch.

    Beside it: `<out>.record.json` (model, prompt template, sampling settings, counts) and `<out>.log.jsonl`
    (one line per finished batch, with its rejections), which is how a resumed run knows what is done.
    """
    from tqdm import tqdm

    from frost.models import load_model

    if target < 1:
        raise ConfigError(f"--target must be >= 1, got {target}")
    if model is None or tokenizer is None:
        lm = load_model(settings.model)
        model, tokenizer = lm.model, lm.tokenizer
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log.jsonl")
    record_path = out.with_suffix(".record.json")
    done_batches, counts, accepted_sh = _read_progress(out, log_path)
    record = {
        "model": settings.model,
        "prompt_template": PROMPT,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "settings": asdict(settings),
        "grid": {"topics": len(TOPICS), "audiences": len(AUDIENCES), "styles": len(STYLES)},
    }
    bar = tqdm(total=target, initial=min(target, counts["accepted"]), disable=not progress, desc="stories")
    for b, items in _batches(grid(settings.seed), settings.batch_size):
        if counts["accepted"] >= target:
            break
        if b in done_batches:
            continue
        texts = _generate_batch(model, tokenizer, items, b, settings)
        rows, batch_counts = _screen_batch(tokenizer, items, texts, b, accepted_sh, settings, counts)
        _append_batch(out, log_path, b, rows, batch_counts)
        for k, v in batch_counts.items():
            counts[k] += v
        bar.update(batch_counts["accepted"])
        _write_record(record_path, record, counts)
    bar.close()
    _write_record(record_path, record, counts)
    return counts
