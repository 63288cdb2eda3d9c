"""Documents in: the project's story sets and local files, as `(id, text)` pairs in a deterministic order."""

from __future__ import annotations

import json
from pathlib import Path

from frost.errors import DataError

ASSETS = Path(__file__).parent / "assets"
BUILTIN_SETS = {"handwritten": ASSETS / "handwritten_stories.jsonl"}


def read_documents(source: str, *, field: str = "text") -> list[tuple[str, str]]:
    """`(id, text)` documents of a built-in set name or a `.jsonl` file (one object per line, text in `field`)."""
    path = BUILTIN_SETS.get(source, Path(source))
    if not path.is_file():
        raise DataError(f"data: {source!r} is neither a built-in set ({', '.join(BUILTIN_SETS)}) nor a file")
    docs: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"data: {path}:{n} is not valid JSON ({exc.msg})") from exc
            if field not in obj:
                raise DataError(f"data.field: {path}:{n} has no field {field!r}; it has {sorted(obj)}")
            docs.append((str(obj.get("id", f"{path.stem}-{n}")), str(obj[field])))
    if not docs:
        raise DataError(f"data: {path} holds no documents")
    return docs
