"""``python -m benchmarks [--only throughput,pull,...] [--quick] [--runs N]``: see ``cli.py``."""

import sys

from .cli import main

sys.exit(main())
