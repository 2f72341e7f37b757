"""Frame previews for the live lane: a b x b binned image, made in the worker that has
the frame (the dense frame never leaves the workers)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from stream.core.item import SparseFrame


def binned(frame: Any, b: int) -> np.ndarray:
    """A b x b binned (summed) float32 image of a frame: dense, compressed (decoded
    here) or sparse (its kept pixels, the rest 0); the edge rows and columns that do
    not fill a bin are left out."""
    if isinstance(frame, SparseFrame):
        ny, nx = frame.shape[0] // b, frame.shape[1] // b
        r, c = frame.row.astype(np.intp) // b, frame.col.astype(np.intp) // b
        keep = (r < ny) & (c < nx)
        flat = np.bincount(r[keep] * nx + c[keep], frame.intensity[keep], minlength=ny * nx)
        return flat.astype(np.float32).reshape(ny, nx)
    if not isinstance(frame, np.ndarray):  # EncodedFrame
        from nodes.decode import dense

        frame = dense(frame)
    out = np.zeros((frame.shape[0] // b, frame.shape[1] // b), np.float64)
    _bin_sum(frame, b, out)
    return out.astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _bin_sum(frame, b, out):  # pragma: no cover (compiled)
    """out[i, j] = the sum of frame's b x b block (i, j), in one pass over the rows."""
    ny, nx = out.shape
    for r in range(ny * b):
        row = out[r // b]
        for j in range(nx):
            acc = 0.0
            for c in range(j * b, j * b + b):
                acc += frame[r, c]
            row[j] += acc
