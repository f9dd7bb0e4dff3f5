"""`python -m benchmarks MODEL [MODEL ...] --data DIR`: see `benchmarks.cli`."""

import sys

from benchmarks.cli import main

sys.exit(main())
