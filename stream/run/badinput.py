"""Bad input (malformed, rejected, duplicate messages): counted, recorded, logged.

The log is limited per scan, not per process: the first `BAD_LOGGED` of each kind
since the last start, then every 1000th (`warn_counted`), so a long-running daemon
still logs the bad input of each new scan; the counters and the open scan's events
hold them all.
"""

from __future__ import annotations

from typing import Any

from stream.run.openscan import warn_counted


def count_bad(runner: Any, kind: str, reason: str, point_id: int = -1) -> None:
    """One bad message of `kind` for `runner` (a ScanRunner): its counters and the open
    scan's, an event in the open scan's file, and the log within the limit."""
    runner.counters[kind] += 1
    runner.warned[kind] += 1  # since the last start (cleared by ScanRunner._start)
    cur = runner.current
    if cur is not None:
        cur.counters[kind] += 1
        cur.collector.store.event(kind, reason, point_id)
    warn_counted(kind, runner.warned[kind], reason, kind)
