"""Entry point of the DECTRIS detector emulator (stream/sources/dectris/emulator.py)."""

import sys

from stream.sources.dectris.emulator import main

if __name__ == "__main__":
    sys.exit(main())
