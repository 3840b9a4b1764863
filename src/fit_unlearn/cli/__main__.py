"""``python -m fit_unlearn.cli``: the ``fit-unlearn`` command (used by benchmarks/crash_resume.py)."""

import sys

from fit_unlearn.cli import main

sys.exit(main())
