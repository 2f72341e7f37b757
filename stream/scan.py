"""Scan, points and trajectories: which points are neighbours.

A trajectory answers two questions for the linker, both by `point_id`:

* `neighbours_before(i)`: the earlier points that point `i` links to (the
  linker processes points in `point_id` order, so only earlier ones exist);
* `last_neighbour(i)`: the largest `point_id` that may still link back to
  `i`. Once the linker has passed it, point `i` has left the frontier and the
  cliques that only touch such points are closed.

New scan kinds (interlaced, snake, dty x omega grid, 360 wrap) are new
`Trajectory` classes registered in `TRAJECTORIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .message import Point, Start

__all__ = ["Point", "Scan", "Trajectory", "Sweep", "make_trajectory", "TRAJECTORIES"]

POINT_STATUS = {"ok": 0, "missing": 1, "bad": 2}


class Trajectory(Protocol):
    """Neighbour rule between scan points (see module docstring)."""

    kind: ClassVar[str]

    def neighbours_before(self, point_id: int) -> list[int]:
        """Earlier points that `point_id` links to."""
        ...

    def last_neighbour(self, point_id: int) -> int:
        """Largest point_id that may link back to `point_id` (itself if none)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The parameters, as stored in the output file."""
        ...


@dataclass(frozen=True)
class Sweep:
    """A single step or continuous sweep: point i neighbours i - 1 and i + 1."""

    npoints: int | None = None
    kind: ClassVar[str] = "sweep"

    def neighbours_before(self, point_id: int) -> list[int]:
        return [point_id - 1] if point_id > 0 else []

    def last_neighbour(self, point_id: int) -> int:
        if self.npoints is not None and point_id >= self.npoints - 1:
            return point_id
        return point_id + 1

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "npoints": -1 if self.npoints is None else self.npoints}


TRAJECTORIES: dict[str, type] = {"sweep": Sweep}


def make_trajectory(spec: dict[str, Any], npoints: int | None) -> Trajectory:
    """Build the trajectory named by a start message's `trajectory` map."""
    kind = spec.get("kind", "sweep")
    if kind not in TRAJECTORIES:
        raise ValueError(f"trajectory kind {kind!r} is not supported yet "
                         f"(supported: {', '.join(TRAJECTORIES)})")
    return TRAJECTORIES[kind](npoints=npoints)


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
        return cls(start, make_trajectory(start.trajectory, start.npoints))

    @property
    def scan_id(self) -> str:
        return self.start.scan_id

    def detector(self, name: str | None = None) -> tuple[str, Any]:
        """The named detector, or the first one announced."""
        if name is None:
            name = next(iter(self.start.detectors))
        if name not in self.start.detectors:
            raise KeyError(f"scan {self.scan_id!r} has no detector {name!r} "
                           f"(it has {', '.join(self.start.detectors)})")
        return name, self.start.detectors[name]
