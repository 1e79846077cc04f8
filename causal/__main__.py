"""``python -m causal``: see :mod:`causal.cli`."""

import sys

from .cli import main

sys.exit(main())
