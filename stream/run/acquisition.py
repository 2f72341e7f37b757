"""Is a resumed scan's sender the acquisition the file holds, or another one with the
same scan id? A crashed file is continued by its scan id and config alone; a new
acquisition that reuses the id (its start, then its points from 0) would otherwise
be appended to the old file: the points the file holds kept, the rest the new
acquisition's.

The evidence is the points the file already holds, sent again (a sender that starts
over): each one's motors, counters and time must be those stored. The first one that
differs, while nothing new has been taken into the file, says it is another
acquisition: the resumed file is closed as it was (an event `not_resumed` says why),
it is not resumed again by this process, and the scan starts in a new file, that
point included, so none of the new acquisition's points is lost. A sender that goes
on after the restart (no point sent again) or sends the same recording again gives
no such evidence and continues the file.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from stream.core.messages import Point
from stream.store.scanfile import ScanStore

log = logging.getLogger(__name__)


def differences(resumed: Any, point: Point) -> list[str]:
    """What of `point` (one the resumed file holds) differs from its stored row: motors,
    counters, time; values missing on either side are no evidence."""
    i = point.point_id
    stored = resumed.points
    if i >= len(stored["point_id"]):
        return []
    sent = [("time", point.time)]
    sent += [(f"motors/{k}", v) for k, v in point.motors.items()]
    sent += [(f"counters/{k}", v) for k, v in point.counters.items()]
    out = []
    for key, value in sent:
        column = stored.get(key)
        if column is None:
            continue
        try:
            now = np.asarray(value, dtype=column.dtype).item()
        except (TypeError, ValueError):
            continue
        was = column[i].item()
        if isinstance(was, float) and (not math.isfinite(was) or not math.isfinite(now)):
            continue
        if now != was:
            out.append(f"{key} {now!r}, file {was!r}")
    return out


def taking_new_points(cur: Any) -> bool:
    """Has the resumed scan taken a point the file did not hold (then it is this
    acquisition's continuation, and no longer checked)?"""
    return cur.newest >= cur.resumed.next_point


def resent_point(runner: Any, cur: Any, point: Point, parts: list) -> None:
    """A point the resumed file holds, sent again: kept when it is the stored one;
    otherwise the scan goes to a new file (`another_acquisition`) and the point with it."""
    why = [] if taking_new_points(cur) else differences(cur.resumed, point)
    if not why:
        cur.counters["kept"] += 1  # stored before the crash: kept, not processed again
        return
    another_acquisition(runner, cur, f"point {point.point_id}: " + "; ".join(why[:3]))
    runner._point(point, parts)


def another_acquisition(runner: Any, cur: Any, why: str) -> None:
    """Leave the resumed file as it was (with an event saying why) and open the scan's
    start in a new file."""
    path, start = cur.path, cur.scan.start
    runner.current = None
    cur.collector.store.close_unchanged()  # the resume's own changes are not committed
    if cur.ptyd is not None:
        cur.ptyd.close("abort")
    runner.resumer.not_resumed.add(path)
    message = (f"not resumed: the sender's scan {start.scan_id!r} is another acquisition "
               f"({why}); it is written to a new file")
    try:
        store = ScanStore.reopen(path)
        try:
            store.event("not_resumed", message)
            store.checkpoint()  # the event alone: rows, status and resume state unchanged
        finally:
            store.close_unchanged()
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s: could not record why it was not resumed: %s", path, exc)
    runner.last_error = f"scan {start.scan_id}: {path} {message}"
    log.warning("scan %s: %s %s", start.scan_id, path, message)
    runner._start(start)
