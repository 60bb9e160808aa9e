"""`python -m bizzyd` (used by the binary upgrade to exec a new master)."""

import sys

from .cli import main

sys.exit(main())
