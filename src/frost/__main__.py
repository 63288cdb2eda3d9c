"""`python -m frost ...`: the `frost` command."""

import sys

from frost.cli import main

sys.exit(main())
