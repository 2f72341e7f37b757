"""The series state machine: DECTRIS series in, our Start / Point / End out.

States of the series the detector is on, keyed by its series id (and
`series_unique_id` when v2 gives one):

    idle -> armed (its start seen) -> running (first image) -> ended | aborted | timed-out

* ended: the detector's end came after every announced image (or the count
  was not announced); aborted: the end came early (the detector was
  aborted), or a new start came before the end; timed-out: no message of the
  series for `series_timeout` s. Each closes our scan with an End (status
  success, abort, abort with a reason starting "timeout"); an ended series
  none of whose points got motors from the motor lane fails (`join.no_motors`).
* Images before any start (we connected after the arm) are counted as
  `no_header` ("no header, waiting for the next series"); images and ends of
  a series that is not the armed one are counted as `other_series`; images
  of a series that has closed are `stray`. None of them changes the state.
* Our Start goes out with the first point, when the first image has given
  the frames' shape and dtype (v2 starts never give the dtype) and, with a
  motor lane, its motors have had their chance to come: the motor and
  counter names are the configured ones, else those of that first point.
  A series without images sends nothing on.

Motor points (our protocol, from the motor lane) join images by point id
(`join.Joiner`). A motor point belongs to the open series when its scan_id
is ours (series-<id>, or the unique id) or the one the motor lane used first
during this series (the lane may name its scans its own way). One with
another scan_id is kept for the next series: it joins it if it bears that
series' scan id or came at most `join_timeout` s before its start (the two
lanes race), else it is stale; so is one named after a closed series or a
series seen without its start.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from stream.core.messages import DetectorInfo, End, Message, Point, Start
from stream.sources.dectris.common import (
    DetectorMessage,
    SeriesEnd,
    SeriesImage,
    SeriesStart,
    detector_base,
    detector_name,
    goniometer_axes,
    scan_id_for,
    trajectory_motors,
)
from stream.sources.dectris.join import Joined, Joiner, no_motors, point_counters
from stream.sources.dectris.maps import map_fits
from stream.sources.dectris.retake import no_end, note, retake

log = logging.getLogger(__name__)

IDLE, ARMED, RUNNING = "idle", "armed", "running"
ENDED, ABORTED, TIMED_OUT = "ended", "aborted", "timed-out"
NO_HEADER = "no header, waiting for the next series"
MAX_PENDING_MOTORS = 100_000
COUNTERS = ("series", "ended", "aborted", "timed_out", "empty", "images", "no_header",
            "other_series", "stray", "points", "motor_points", "motor_stale",
            "motor_unmatched", "joined", "without_motors", "motor_late", "motor_duplicate",
            "image_duplicate", "motor_dropped")


@dataclass
class Series:
    """The open series: what its start said, its joiner and our scan's state."""

    start: SeriesStart
    scan_id: str
    joiner: Joiner
    last: float  # monotonic time of the series' newest message (either lane)
    state: str = ARMED
    ending: bool = False  # the detector's end came; waiting images go on first
    opened: bool = False  # our Start has gone out
    images: int = 0
    next_id: int = 0  # one past the largest image id seen
    points: int = 0
    flagged: int = 0  # points that went on without motors
    absent: set[str] = field(default_factory=set)  # counters logged as absent (join.py)
    motor_scan_id: str | None = None
    detectors: dict[str, str] = field(default_factory=dict)  # channel -> our name
    kinds: dict[str, tuple] = field(default_factory=dict)  # channel -> (shape, dtype name)
    misfits: dict[int, Point | None] = field(default_factory=dict)  # see retake.py
    # axis -> (start, increment) of the start message's goniometer (motors without a lane)
    goniometer: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        s = self.start
        return f"{s.series_id}" + (f" ({s.unique_id})" if s.unique_id else "")


def same_series(start: SeriesStart, msg: SeriesImage | SeriesEnd) -> bool:
    if msg.series_id != start.series_id:
        return False
    return msg.unique_id is None or start.unique_id is None or msg.unique_id == start.unique_id


