"""Exit codes and the progress line every long command prints."""

from __future__ import annotations

import sys
import time

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, every few s otherwise."""

    def __init__(self, label: str, total: int | None = None, interval: float = 2.0,
                 quiet: bool = False):
        self.label, self.total, self.quiet = label, total, quiet
        self.tty = sys.stderr.isatty()
        self.interval = 0.2 if self.tty else interval
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int, total: int | None = None, extra: str = "",
                 force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < self.interval):
            return
        self.last = now
        total = total if total is not None else self.total
        rate = done / max(now - self.t0, 1e-9)
        of = f"/{total}" if total else ""
        line = f"{self.label}: {done}{of} ({rate:.0f}/s){' ' + extra if extra else ''}"
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")
