"""`python -m stream.cli`: the `peakstream` command."""

import sys

from stream.cli.main import run

sys.exit(run())
