"""What flows through the node chain: one Item per scan point.

`SparseFrame` is the raster-sorted COO form of a frame (ImageD11's layout);
`Item` carries a point's motors, counters, the detector frame (dense, then
sparse), the 2D peak table and any named outputs a node wants stored.

A point's result keeps read-only views of the sparse frame's and the peaks'
arrays (`stream.run.tasks.result_of`): those are each point's own (a node
that fills a buffer it keeps copies out of it, as threshold does). A named
output may be an array the node keeps and writes again at the next point: the
result keeps a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SparseFrame:
    """Pixels of one frame kept by the threshold, sorted by (row, col).

    `label` (int32, 1..npeaks, set by the label node) names the 2D peak of each
    pixel; peaks are numbered in raster order of their first pixel. `runs`
    (int32, (nruns, 5): row, first and last column, label, first pixel; see
    `nodes.kernels.runs`) are the runs of the labelled pixels when the label
    node found them (split "none"): properties and the linker use them instead
    of finding them again. A frame made from other pixels (`take`, a node that
    builds a new one) has none; the same pixels with new intensities
    (`dataclasses.replace(frame, intensity=...)`) keep them, as they still hold.
    """

    shape: tuple[int, int]
    row: np.ndarray  # uint16
    col: np.ndarray  # uint16
    intensity: np.ndarray  # float32
    label: np.ndarray | None = None  # int32
    npeaks: int = 0
    runs: np.ndarray | None = None  # int32 (nruns, 5), from the label node

    @property
    def nnz(self) -> int:
        return int(self.row.shape[0])

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> SparseFrame:
        return cls(shape, np.empty(0, np.uint16), np.empty(0, np.uint16),
                   np.empty(0, np.float32), np.empty(0, np.int32), 0)

    def take(self, keep: np.ndarray) -> SparseFrame:
        """The pixels selected by a boolean mask or index array (order kept), without
        runs (they described the pixels before)."""
        label = None if self.label is None else self.label[keep]
        return SparseFrame(self.shape, self.row[keep], self.col[keep], self.intensity[keep],
                           label, self.npeaks)


# Columns of the 2D peak table, in the order they are stored (DESIGN.md,
# ImageD11 names). Raw sums are over the peak's pixels with s = row, f = col.
PEAK_COLUMNS: dict[str, str] = {
    "npx": "int32",
    "sum_intensity": "float64",
    "s_raw": "float64",
    "f_raw": "float64",
    "s_1": "float64",
    "s_I": "float64",
    "s_sI": "float64",
    "s_fI": "float64",
    "s_ssI": "float64",
    "s_ffI": "float64",
    "s_sfI": "float64",
    "bb_s0": "int32",
    "bb_s1": "int32",
    "bb_f0": "int32",
    "bb_f1": "int32",
    "max_intensity": "float32",
}

# The additive moments: a clique's are the sums of its members'.
MOMENT_COLUMNS = ("s_1", "s_I", "s_sI", "s_fI", "s_ssI", "s_ffI", "s_sfI")


def clique_columns(motors: list[str]) -> dict[str, str]:
    """Columns of the cliques table, in the order they are stored: the sums of the
    members' columns, the intensity-weighted point, the intensity of a Gaussian
    fitted to the pixels (linker split "pixels"; NaN otherwise) and one centroid
    per motor."""
    cols = {"clique_id": "int64", "n2d": "int32", "npx": "int64", "sum_intensity": "float64",
            "s_raw": "float64", "f_raw": "float64"}
    cols.update({name: "float64" for name in MOMENT_COLUMNS})
    cols.update({"first_point": "int64", "last_point": "int64", "point": "float64",
                 "fit_intensity": "float64"})
    cols.update({m: "float64" for m in motors})
    return cols


def empty_peaks() -> dict[str, np.ndarray]:
    """A 2D peak table with no rows."""
    return {k: np.empty(0, dt) for k, dt in PEAK_COLUMNS.items()}


@dataclass
class Item:
    """One scan point on its way through the chain (for one detector)."""

    point_id: int
    detector: str
    time: float = float("nan")
    motors: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    frame: np.ndarray | None = None
    sparse: SparseFrame | None = None
    peaks: dict[str, np.ndarray] | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    # what the frame's values were multiplied by since they were counts (a normalise
    # node multiplies it): a node that needs the counts' statistics divides it out
    scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        if self.frame is not None:
            return self.frame.shape  # type: ignore[return-value]
        if self.sparse is not None:
            return self.sparse.shape
        raise ValueError(f"point {self.point_id} has no frame")
