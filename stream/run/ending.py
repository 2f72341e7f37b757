"""A scan whose end message never came: aborted with reason `timeout`, unless every
point it announced came (then it is complete: success, with an event `no_end` and the
reason saying that the end never came, as a DECTRIS series' end says; bad points, those
refused on arrival too, still make it incomplete, their reason first).

The silence is only the sender's when the source does not still follow the scan: a
source that ends its scans itself (Bliss, an EPICS acquisition) says which scan it
follows (`following`) while the control system has it open, and that scan never times
out here (its own timeouts bound it: `reconnect_timeout`, `series_timeout`)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def followed(source: Any, scan_id: str) -> bool:
    """Does `source` still follow the scan `scan_id` (and will send its end itself)? A
    ZeroMQ lane, a recording or a DECTRIS detector never says so: end_timeout applies."""
    return bool(scan_id) and getattr(source, "following", "") == scan_id


def timed_out(cur: Any, limit: float) -> tuple[str, str]:
    """(status, reason) for the open scan `cur` (an OpenScan) after `limit` s without a
    message."""
    buf, collector = cur.collector.buffer, cur.collector
    n = buf.npoints
    # a point whose message was refused on arrival came too (it is written bad), as a
    # DECTRIS series counts an image that did not fit
    if n is not None and not collector.counters["missing"] and \
            all(buf.seen(i) or i in collector.refused for i in range(buf.next_id, n)):
        what = (f"no end message within {limit:g} s of the last message, but all {n} "
                f"points came: taken as ended")
        collector.store.event("no_end", what, -1)
        log.warning("scan %s: %s", cur.scan.scan_id, what)
        return "success", what
    return "abort", f"timeout: no end message within {limit:g} s of the last message"


def lowered(status: str, reason: str, missing: int, bad: int, processed: int,
            first_bad: str) -> tuple[str, str]:
    """(status, reason) of a scan that ended `status` with these counts: a success with
    no point processed fails, one with points missing or bad is incomplete (never a
    silent success); its own reason (a series whose end never came, ...) stays after
    the one that lowers it. `first_bad`: "point N: why" of the first bad point."""
    said = f"; {reason}" if reason else ""
    if status == "success" and bad and not processed:
        return "fail", (f"all {bad} point(s) received were bad (the first: {first_bad}; "
                        f"inspect lists them){said}")
    if status == "success" and (missing or bad):
        lost = [f"{missing} point(s) missing"] if missing else []
        lost += [f"{bad} point(s) bad (the first: {first_bad})"] if bad else []
        return "incomplete", (f"{', '.join(lost)}: inspect lists them; where a recording "
                              f"holds them (readable), `peakstream replay RECORDING --fill "
                              f"FILE` completes the scan{said}")
    return status, reason
