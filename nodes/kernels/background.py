"""Per-bin background statistics of a frame (sigma-clipped mean, median) and the per-pixel maps.

Pixels are grouped by bin (no splitting) and weighted by their `norm` (solid
angle * polarisation, or 1): x = v / n. `scatter` copies a frame's values
into bin order in one sequential pass (each bin's slice of the buffer fills
in raster order, so the writes stream too); each bin's statistics are then
computed on its own slice, which stays in cache through the iterations.

Sigma clipping keeps, per bin, the pixels with |x - m| <= clip * s, where
m = sum(v) / sum(n) and s^2 = sum(n^2 (x - m)^2) / sum(n^2) over the kept
pixels (pyFAI's weighted mean and its "azimuthal" spread), and repeats until
nothing more is dropped or `max_iter` rounds; a bin with s = 0 stays as it
is. The median method gives the median of x and s = 1.4826 * median(|x - median|).

A pixel is invalid (out of the statistics, +inf in the cut map, NaN in a
subtracted frame) when its value is NaN, equal to `dummy` within
`delta_dummy` (with `check_dummy`; the test of `kernels.csr`, pyFAI's), or,
with `check_marker`, when its raw value is `marker`.
"""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.csr import _invalid  # pyFAI's dummy test, as integrate's


@numba.njit(nogil=True, cache=True, inline="always")
def _masked(v, check_marker, marker, check_dummy, dummy, delta_dummy):
    """Whether raw value v is left out: NaN, the dummy (within delta_dummy), the marker."""
    return (check_marker and v == marker) or _invalid(v, check_dummy, dummy, delta_dummy)


@numba.njit(nogil=True, cache=True)
def scatter(raw, dest, norm, vals, norms, check_marker, marker, check_dummy, dummy,
            delta_dummy):
    """vals[dest[p]] = raw[p], norms[dest[p]] = norm[p] (if norm is not empty), float32;
    NaN (left out of the statistics) where raw[p] is invalid (the module docstring)."""
    has_norm = norm.size > 0
    for p in range(raw.size):
        d = dest[p]
        if d >= 0:
            invalid = _masked(raw[p], check_marker, marker, check_dummy, dummy, delta_dummy)
            vals[d] = np.nan if invalid else raw[p]
            if has_norm:
                norms[d] = norm[p]


@numba.njit(nogil=True, cache=True)
def _clip_pass(vals, norms, keep, i0, i1, has_norm, shift, mean, limit, drop):
    """One pass over a bin's slice: drop (if `drop`) the kept pixels with |x - mean| > limit,
    and sum the rest with u = v - shift * n: (sum u, sum n, sum u^2, sum u n, sum n^2,
    kept, dropped). The shift (a value near the mean) keeps the sums of squares exact."""
    su = sn = suu = sun = snn = 0.0
    count = dropped = 0
    for j in range(i0, i1):
        if not keep[j]:
            continue
        v = np.float64(vals[j])
        n = np.float64(norms[j]) if has_norm else 1.0
        if drop and abs(v - mean * n) > limit * n:  # |x - mean| > limit, n > 0
            keep[j] = False
            dropped += 1
            continue
        u = v - shift * n
        su += u
        sn += n
        suu += u * u
        sun += u * n
        snn += n * n
        count += 1
    return su, sn, suu, sun, snn, count, dropped


@numba.njit(nogil=True, cache=True)
def sigma_clip(vals, norms, start, clip, max_iter, keep):
    """(mean, spread, kept pixels) per bin; `vals` / `norms` in bin order (`scatter`)."""
    nbins = start.size - 1
    has_norm = norms.size > 0
    mean = np.full(nbins, np.nan)
    spread = np.full(nbins, np.nan)
    kept = np.zeros(nbins, np.int64)
    for k in range(nbins):
        i0, i1 = start[k], start[k + 1]
        shift = np.nan
        for j in range(i0, i1):
            keep[j] = vals[j] == vals[j]
            if keep[j] and shift != shift:
                shift = np.float64(vals[j]) / (np.float64(norms[j]) if has_norm else 1.0)
        if shift != shift:
            continue
        m = sd = 0.0
        count = 0
        sums = _clip_pass(vals, norms, keep, i0, i1, has_norm, shift, 0.0, 0.0, False)
        for it in range(max_iter + 1):
            su, sn, suu, sun, snn, count, dropped = sums
            if it > 0 and dropped == 0:
                break
            if count == 0 or not sn > 0:
                m, sd = np.nan, np.nan
                break
            d = su / sn  # the mean less the shift
            m = shift + d
            sd = np.sqrt(max(suu - 2.0 * d * sun + d * d * snn, 0.0) / snn)
            if it == max_iter or not sd > 0:
                break
            sums = _clip_pass(vals, norms, keep, i0, i1, has_norm, shift, m, clip * sd, True)
        mean[k], spread[k], kept[k] = m, sd, count
    return mean, spread, kept


