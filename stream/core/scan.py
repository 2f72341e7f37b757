"""Scan and points; trajectories (which points are neighbours) live in trajectory.py.

A trajectory answers, by `point_id`, which earlier points a point links to
(`neighbours_before`, `links_before`) and the largest point that may still
link back to it (`last_neighbour`); `observe` gives it each point's motor
positions as the point reaches the linker. See `stream.trajectory` for the
rules and the keys of each kind in the start message's `trajectory` map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.core.messages import Point, Start
from stream.core.trajectory import TRAJECTORIES, Sweep, Trajectory, make_trajectory

__all__ = ["Point", "Scan", "Trajectory", "Sweep", "make_trajectory", "TRAJECTORIES"]

@dataclass
class Scan:
    """A scan in progress: what `start` announced, and what happened to each point."""

    start: Start
    trajectory: Trajectory
    status: str = "running"
    reason: str = ""
    point_status: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_start(cls, start: Start) -> Scan:
        return cls(start, make_trajectory(start.trajectory, start.npoints, start.motors))

    @property
    def scan_id(self) -> str:
        return self.start.scan_id

    @property
    def point_offset(self) -> int:
        """The id in a whole scan of this scan's point 0: a chunk of a scan replayed in
        parts (start meta `point_offset`, points a..b of the scan counted from 0 here),
        so that its log lines name the scan's point ids; 0 for a scan of its own (and
        for a value that is no point id: meta is free-form, a sender's may hold anything)."""
        value = self.start.meta.get("point_offset", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
            else 0

    def detector(self, name: str | None = None) -> tuple[str, Any]:
        """The named detector, or the first one announced."""
        if name is None:
            name = next(iter(self.start.detectors))
        if name not in self.start.detectors:
            raise KeyError(f"scan {self.scan_id!r} has no detector {name!r} "
                           f"(it has {', '.join(self.start.detectors)})")
        return name, self.start.detectors[name]
