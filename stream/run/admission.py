"""What a message may ask for, checked as it arrives (before it touches the open scan).

A start is checked whole (a safe scan_id, sizes within `[source] max_points`,
a trajectory and a detector the chain can take) before the scan in progress
is ended for it; a point's frame is checked against its scan's start (shape,
dtype, finite sparse intensities, references only when `[source] allow_refs`)
before it takes its place, so a bad message never makes a later valid one for
the same point a duplicate.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from stream.config.schema import Config
from stream.core.item import SparseFrame
from stream.core.messages import End, FrameRef, Point, Start
from stream.core.scan import Scan
from stream.run.openscan import check_start

log = logging.getLogger(__name__)


def same_start(a: Start, b: Start) -> bool:
    """`b` is `a` sent again (a restarted sender resending its recording): the same
    scan_id, points and detector frames. Another start ends the open scan instead."""
    def frames(s: Start) -> dict:
        return {k: (tuple(d.shape), str(d.dtype)) for k, d in s.detectors.items()}

    return (a.scan_id, a.npoints, frames(a)) == (b.scan_id, b.npoints, frames(b))


def admit_start(start: Start, config: Config) -> tuple[Scan, str, Any] | str:
    """(scan, detector, info) of a start that can be taken, or why it cannot: checked
    whole (limits, then `openscan.check_start`) before the open scan is touched."""
    most = config["source"]["max_points"]
    sizes = {"npoints": start.npoints, **{f"trajectory {k}": v
                                           for k, v in start.trajectory.items()
                                           if isinstance(v, int) and k != "kind"}}
    for what, n in sizes.items():
        if n is not None and n > most:
            return f"start: {what} {n} is more than [source] max_points ({most})"
    most_bytes = config["source"]["max_frame_bytes"]
    for name, info in start.detectors.items():
        nbytes = info.shape[0] * info.shape[1] * np.dtype(info.dtype).itemsize
        if nbytes > most_bytes:
            return (f"start: detector {name!r} frames of {nbytes} bytes are more than "
                    f"[source] max_frame_bytes ({most_bytes})")
    try:
        return check_start(start, config["source"]["detector"] or None)
    except ValueError as exc:
        return str(exc)


def id_problem(pid: int, cur: Any, config: Config) -> str:
    """Why point `pid` cannot be one of the open scan `cur`'s (beyond its npoints or
    max_points, or more than max_gap ahead of the newest point received or released),
    or ""."""
    src, buf = config["source"], cur.collector.buffer
    if buf.npoints is not None and pid >= buf.npoints:
        return f"beyond npoints {buf.npoints}"
    if pid >= src["max_points"]:
        return f"beyond [source] max_points ({src['max_points']})"
    newest = max(cur.newest, buf.next_id - 1)
    if pid - newest > src["max_gap"]:
        return (f"{pid - newest} points ahead of the newest ({newest}), more than "
                f"[source] max_gap ({src['max_gap']})")
    return ""


def frame_problem(point: Point, cur: Any, allow_refs: bool) -> str:
    """Why the point's frame cannot be the open scan `cur`'s (checked on arrival, before
    the point takes its place: a later valid message may still come), or ""."""
    detector = cur.detector
    info = cur.scan.start.detectors[detector]
    if isinstance(point.extra.get("error"), str):
        return ""  # the source could not read it: recorded as bad with that reason
    frame = point.frames.get(detector)
    if frame is None:
        return f"no frame for detector {detector!r}"
    if isinstance(frame, FrameRef):
        return "" if allow_refs else "frame references are off ([source] allow_refs)"
    if tuple(frame.shape) != tuple(info.shape):
        return f"frame is {list(frame.shape)}, start announced {list(info.shape)}"
    if isinstance(frame, SparseFrame):
        if not np.isfinite(frame.intensity).all():
            return "sparse frame has NaN or infinite intensities"
        return ""
    if np.dtype(frame.dtype) != np.dtype(info.dtype):
        return f"frame is {frame.dtype}, start announced {info.dtype}"
    return ""


def start_warnings(start: Start) -> list[str]:
    """What a start that is taken likely did not mean (recorded as events `warning`): a
    grid or snake whose npoints is not a whole number of rows of nfast."""
    t, n = start.trajectory, start.npoints
    nfast = t.get("nfast")
    if t.get("kind") in ("grid", "snake") and isinstance(nfast, int) and nfast > 0 and n \
            and n % nfast:
        return [f"start: npoints {n} is not a multiple of nfast {nfast}: the last row of "
                f"the {t['kind']} holds {n % nfast} of its {nfast} points"]
    return []


def warn_start(start: Start, store: Any) -> None:
    """Log and record in the scan's file (events `warning`) what the start likely did not
    mean (`start_warnings`)."""
    for warning in start_warnings(start):
        store.event("warning", warning, -1)
        log.warning("scan %s: %s", start.scan_id, warning)


def end_npoints(end: End, cur: Any, config: Config) -> str:
    """Why the end's npoints is not taken, or "" (it agrees with the start's, or the
    start gave none and it is now the scan's): another than the start's (the start's is
    kept), or beyond the limits."""
    buf = cur.collector.buffer
    if end.npoints is None or end.npoints == buf.npoints:
        return ""
    if buf.npoints is not None:
        return f"end: npoints {end.npoints} is not the start's {buf.npoints}; the start's is kept"
    if problem := id_problem(end.npoints - 1, cur, config):
        return f"end: npoints {end.npoints} ignored: {problem}"
    buf.npoints = end.npoints
    return ""