@numba.njit(nogil=True, cache=True)
def _select(x, m, k):
    """Reorder x[:m] in place so that x[k] is its k-th smallest value (quickselect); return it."""
    lo, hi = 0, m - 1
    while hi > lo:
        mid = (lo + hi) >> 1  # median of three as the pivot
        a, b, c = x[lo], x[mid], x[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while x[i] < pivot:
                i += 1
            while x[j] > pivot:
                j -= 1
            if i <= j:
                x[i], x[j] = x[j], x[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return x[k]


@numba.njit(nogil=True, cache=True)
def _median(x, m):
    """Median of x[:m] (m > 0; x is reordered), numpy's for an even m too."""
    k = m // 2
    upper = _select(x, m, k)
    if m % 2:
        return upper
    lower = x[0]
    for j in range(1, k):  # the largest of the k values below x[k]
        lower = max(lower, x[j])
    return 0.5 * (lower + upper)


@numba.njit(nogil=True, cache=True)
def median_mad(vals, norms, start, work):
    """(median, 1.4826 * MAD, valid pixels) of x per bin; `vals` / `norms` in bin order."""
    nbins = start.size - 1
    has_norm = norms.size > 0
    for k in range(nbins):
        if start[k + 1] - start[k] > work.size:
            raise ValueError("median_mad: work buffer smaller than a bin")
    med = np.full(nbins, np.nan)
    spread = np.full(nbins, np.nan)
    count = np.zeros(nbins, np.int64)
    for k in range(nbins):
        m = 0
        for j in range(start[k], start[k + 1]):
            v = np.float64(vals[j])
            if v == v:
                work[m] = v / np.float64(norms[j]) if has_norm else v
                m += 1
        count[k] = m
        if m == 0:
            continue
        med[k] = _median(work, m)
        for j in range(m):
            work[j] = abs(work[j] - med[k])
        spread[k] = 1.4826 * _median(work, m)
    return med, spread, count


@numba.njit(nogil=True, cache=True)
def pixel_maps(raw, lo, w, norm, level, spread, nsigma, min_excess, subtract, cut, out,
               check_marker, marker, check_dummy, dummy, delta_dummy):
    """cut[p] = bg + max(nsigma * s, min_excess) with bg, s interpolated between bins
    (lo[p], lo[p] + 1; weight w[p] of the upper) and times norm; +inf without a bin
    or where raw[p] is invalid (the module docstring), as if masked.
    With `subtract`, out[p] = v - bg (NaN without a bin) and the cut leaves out bg.
    Returns the smallest cut (+inf if none)."""
    has_norm = norm.size > 0
    lowest = np.inf
    for p in range(raw.size):
        k = lo[p]
        if k < 0 or _masked(raw[p], check_marker, marker, check_dummy, dummy, delta_dummy):
            cut[p] = np.inf
            if subtract:
                out[p] = np.nan
            continue
        f = np.float64(w[p])
        n = np.float64(norm[p]) if has_norm else 1.0
        bg = ((1.0 - f) * level[k] + f * level[k + 1]) * n
        sd = ((1.0 - f) * spread[k] + f * spread[k + 1]) * n
        excess = max(nsigma * sd, min_excess)
        t = np.float32(excess if subtract else bg + excess)
        cut[p] = t
        lowest = min(lowest, t)
        if subtract:
            out[p] = np.float32(np.float64(raw[p]) - bg)
    return lowest
