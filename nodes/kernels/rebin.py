"""Integer rebinning by sum, and the centre of mass used to auto-centre a crop."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def rebin_sum(frame, f0, f1, out):
    """out[i, j] = sum of frame[i*f0:(i+1)*f0, j*f1:(j+1)*f1] (out's shape sets what is read)."""
    n0, n1 = out.shape
    for i in range(n0):
        for j in range(n1):
            out[i, j] = 0
        for a in range(f0):
            r = i * f0 + a
            for j in range(n1):
                acc = out[i, j]
                for b in range(f1):
                    acc += frame[r, j * f1 + b]
                out[i, j] = acc
    return out


@numba.njit(nogil=True, cache=True)
def centre_of_mass(frame, cut):
    """(row, col, weight): the intensity-weighted mean index of pixels above `cut` (NaN skipped)."""
    sw = 0.0
    sr = 0.0
    sc = 0.0
    n0, n1 = frame.shape
    for i in range(n0):
        row_w = 0.0
        row_c = 0.0
        for j in range(n1):
            v = np.float64(frame[i, j])
            if v > cut:
                row_w += v
                row_c += v * j
        sw += row_w
        sr += row_w * i
        sc += row_c
    if sw > 0:
        return sr / sw, sc / sw, sw
    return -1.0, -1.0, 0.0
