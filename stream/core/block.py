"""A block of consecutive sparse points: how sparse recordings are replayed in bulk."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SparseBlock:
    """Consecutive points first .. first + n - 1 of a sparse recording, arrays concatenated."""

    first: int
    nnz: np.ndarray  # int64 (n,) pixels per point
    row: np.ndarray  # uint16, raster-sorted within each point
    col: np.ndarray  # uint16
    intensity: np.ndarray
    time: np.ndarray  # float64 (n,)
    motors: dict[str, np.ndarray] = field(default_factory=dict)  # float64 (n,) each
    counters: dict[str, np.ndarray] = field(default_factory=dict)
    ok: np.ndarray | None = None  # bool (n,): False for a point the recording lacks

    @property
    def n(self) -> int:
        return int(self.nnz.shape[0])
