"""What keeps the linker's compiles few: its inputs handed to the kernels as one
array kind (read-only views, whoever made them), and the pixel separation compiled
before a scan that may need it, on two small touching spots.

The rest of the linker is compiled by the warm-up scan (`stream.run.warmup`),
which goes through the config's own linker: only its criterion and split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nodes.kernels import readonly
from nodes.link.separate import MAX_VOXELS, Separator
from stream.core.item import SparseFrame


def warm_separation() -> None:
    """The separation kernels on two touching spots (the pool's dtypes)."""
    from nodes.kernels.separate import separate_cliques

    z, r, c = (a.ravel() for a in np.meshgrid(np.arange(5), np.arange(9), np.arange(12),
                                               indexing="ij"))
    inten = (1000 * np.exp(-0.5 * ((z - 2.0) ** 2 + (r - 4.0) ** 2 + (c - 3.0) ** 2))
             + 500 * np.exp(-0.5 * ((z - 2.5) ** 2 + (r - 4.0) ** 2 + (c - 7.5) ** 2)))
    sep = Separator()
    separate_cliques(np.array([0, z.shape[0]], np.int64), z.astype(np.int64),
                     r.astype(np.int32), c.astype(np.int32), inten.astype(np.float32),
                     np.zeros(z.shape[0], np.int64), 1, *sep.smooth, sep.seed_fraction,
                     sep.merge_distance, sep.min_share, MAX_VOXELS, sep.add_sigma,
                     sep.bic_factor, sep.relative_noise, sep.background)


def readonly_frame(sparse: SparseFrame | None) -> SparseFrame | None:
    """The frame with read-only views of its arrays (no copy)."""
    if sparse is None:
        return None
    if not any(map(_writeable, (sparse.row, sparse.col, sparse.intensity, sparse.label,
                                sparse.runs))):  # (a worker thread's result: already so)
        return sparse
    return dataclasses.replace(sparse, row=readonly(sparse.row), col=readonly(sparse.col),
                               intensity=readonly(sparse.intensity),
                               label=readonly(sparse.label), runs=readonly(sparse.runs))


def readonly_peaks(peaks: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    """The peak columns as read-only views (no copy)."""
    if peaks is None or not any(map(_writeable, peaks.values())):
        return peaks
    return {k: readonly(v) for k, v in peaks.items()}


def _writeable(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.flags.writeable
