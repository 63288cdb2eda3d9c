"""Generated blocks in hand-written Markdown files: text between `<!-- KIND:NAME -->` and `<!-- /KIND:NAME -->`
markers is replaced by a command's output, and everything outside the markers is left as it was."""

from __future__ import annotations

import re
from pathlib import Path


def write_block(path: Path, kind: str, name: str, body: str, *, new_file: str = "") -> None:
    """Replace the `<!-- KIND:NAME -->` block of a Markdown file with `body`, or append the block when the file has
    none (a missing file starts as `new_file`)."""
    start, end = f"<!-- {kind}:{name} -->", f"<!-- /{kind}:{name} -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else new_file
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    path.write_text(text)
