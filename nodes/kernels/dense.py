"""Dense per-frame kernels: threshold a frame, or correct + scale + threshold it in one pass.

Both write the kept pixels in raster order into caller-owned buffers
(`rows`, `cols`, `vals`) and return `(n, emax)`: `n` is the number of pixels
kept (it may exceed the buffer size, in which case only the first ones are
written) and `emax` the largest finite excess `value - threshold` among them.

A pixel is kept when `float64(value) - float64(threshold) > delta`; `delta` is
0 normally (so the test is `value > threshold`) and is raised by the caller
when too many pixels pass. When `hist` is not empty, the excess of each kept
pixel is also counted into it (bins of width 1/hinv from hlo, the last bin
holding everything from hhi up), which is how the caller chooses the raised
delta.

`precut` (same dtype as the frame, used if `use_precut`) is a conservative
bound: a pixel whose value is not above it cannot pass. Each row is scanned
in chunks with a vectorised count against it, and only chunks with a
candidate are looked at closely.
"""

from __future__ import annotations

import numba
import numpy as np

CHUNK = 64  # pixels of a row checked against the pre-cut at once


@numba.njit(nogil=True, cache=True)
def _any_above(segment, precut):
    hits = 0
    for i in range(segment.size):
        hits += segment[i] > precut
    return hits > 0


@numba.njit(nogil=True, cache=True)
def _count_excess(hist, excess, hlo, hinv, hhi):
    nbins = hist.size
    if excess >= hhi:
        j = nbins - 1
    else:
        j = int((excess - hlo) * hinv)
        if j >= nbins:
            j = nbins - 1
        elif j < 0:
            j = 0
    hist[j] += 1


@numba.njit(nogil=True, cache=True, inline="always")
def _keep(n, emax, r, c, value, excess, rows, cols, vals, hist, hlo, hinv, hhi):
    """Record one kept pixel (if the buffers have room); count it either way."""
    if n < rows.size:
        rows[n] = r
        cols[n] = c
        vals[n] = value
    if excess > emax and excess < np.inf:
        emax = excess
    if hist.size > 0:
        _count_excess(hist, excess, hlo, hinv, hhi)
    return n + 1, emax


@numba.njit(nogil=True, cache=True)
def threshold_frame(frame, precut, use_precut, cut, cut_map, delta, rows, cols, vals,
                    hist, hlo, hinv, hhi):
    """Keep the pixels of a frame (any dtype) above `cut` or `cut_map` (if not empty)."""
    nrows, ncols = frame.shape
    use_map = cut_map.size > 0
    n = 0
    emax = -np.inf
    for r in range(nrows):
        line = frame[r]
        for c0 in range(0, ncols, CHUNK):
            c1 = min(c0 + CHUNK, ncols)
            if use_precut and not _any_above(line[c0:c1], precut):
                continue
            for c in range(c0, c1):
                value = line[c]
                t = np.float64(cut_map[r, c]) if use_map else cut
                excess = np.float64(value) - t
                if excess > delta:
                    n, emax = _keep(n, emax, r, c, np.float32(value), excess, rows, cols, vals,
                                    hist, hlo, hinv, hhi)
    return n, emax


@numba.njit(nogil=True, cache=True)
def correct_threshold(raw, precut, use_precut, mask, dark0, dark_map, invflat0, invflat_map,
                      scale, cut, cut_map, delta, rows, cols, vals, hist, hlo, hinv, hhi):
    """Fused pass: v = ((float32(raw) - dark) * invflat) * scale, then keep as threshold_frame.

    Masked pixels are skipped. Maps (mask, dark, invflat, cut) are used when
    not empty, otherwise the scalars.
    """
    nrows, ncols = raw.shape
    use_mask = mask.size > 0
    use_dark = dark_map.size > 0
    use_flat = invflat_map.size > 0
    use_cut = cut_map.size > 0
    n = 0
    emax = -np.inf
    for r in range(nrows):
        line = raw[r]
        for c0 in range(0, ncols, CHUNK):
            c1 = min(c0 + CHUNK, ncols)
            if use_precut and not _any_above(line[c0:c1], precut):
                continue
            for c in range(c0, c1):
                x = line[c]
                if use_precut and not x > precut:
                    continue
                if use_mask and mask[r, c]:
                    continue
                d = dark_map[r, c] if use_dark else dark0
                g = invflat_map[r, c] if use_flat else invflat0
                v = ((np.float32(x) - d) * g) * scale
                t = np.float64(cut_map[r, c]) if use_cut else cut
                excess = np.float64(v) - t
                if excess > delta:
                    n, emax = _keep(n, emax, r, c, v, excess, rows, cols, vals,
                                    hist, hlo, hinv, hhi)
    return n, emax
