"""Images of the detector joined with motor positions of the motor lane, by point id.

An image waits for its motors up to `timeout` s and then goes on without
them (flagged); at most `max_waiting` images or `max_bytes` of frames wait
at once (the oldest goes on first), so a silent motor lane never holds more
than that in memory. Motors wait for their image until the series ends, since the image
(the detector reads out, then compresses) usually comes later than the
positions; motors whose image never came are counted when the series ends.
Motors for a point that has gone on already are late: counted and dropped.
A series none of whose images got motors cannot be placed on its scan: it
ends fail, with the reason `no_motors` gives.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from stream.core.encoded import EncodedFrame
from stream.core.messages import Point
from stream.sources.dectris.common import SeriesImage

log = logging.getLogger(__name__)

MAX_MOTOR_POINTS = 1_000_000  # motor points held per series (a few hundred bytes each)


@dataclass
class Joined:
    """A point ready to go: its image and, if they came in time, its motors."""

    image: SeriesImage
    motors: Point | None
    waited: float  # s the image waited


class Joiner:
    """The images and motor points of one series, waiting for each other."""

    def __init__(self, timeout: float, enabled: bool = True, max_waiting: int = 1024,
                 max_bytes: int = 256 << 20):
        self.timeout = timeout
        self.enabled = enabled  # no motor lane: images go on at once
        self.max_waiting, self.max_bytes = max_waiting, max_bytes
        self.images: OrderedDict[int, tuple[SeriesImage, float]] = OrderedDict()
        self.waiting_bytes = 0
        self.motors: dict[int, Point] = {}
        self.done: set[int] = set()
        self.counts: Counter = Counter()  # joined, without_motors, motor_late, ...

    def seen(self, point_id: int) -> bool:
        """Has an image of this point come already (waiting or gone on)?"""
        return point_id in self.done or point_id in self.images

    def add_image(self, image: SeriesImage, now: float) -> list[Joined]:
        """An image arrived (not seen before): it goes on now if its motors are here (or
        there is no motor lane), else it waits."""
        pid = image.image_id
        motors = self.motors.pop(pid, None)
        if motors is not None or not self.enabled:
            return [self._release(image, motors, 0.0)]
        self.images[pid] = (image, now)
        self.waiting_bytes += _nbytes(image)
        out = []
        while len(self.images) > self.max_waiting or self.waiting_bytes > self.max_bytes:
            _, (img, t) = self.images.popitem(last=False)  # the oldest goes on without motors
            out.append(self._release(img, None, now - t, was_waiting=True))
        return out

    def forget(self, point_id: int, motors: Point | None) -> None:
        """The image of this point is to come again (the copy seen did not fit): the
        next copy is new, and joins the `motors` the first one had, if any."""
        self.done.discard(point_id)
        waiting = self.images.pop(point_id, None)
        if waiting is not None:
            self.waiting_bytes -= _nbytes(waiting[0])
        if motors is not None:
            self.motors[point_id] = motors

    def add_motors(self, point: Point, now: float) -> list[Joined]:
        """Motor positions arrived for a point: its image goes on if it is waiting."""
        pid = point.point_id
        if pid in self.done:
            self.counts["motor_late"] += 1
            return []
        waiting = self.images.pop(pid, None)
        if waiting is not None:
            return [self._release(waiting[0], point, now - waiting[1], was_waiting=True)]
        if pid in self.motors:
            self.counts["motor_duplicate"] += 1
        elif len(self.motors) >= MAX_MOTOR_POINTS:
            self.counts["motor_dropped"] += 1
            return []
        self.motors[pid] = point
        return []

    def expired(self, now: float) -> list[Joined]:
        """Images that have waited `timeout` s: they go on without motors."""
        out = []
        while self.images:
            pid, (img, t) = next(iter(self.images.items()))
            if now - t < self.timeout:
                break
            del self.images[pid]
            out.append(self._release(img, None, now - t, was_waiting=True))
        return out

    def next_deadline(self) -> float | None:
        """When the oldest waiting image times out (monotonic s), or None."""
        if not self.images:
            return None
        return next(iter(self.images.values()))[1] + self.timeout

    def flush(self, now: float) -> list[Joined]:
        """Every waiting image goes on now (the series is over)."""
        out = [self._release(img, None, now - t, was_waiting=True)
               for img, t in self.images.values()]
        self.images.clear()
        return out

    def unmatched_motors(self) -> int:
        """Motor points whose image never came (cleared)."""
        n = len(self.motors)
        self.motors.clear()
        return n

    def _release(self, image: SeriesImage, motors: Point | None, wait: float,
                 was_waiting: bool = False) -> Joined:
        if was_waiting:
            self.waiting_bytes -= _nbytes(image)
        self.done.add(image.image_id)
        self.counts["joined" if motors is not None else "without_motors"] += 1
        return Joined(image, motors, wait)


def no_motors(points: int, label: str, join_timeout: float, unmatched: int, late: int,
              lane: str = "") -> str:
    """Why a series none of whose `points` got motors ends fail, what came on the motor
    lane for it (`unmatched`: for image numbers it did not have; `late`: after their
    image went on) and what to check."""
    came = [f"{n} came for image numbers the series did not have" for n in (unmatched,) if n]
    came += [f"{n} came after their image had gone on" for n in (late,) if n]
    return (f"no motor position came for any of the {points} points of series {label} "
            f"within join_timeout {join_timeout:g} s, so they cannot be placed on the scan "
            f"(each point is flagged; their peaks are in the file); motor points for this "
            f"series: {'; '.join(came) if came else 'none came'}. Check that the motor sender "
            f"sends to the motor lane ([source] listen{f' = {lane}' if lane else ''}) one "
            f"point per image, point_id the image number from 0, and that join_timeout "
            f"covers its delay")


def point_counters(m: Point | None, names: list[str] | None, extra: dict[str, Any],
                   cur: Any) -> dict[str, float]:
    """A point's counters, from its motor point `m`. A counter `[source] counters` names
    that the motor point does not carry was NaN in the file with no word: it is NaN
    with a flag in `extra`, as a null counter is (protocol.md), and the series `cur`
    logs it once per name (`cur.absent`). No motor point: the motors' flag says so."""
    counters = dict(m.counters) if m else {}
    for name in [n for n in names or () if n not in counters] if m is not None else ():
        counters[name] = math.nan
        extra.setdefault("flags", []).append(
            f"counter {name!r} did not come with its motor point: taken as NaN")
        if name not in cur.absent:
            cur.absent.add(name)
            log.warning(
                "series %s: counter %r ([source] counters) did not come with motor point %d "
                "(it has %s): NaN, the point flagged (further ones: flagged only)", cur.label,
                name, m.point_id, ", ".join(sorted(m.counters)) or "no counters")
    return counters


def _nbytes(image: SeriesImage) -> int:
    """Bytes the image holds (compressed frames: their compressed size)."""
    return sum(f.buffer.nbytes if isinstance(f, EncodedFrame) else f.nbytes
               for f in image.frames.values())
