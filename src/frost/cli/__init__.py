"""The `frost` command line: `parser` declares every command's options, `commands` runs each command by calling the
library, `main` ties them together with one-line errors (exit code 2) for bad input."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from frost.cli.commands import COMMANDS
from frost.cli.parser import build_parser
from frost.errors import FrostError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `frost` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FrostError as exc:
        print(f"frost {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"frost {args.command}: interrupted", file=sys.stderr)
        return 130
