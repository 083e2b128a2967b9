"""``python -m bench``: see bench/runner.py (``sudo bench/run`` installs what it needs first)."""

import sys

from .runner import main

sys.exit(main())
