"""Bad input (malformed, rejected, duplicate messages): counted, recorded, logged; a
scan whose chain cannot take it (its setup failed, or its first frame showed the chain
cannot take its frames) ends fail once and its later points are dropped quietly.

The log is limited per scan, not per process: the first `BAD_LOGGED` of each kind
since the last start, then every 1000th (`warn_counted`), so a long-running daemon
still logs the bad input of each new scan; the counters and the open scan's events
hold them all.
"""

from __future__ import annotations

import logging
from typing import Any

from stream.run.openscan import warn_counted
from stream.store.resume import SETUP_FAILED

log = logging.getLogger(__name__)


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


def count_refused(runner: Any, reason: str) -> None:
    """A start `runner` refused: counted, and an event in the open scan's file (if one is
    open), which is what a user of that scan reads; not logged again."""
    runner.counters["rejected"] += 1
    if (cur := runner.current) is not None:
        cur.counters["rejected"] += 1
        cur.collector.store.event("rejected", reason)


def fail_scan(runner: Any, reason: str) -> None:
    """`runner`'s open scan ends fail with the reason; its later points are dropped
    (counted in `rejected`, not logged one by one)."""
    scan_id = runner.current.scan.scan_id
    log.error("scan %s: %s", scan_id, reason)
    runner._finish("fail", reason)
    runner.refused = scan_id


def unusable_frame(runner: Any, cur: Any, problem: str) -> None:
    """A point whose frame no point of its scan could pass (`OpenScan.unusable`: a dense
    frame, a chain that takes sparse frames only): the scan ends fail, once; at its first
    point as one whose setup failed (no point rows, not resumable: it fails again)."""
    runner.counters["rejected"] += 1  # (as its later points)
    if not cur.counters["accepted"]:
        cur.is_set_up, problem = False, f"{SETUP_FAILED}: {problem}"
    fail_scan(runner, problem)
