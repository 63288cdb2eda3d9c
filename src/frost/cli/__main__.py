"""`python -m frost.cli` (what torchrun launches): the `frost` command."""

import sys

from frost.cli import main

sys.exit(main())
