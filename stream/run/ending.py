"""A scan whose end message never came: aborted with reason `timeout`, unless every
point it announced came (then it is complete: success, with an event `no_end` and the
reason saying that the end never came, as a DECTRIS series' end says; bad points, those
refused on arrival too, still make it incomplete, their reason first)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


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
