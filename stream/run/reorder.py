"""The reorder buffer: points in `point_id` order, gaps reported instead of waited on.

A point handed to the workers holds its place (`pending`) until its result
comes back, so a point still being processed is never declared missing. A
point that has not come is declared missing when the buffer holds more than
`window` points past it, when the oldest waiting point has waited `timeout`
seconds, or at the end of the scan; a gap is released as one `range`.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.item import Item


@dataclass
class Slot:
    """A point waiting in the reorder buffer: its item, or why it is bad."""

    point_id: int
    item: Item | None
    status: str = "ok"  # ok | bad | pending (being processed: holds its place)
    reason: str = ""
    arrived: float = 0.0


class ReorderBuffer:
    """Yield points in id order; report gaps as missing instead of waiting forever."""

    def __init__(self, window: int = 64, timeout: float = 5.0, npoints: int | None = None):
        self.window = window
        self.timeout = timeout
        self.npoints = npoints
        self.next_id = 0
        self.waiting: dict[int, Slot] = {}

    def seen(self, point_id: int) -> bool:
        """True if this point was released or is waiting (a duplicate if it comes again)."""
        return point_id < self.next_id or point_id in self.waiting

    def push(self, slot: Slot) -> None:
        """A new point; a result for a point held as pending takes its place."""
        old = self.waiting.get(slot.point_id)
        if old is not None and old.status == "pending" and slot.status != "pending":
            slot.arrived = old.arrived
        elif self.seen(slot.point_id):
            raise ValueError(f"point {slot.point_id} already received")
        self.waiting[slot.point_id] = slot

    @property
    def pending(self) -> int:
        """Points held for a result that has not come back yet."""
        return sum(1 for s in self.waiting.values() if s.status == "pending")

    @property
    def held(self) -> int:
        """Results held only because the next point is still being processed (0 when the
        head is a gap: those wait for the window or the timeout, not for a worker)."""
        head = self.waiting.get(self.next_id)
        if head is None or head.status != "pending":
            return 0
        return sum(1 for s in self.waiting.values() if s.status != "pending")

    def pop(self, now: float | None, final: bool = False) -> list[Slot | range]:
        """Released slots in order; a `range` is a gap of points declared missing (one
        item however long: a gap is never expanded point by point here).

        The timeout applies only when `now` is given: the caller passes it when
        its input is idle, so a backlog on our side never counts as a gap. A
        pending point at the head stops the release (its result will come);
        at the end it is released as "lost" (written as bad).
        """
        out: list[Slot | range] = []
        while True:
            slot = self.waiting.get(self.next_id)
            if slot is not None:
                if slot.status == "pending":
                    if not final:
                        break
                    slot.status, slot.reason = "lost", "its processing never finished"
                del self.waiting[self.next_id]
                out.append(slot)
                self.next_id += 1
                continue
            if not self.waiting:
                break
            oldest = min(self.waiting)
            too_many = len(self.waiting) > self.window
            too_old = now is not None and (
                now - min(s.arrived for s in self.waiting.values()) > self.timeout)
            if not (final or too_many or too_old):
                break
            out.append(range(self.next_id, oldest))  # the gap is missing
            self.next_id = oldest
        if final and self.npoints is not None and self.next_id < self.npoints:
            out.append(range(self.next_id, self.npoints))
            self.next_id = self.npoints
        return out
