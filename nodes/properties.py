"""The 2D peak table: raw moments, bounding box and maximum of each labelled blob."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nodes.kernels.moments import peak_moments, peak_moments_runs
from stream.core.item import PEAK_COLUMNS, Item, empty_peaks
from stream.core.scan import Scan


def _table(npeaks: int) -> dict[str, np.ndarray]:
    return {k: np.empty(npeaks, dt) for k, dt in PEAK_COLUMNS.items()}


class Properties:
    """item.peaks: one row per label (PEAK_COLUMNS), computed in one pass over the pixels
    (over the label node's runs of them when the frame carries them, `Label`)."""

    kind: ClassVar[str] = "properties"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        pass

    def setup(self, scan: Scan) -> None:
        self.warmup()

    def warmup(self) -> None:
        """Compile the kernel on a one-pixel frame."""
        one = np.zeros(1, np.uint16)
        peak_moments(one, one, np.ones(1, np.float32), np.ones(1, np.int32), **_table(1))
        peak_moments_runs(np.array([[0, 0, 0, 1, 0]], np.int32), np.ones(1, np.float32),
                          **_table(1))

    def process(self, item: Item) -> Item:
        sparse = item.sparse
        if sparse is None or sparse.label is None:
            raise ValueError(f"properties: point {item.point_id} has no labelled sparse frame "
                             "(put a label node before properties)")
        if sparse.npeaks == 0:
            item.peaks = empty_peaks()
            return item
        table = _table(sparse.npeaks)
        if sparse.runs is not None:  # the label node's: the same sums, faster
            peak_moments_runs(sparse.runs, sparse.intensity, **table)
        else:
            peak_moments(sparse.row, sparse.col, sparse.intensity, sparse.label, **table)
        item.peaks = table
        return item