class SeriesMachine:
    """Turns detector messages and motor points into our messages (no sockets here)."""

    def __init__(self, *, motors: list[str] | None = None, counters: list[str] | None = None,
                 trajectory: dict | None = None, join_timeout: float = 2.0,
                 series_timeout: float = 30.0, motor_lane: bool = True,
                 prefix: str = "eiger"):
        self.motors, self.counter_names = motors, counters
        self.trajectory = dict(trajectory) if trajectory else None  # None: a sweep in motor 0
        self.join_timeout, self.series_timeout = join_timeout, series_timeout
        self.motor_lane, self.prefix = motor_lane, prefix
        self.lane_endpoint = ""  # where the motor lane listens (set by the source), for reasons
        self.counters: Counter = Counter({k: 0 for k in COUNTERS})
        self.current: Series | None = None
        self.last: Series | None = None  # the newest closed series
        self.message = ""
        self.finished: deque[dict[str, Any]] = deque(maxlen=16)
        self.closed_ids: deque[str] = deque(maxlen=64)  # scan ids of closed series
        self.pending: deque[tuple[Point, float]] = deque(maxlen=MAX_PENDING_MOTORS)
        self._orphans: deque[tuple[str, int]] = deque(maxlen=64)  # (kind, series) logged

    # ------------------------------------------------------------ input

    def detector(self, msg: DetectorMessage, now: float) -> list[Message]:
        """One decoded detector message; the messages it lets out."""
        if isinstance(msg, SeriesStart):
            return self._on_start(msg, now)
        if isinstance(msg, SeriesImage):
            return self._on_image(msg, now)
        return self._on_end(msg, now)

    def motor(self, point: Point, now: float) -> list[Message]:
        """A motor point of the motor lane."""
        self.counters["motor_points"] += 1
        cur = self.current
        if cur is not None and point.scan_id == cur.scan_id:
            return self._motor_for(cur, point, now)
        if point.scan_id in self.closed_ids:
            self.counters["motor_stale"] += 1
            log.debug("motor point %d of closed scan %r dropped", point.point_id, point.scan_id)
            return []
        if cur is not None and cur.motor_scan_id in (None, point.scan_id):
            return self._motor_for(cur, point, now)
        self.pending.append((point, now))  # for the next series
        return []

    def tick(self, now: float) -> list[Message]:
        """Timeouts: images that waited for motors, the end of an ending series, a series
        silent for `series_timeout` s."""
        cur = self.current
        if cur is None:
            return []
        out = self._emit(cur, cur.joiner.expired(now))
        if cur.ending and not cur.joiner.images:
            out += self._close(cur, now)
        elif now - cur.last > self.series_timeout:  # (complete: ended, see retake.no_end)
            out += self._close(cur, now, *no_end(cur, self.series_timeout, ENDED, TIMED_OUT))
        return out

    def deadline(self) -> float | None:
        """The next monotonic time at which `tick` has something to do, or None."""
        cur = self.current
        if cur is None:
            return None
        join = cur.joiner.next_deadline()
        series = cur.last + self.series_timeout
        return series if join is None else min(join, series)

    def close(self, reason: str, now: float) -> list[Message]:
        """End the open series (our scan ends with status abort and the reason)."""
        cur = self.current
        return [] if cur is None else self._close(cur, now, ABORTED, reason)

    def status(self) -> dict[str, Any]:
        """State, series id, counters (joins included) and the newest closed series."""
        cur = self.current or self.last
        counts = self.counters.copy()
        if self.current is not None:
            counts.update(self.current.joiner.counts)
        out: dict[str, Any] = {"state": cur.state if cur else IDLE, "message": self.message,
                               **counts}
        if cur is not None:
            out.update(series_id=cur.start.series_id, series_unique_id=cur.start.unique_id,
                       scan_id=cur.scan_id, series_images=cur.images, series_points=cur.points,
                       npoints=cur.start.npoints, waiting=len(cur.joiner.images))
        out["history"] = list(self.finished)
        return out

    # ------------------------------------------------------------ detector messages

    def _on_start(self, start: SeriesStart, now: float) -> list[Message]:
        out: list[Message] = []
        cur = self.current
        if cur is not None:
            if cur.ending:
                out += self._close(cur, now)
            else:
                out += self._close(cur, now, ABORTED, f"a new series ({start.series_id}) "
                                                      f"started before the end of series "
                                                      f"{cur.label}")
        joiner = Joiner(self.join_timeout, enabled=self.motor_lane)
        self.current = cur = Series(start, scan_id_for(start), joiner, now)
        while cur.scan_id in self.closed_ids:  # a series id used again (v1 after a restart)
            self.closed_ids.remove(cur.scan_id)
        self.counters["series"] += 1
        self.message = ""
        log.info("series %s armed: %s images, scan %s", cur.label,
                 start.npoints if start.npoints is not None else "unknown number of",
                 cur.scan_id)
        pending, self.pending = list(self.pending), deque(maxlen=MAX_PENDING_MOTORS)
        for point, came in pending:  # named for this series, or just ahead of its start
            if point.scan_id == cur.scan_id or now - came <= self.join_timeout:
                out += self.motor(point, now)
                self.counters["motor_points"] -= 1  # counted when it first came
            else:
                self.counters["motor_stale"] += 1
        return out

    def _on_image(self, img: SeriesImage, now: float) -> list[Message]:
        self.counters["images"] += 1
        cur = self.current
        if cur is None or cur.ending:
            last = cur if cur is not None else self.last
            if last is not None and same_series(last.start, img):
                self._orphan("stray", img, f"image {img.image_id} of series {last.label}, "
                                           f"which has closed")
            else:
                self._orphan("no_header", img, f"image {img.image_id} of series "
                                               f"{img.series_id}: {NO_HEADER}")
                self.message = NO_HEADER
            return []
        if not same_series(cur.start, img):
            self._orphan("other_series", img, f"image {img.image_id} of series "
                                              f"{img.series_id} while series {cur.label} "
                                              f"is open")
            return []
        cur.last = now
        if cur.joiner.seen(img.image_id):
            if not retake(cur, img):
                self.counters["image_duplicate"] += 1
                log.warning("series %s: image %d came twice; dropped", cur.label, img.image_id)
                return []
            log.info("series %s: image %d replaces one that did not fit", cur.label, img.image_id)
        else:
            cur.images += 1
            note(cur, img)
        cur.next_id = max(cur.next_id, img.image_id + 1)
        cur.state = RUNNING
        return self._emit(cur, cur.joiner.add_image(img, now))

    def _on_end(self, end: SeriesEnd, now: float) -> list[Message]:
        cur = self.current
        if cur is None or not same_series(cur.start, end) or cur.ending:
            kind = "other_series" if cur is not None and not cur.ending else (
                "stray" if self.last is not None and same_series(self.last.start, end)
                else "no_header")
            self._orphan(kind, end, f"end of series {end.series_id} ({kind})")
            return []
        cur.last, cur.ending = now, True
        return self.tick(now)

    # ------------------------------------------------------------ our messages

    def _motor_for(self, cur: Series, point: Point, now: float) -> list[Message]:
        if cur.motor_scan_id is None:  # the motor lane's scan id for this series
            cur.motor_scan_id = point.scan_id
        cur.last = now
        return self._emit(cur, cur.joiner.add_motors(point, now))

    def _emit(self, cur: Series, joined: list[Joined]) -> list[Message]:
        out: list[Message] = []
        for j in joined:
            if not cur.opened:
                out.append(self._open(cur, j))
            out.append(self._point(cur, j))
        return out

    def _open(self, cur: Series, first: Joined) -> Start:
        """Our Start, from the series' start and its first point."""
        s = cur.start
        channels = [c for c in s.channels if c in first.image.frames] or list(first.image.frames)
        channels += [c for c in first.image.frames if c not in channels]
        detectors = {}
        for ch in channels:
            frame = first.image.frames[ch]
            name = detector_name(detector_base(s.meta, self.prefix), ch, len(channels))
            cur.detectors[ch] = name
            cur.kinds[ch] = (tuple(frame.shape), frame.dtype.name)
            flat = None if s.flatfield_applied else s.flatfield.get(ch)
            mask = s.pixel_mask.get(ch)
            detectors[name] = DetectorInfo(tuple(frame.shape), frame.dtype.name,
                                           *(map_fits(m, frame.shape, k, cur.label) for k, m in
                                             (("flatfield", flat), ("pixel_mask", mask))))
        m = first.motors
        cur.goniometer = goniometer_axes(s.meta)
        motors = self.motors if self.motors is not None else sorted(
            set(m.motors if m else ()) | set(trajectory_motors(self.trajectory or {}))
            | set(cur.goniometer))
        moving = [a for a, (_, inc) in cur.goniometer.items() if inc]
        fast = "omega" if "omega" in moving else (moving[0] if moving else
                                                  (motors[0] if motors else None))
        trajectory = self.trajectory or ({"kind": "sweep", "fast": fast} if fast
                                         else {"kind": "sweep"})
        counters = (self.counter_names if self.counter_names is not None
                    else sorted(m.counters) if m else [])
        meta = {"source": "dectris", "series_id": s.series_id, **s.meta,
                "channels": {name: ch for ch, name in cur.detectors.items()}}
        user = s.meta.get("user_data")
        if isinstance(user, dict) and isinstance(user.get("sample"), str):
            meta["sample"] = user["sample"]
        if s.unique_id:
            meta["series_unique_id"] = s.unique_id
        cur.opened = True
        log.info("series %s: scan %s starts (%s)", cur.label, cur.scan_id,
                 ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in detectors.items()))
        return Start(cur.scan_id, detectors, list(motors), list(counters), s.npoints,
                     dict(trajectory), meta)

    def _point(self, cur: Series, j: Joined) -> Point:
        img, m = j.image, j.motors
        if img.image_id in cur.misfits:  # refused by the runner: a copy may replace it
            cur.misfits[img.image_id] = m
        frames = {cur.detectors.get(ch, ch): f for ch, f in img.frames.items()}
        extra: dict[str, Any] = {k: v for k, v in img.times.items()}
        motors = {a: start + inc * img.image_id for a, (start, inc) in cur.goniometer.items()}
        motors.update(m.motors if m else {})  # the motor lane's readings win
        if m is None and self.motor_lane and not cur.goniometer:
            flag = (f"motors: none came within {self.join_timeout:g} s of image "
                    f"{img.image_id} (processed without them)")
            extra["flags"] = [flag]
            cur.flagged += 1
            log.log(logging.WARNING if cur.flagged <= 3 else logging.DEBUG, "series %s: %s%s",
                    cur.label, flag, " (further ones: a count at the end)"
                    if cur.flagged == 3 else "")
        when = img.time
        if math.isnan(when):
            when = m.time if m is not None and math.isfinite(m.time) else time.time()
        cur.points += 1
        self.counters["points"] += 1
        return Point(cur.scan_id, img.image_id, when, motors,
                     point_counters(m, self.counter_names, extra, cur), frames, extra)

    def _close(self, cur: Series, now: float, state: str | None = None,
               reason: str = "") -> list[Message]:
        """Close the open series: waiting images go on, then our End."""
        out = self._emit(cur, cur.joiner.flush(now))
        late = cur.joiner.counts["motor_late"]
        self.counters.update(cur.joiner.counts)
        cur.joiner.counts = Counter()
        unmatched = cur.joiner.unmatched_motors()
        if unmatched:
            self.counters["motor_unmatched"] += unmatched
            log.warning("series %s: %d motor points had no image", cur.label, unmatched)
        if cur.flagged:
            log.warning("series %s: %d points went on without motors", cur.label, cur.flagged)
        n = cur.start.npoints
        if state is None:  # the detector's end
            short = n is not None and cur.images < n
            state = ABORTED if short else ENDED
            reason = (f"the detector ended series {cur.label} after {cur.images} of {n} "
                      f"images" if short else "")
        status = "success" if state == ENDED else "abort"
        if status == "success" and cur.points and cur.flagged == cur.points:
            status, reason = "fail", no_motors(cur.points, cur.label, self.join_timeout,
                                               unmatched, late, self.lane_endpoint)
        self.counters[{ENDED: "ended", ABORTED: "aborted", TIMED_OUT: "timed_out"}[state]] += 1
        if cur.opened:
            out.append(End(cur.scan_id, status, n if n is not None else cur.next_id, reason))
        else:
            self.counters["empty"] += 1
        cur.state = state
        self.current, self.last = None, cur
        self.closed_ids.extend(x for x in (cur.scan_id, cur.motor_scan_id) if x)
        self.finished.append({"series_id": cur.start.series_id, "scan_id": cur.scan_id,
                              "state": state, "status": status, "reason": reason,
                              "images": cur.images, "points": cur.points,
                              "npoints": n, "sent": cur.opened})
        log_at = logging.INFO if status == "success" else logging.WARNING
        log.log(log_at, "series %s %s%s (%d images)", cur.label, state,
                f": {reason}" if reason else "", cur.images)
        return out

    def _orphan(self, kind: str, msg: SeriesImage | SeriesEnd, what: str) -> None:
        """Count a message that belongs to no open series; log the first of each series.
        Motor points named after that series (our naming) are stale from now on."""
        self.counters[kind] += 1
        if (kind, msg.series_id) not in self._orphans:
            self._orphans.append((kind, msg.series_id))
            log.warning("%s: %s (dropped; further ones of this series are only counted)",
                        kind, what)
        foreign = scan_id_for(SeriesStart(msg.series_id, msg.unique_id))
        if kind != "stray" and foreign not in self.closed_ids:
            self.closed_ids.append(foreign)

