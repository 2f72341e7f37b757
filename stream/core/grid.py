"""Where a point of a 2D scan lies on its map: `MapGrid`, shared by the map writer
(`stream.maps.grid`), the maps of a finished file and the live lane's running map
(`stream.service.live`).

Point (or frame) index i, less `offset`, fills rows of `nfast` points
(row-major; `snake`: odd rows run backwards, pyFAI's --zigzag); `nslow` rows are
expected (None: open-ended, rows are added as they come).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MapGrid:
    """Where point (or frame) index i lies: row (slow) and column (fast) of the map."""

    nfast: int
    nslow: int | None = None  # rows expected; None: open-ended
    snake: bool = False
    offset: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.nfast, bool) or int(self.nfast) != self.nfast or self.nfast < 1:
            raise ValueError(f"map: nfast must be an integer >= 1, got {self.nfast!r}")
        if self.nslow is not None and (int(self.nslow) != self.nslow or self.nslow < 1):
            raise ValueError(f"map: nslow must be an integer >= 1 or None, got {self.nslow!r}")
        if self.offset < 0:
            raise ValueError(f"map: offset must be >= 0, got {self.offset!r}")

    def place(self, index: Any) -> tuple[Any, Any]:
        """(slow, fast) of index (int or array); (-1, -1) before the offset."""
        n = np.asarray(index, np.int64) - self.offset
        slow, fast = n // self.nfast, n % self.nfast
        if self.snake:
            fast = np.where(slow % 2 == 1, self.nfast - 1 - fast, fast)
        slow, fast = np.where(n < 0, -1, slow), np.where(n < 0, -1, fast)
        if np.ndim(index) == 0:
            return int(slow), int(fast)
        return slow, fast

    def index(self, slow: Any, fast: Any) -> Any:
        """The point index at (slow, fast): the inverse of `place`."""
        slow, fast = np.asarray(slow, np.int64), np.asarray(fast, np.int64)
        if self.snake:
            fast = np.where(slow % 2 == 1, self.nfast - 1 - fast, fast)
        out = self.offset + slow * self.nfast + fast
        return int(out) if out.ndim == 0 else out

    @classmethod
    def from_trajectory(cls, trajectory: Mapping[str, Any], npoints: int | None) -> MapGrid:
        """The grid of a start message's grid / snake trajectory (PROTOCOL.md)."""
        kind = trajectory.get("kind")
        if kind not in ("grid", "snake") or not trajectory.get("nfast"):
            raise ValueError(f"a map needs a grid or snake trajectory with nfast (this scan's "
                             f"is {dict(trajectory)}); give the map's nfast")
        nfast = int(trajectory["nfast"])
        return cls(nfast, math.ceil(npoints / nfast) if npoints else None, kind == "snake")
