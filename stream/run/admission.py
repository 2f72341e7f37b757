"""What a message may ask for, checked as it arrives (before it touches the open scan).

A start is checked whole (a safe scan_id, sizes within `[source] max_points`,
a trajectory and a detector the chain can take) before the scan in progress
is ended for it; a point's frame is checked against its scan's start (shape,
dtype, finite sparse intensities, references only when `[source] allow_refs`)
before it takes its place, so a bad message never makes a later valid one for
the same point a duplicate.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from stream.config.schema import Config
from stream.core.item import Item, SparseFrame
from stream.core.messages import FrameRef, Point, Start
from stream.core.scan import Scan

SCAN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a safe file name


def check_start(start: Start, config: Config) -> tuple[Scan, str, Any] | str:
    """(scan, detector, info) of a start that can be taken, or why it cannot: checked
    whole before the open scan is touched."""
    if not SCAN_ID.fullmatch(start.scan_id) or ".." in start.scan_id:
        return (f"start: scan_id {start.scan_id!r} is not a safe file name (letters, "
                f"digits, '.', '_', '-'; no '..')")
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
        scan = Scan.from_start(start)
    except ValueError as exc:  # a trajectory map that decode() did not see
        return f"start: {exc}"
    try:
        detector, info = scan.detector(config["source"]["detector"] or None)
    except KeyError as exc:
        return f"start: {exc.args[0]}"
    return scan, detector, info


def frame_problem(point: Point, info: Any, detector: str, allow_refs: bool) -> str:
    """Why the point's frame cannot be the scan's (checked on arrival, before the point
    takes its place: a later valid message may still come), or ""."""
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


def check_motors(item: Item, limit: float, ranges: dict[str, tuple[float, float]]) -> None:
    """Positions beyond +-`limit` (or outside `ranges`) or infinite are not used: set to
    NaN (so the point is never linked) with a flag that says why."""
    for name, value in item.motors.items():
        lo, hi = ranges.get(name, (-limit, limit))
        if math.isinf(value):
            item.flags.append(f"motor {name} = {value:g} is not finite: not used")
        elif not lo <= value <= hi and not math.isnan(value):
            item.flags.append(f"motor {name} = {value:g} is outside [{lo:g}, {hi:g}]: not used")
        else:
            continue
        item.motors[name] = math.nan
