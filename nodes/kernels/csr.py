"""Pixel -> bin sparse matrices (built once per geometry) and the one-pass integration per frame.

The matrix is stored by pixel (a CSR with one row per pixel, rows in raster
order), so the per-frame pass reads the frame sequentially and adds into small
per-bin accumulators that stay in cache:

* no splitting: `pbin[p]`, the bin of pixel p (-1: none);
* bounding-box splitting: built as entries (`count[p]` per pixel, `ebin`,
  `ecoef`), then stored as fixed slots (`to_slots`): each pixel's lowest bin
  and one (1D) or two (2D) float32 shares that give the weights of it and of
  its next bins (pyFAI's bounding-box weights factor that way), so the pass
  reads 8 bytes per pixel and has no loop of varying length; the few pixels
  spanning more bins keep their entries and are added after (`add_overflow`).

Bin numbers follow pyFAI's `splitBBox_common` exactly, including its C
truncation: a pixel whose (bounding box) position f = (x - min) / delta lies
in (-1, 0) still lands in bin 0, one that starts at or beyond the last bin's
end is dropped, and a bounding box cut by the range keeps its whole weight in
the bins inside (pyFAI's `calc_lut_1d` / `calc_lut_2d`). 2D bins are numbered
`bin0 * bins1 + bin1` (radial major), as pyFAI's.

Per frame a pixel's value is `((float32(raw) - dark) * invflat) * scale` in
float32 when `corrected` (exactly what `Correct` then `Normalise` compute),
else the value itself. A NaN value, or one equal to `dummy` (within
`delta_dummy`), is invalid: it adds its weight * norm to `bad` instead; so is,
with `check_marker`, a pixel whose raw value is `marker` (an unsigned detector
dtype's largest: module gaps and bad pixels, `nodes.correct.marker_of`). Sums
are float64; neighbouring pixels go to LANES interleaved copies of the
accumulators so that consecutive adds into one bin do not wait on each other.
Helpers called per pixel take scalars only (an array argument costs reference
counting per call).
"""

from __future__ import annotations

import numba
import numpy as np

LANES = 4


@numba.njit(nogil=True, cache=True, inline="always")
def _trunc(f):
    """pyFAI's `<Py_ssize_t>` cast of a bin position: truncation toward zero."""
    return np.int64(f)


@numba.njit(nogil=True, cache=True)
def build_nosplit(pos0, pos1, keep, pos0_min, delta0, bins0, pos1_min, delta1, bins1,
                  azim_lo, azim_hi, check_azim):
    """The bin of each pixel centre (-1: none); bins1 > 1 for 2D (azimuth binned).

    1D with `check_azim`: pixels with chi outside [azim_lo, azim_hi] are dropped.
    """
    n = pos0.size
    pbin = np.full(n, -1, np.int32)
    for p in range(n):
        if not keep[p]:
            continue
        b0 = _trunc((pos0[p] - pos0_min) / delta0)
        if b0 < 0 or b0 >= bins0:
            continue
        if bins1 > 1:
            b1 = _trunc((pos1[p] - pos1_min) / delta1)
            if b1 < 0 or b1 >= bins1:
                continue
            pbin[p] = b0 * bins1 + b1
        else:
            if check_azim and (pos1[p] < azim_lo or pos1[p] > azim_hi):
                continue
            pbin[p] = b0
    return pbin


@numba.njit(nogil=True, cache=True, inline="always")
def _span(c, d, vmin, delta, nbins):
    """(first, last, fmin, fmax) bins of [c - d, c + d]; first > last: outside."""
    fmin = (c - d - vmin) / delta
    fmax = (c + d - vmin) / delta
    b0 = _trunc(fmin)
    b1 = _trunc(fmax)
    if b1 < 0 or b0 >= nbins:
        return 1, 0, fmin, fmax
    return max(b0, 0), min(b1, nbins - 1), fmin, fmax


@numba.njit(nogil=True, cache=True, inline="always")
def _weight(b, first, last, fmin, fmax):
    """pyFAI's bounding-box share of bin b (first <= b <= last) along one axis."""
    if first == last:
        return 1.0
    inv = 1.0 / (fmax - fmin)
    if b == first:
        return (first + 1.0 - fmin) * inv
    if b == last:
        return (fmax - last) * inv
    return inv


@numba.njit(nogil=True, cache=True)
def _bbox_pass(pos0, dpos0, pos1, dpos1, keep, pos0_min, delta0, bins0, pos1_min, delta1,
               bins1, azim_lo, azim_hi, check_azim, count, ebin, ecoef, fill):
    """Count (fill False) or write (fill True) the entries of every pixel; returns nnz."""
    nnz = 0
    for p in range(pos0.size):
        if not keep[p]:
            continue
        c0, d0 = pos0[p], dpos0[p]
        a0, z0, f0, g0 = _span(c0, d0, pos0_min, delta0, bins0)
        if a0 > z0:
            continue
        if bins1 > 1:
            a1, z1, f1, g1 = _span(pos1[p], dpos1[p], pos1_min, delta1, bins1)
            if a1 > z1:
                continue
        else:
            if check_azim and (pos1[p] + dpos1[p] < azim_lo or pos1[p] - dpos1[p] > azim_hi):
                continue
            a1, z1, f1, g1 = 0, 0, 0.0, 0.0
        k = 0
        for b0 in range(a0, z0 + 1):
            w0 = _weight(b0, a0, z0, f0, g0)
            for b1 in range(a1, z1 + 1):
                w = np.float32(w0 * _weight(b1, a1, z1, f1, g1))
                if w == 0:
                    continue
                if fill:
                    ebin[nnz + k] = b0 * bins1 + b1
                    ecoef[nnz + k] = w
                k += 1
        if fill:
            count[p] = k
        nnz += k
    return nnz


def build_bbox(pos0, dpos0, pos1, dpos1, keep, pos0_min, delta0, bins0, pos1_min, delta1,
               bins1, azim_lo, azim_hi, check_azim):
    """(count uint16 per pixel, ebin int32, ecoef float32): the bounding-box entries."""
    args = (pos0, dpos0, pos1, dpos1, keep, pos0_min, delta0, bins0, pos1_min, delta1, bins1,
            azim_lo, azim_hi, check_azim)
    count = np.zeros(pos0.size, np.uint16)
    nnz = _bbox_pass(*args, count, np.zeros(0, np.int32), np.zeros(0, np.float32), False)
    ebin = np.empty(nnz, np.int32)
    ecoef = np.empty(nnz, np.float32)
    _bbox_pass(*args, count, ebin, ecoef, True)
    return count, ebin, ecoef


@numba.njit(nogil=True, cache=True)
def bin_sums(pbin, norm, nbins):
    """Per bin (no splitting): sum of norm and the number of pixels."""
    total = np.zeros(nbins, np.float64)
    entries = np.zeros(nbins, np.int64)
    for p in range(pbin.size):
        b = pbin[p]
        if b >= 0:
            total[b] += norm[p]
            entries[b] += 1
    return total, entries


@numba.njit(nogil=True, cache=True)
def to_slots(count, ebin, ecoef, bins1, two_d):
    """Entries -> 2 (1D) or 2 x 2 (2D) slots per pixel, and the pixels that do not fit.

    A pixel's slots are the bins (b0 + i, b1 + j), i, j in {0, 1} (j = 0 only
    in 1D): `sbin[p]` = b0 * bins1 + b1 of its lowest bin (-1: none), and its
    weights factor as pyFAI's do: `sw[p, 0]` = a, the share of row b0 (1 - a
    for b0 + 1), and in 2D `sw[p, 1]` = b, the share of column b1; slot (i, j)
    weighs (a or 1 - a) * (b or 1 - b). A pixel with no entry beyond b0 (b1)
    has a = 1 (b = 1) exactly. Pixels spanning more go whole to the overflow
    entries (`opix`, `ocount`, `oebin`, `oecoef`).
    """
    n = count.size
    sbin = np.full(n, -1, np.int32)
    sw = np.ones((n, 2 if two_d else 1), np.float32)
    over = np.zeros(n, np.bool_)
    nover = 0
    e = 0
    for p in range(n):
        k = np.int64(count[p])
        if k == 0:
            continue
        lo0 = lo1 = np.int64(1) << 40
        for j in range(e, e + k):
            lo0 = min(lo0, ebin[j] // bins1)
            lo1 = min(lo1, ebin[j] % bins1)
        fits = True
        a = b = 0.0
        up0 = up1 = False
        for j in range(e, e + k):
            d0 = ebin[j] // bins1 - lo0
            d1 = ebin[j] % bins1 - lo1
            if d0 > 1 or d1 > 1:
                fits = False
            a += ecoef[j] if d0 == 0 else 0.0
            b += ecoef[j] if d1 == 0 else 0.0
            up0 |= d0 == 1
            up1 |= d1 == 1
        if fits:
            sbin[p] = lo0 * bins1 + lo1
            sw[p, 0] = a if up0 else 1.0
            if two_d:
                sw[p, 1] = b if up1 else 1.0
        else:
            over[p] = True
            nover += k
        e += k
    opix = np.flatnonzero(over).astype(np.int32)
    ocount = np.empty(opix.size, np.uint16)
    oebin = np.empty(nover, np.int32)
    oecoef = np.empty(nover, np.float32)
    e = o = i = 0
    for p in range(n):
        k = np.int64(count[p])
        if over[p]:
            ocount[i] = k
            i += 1
            for j in range(e, e + k):
                oebin[o] = ebin[j]
                oecoef[o] = ecoef[j]
                o += 1
        e += k
    return sbin, sw, opix, ocount, oebin, oecoef


@numba.njit(nogil=True, cache=True, inline="always")
def _slot_weights(a, b, two_d):
    """The 4 slot weights (b0, b1), (b0, b1 + 1), (b0 + 1, b1), (b0 + 1, b1 + 1)."""
    if two_d:
        return a * b, a * (1.0 - b), (1.0 - a) * b, (1.0 - a) * (1.0 - b)
    return a, 0.0, 1.0 - a, 0.0


@numba.njit(nogil=True, cache=True)
def slot_sums(sbin, sw, bins1, overflow_pix, ocount, oebin, oecoef, norm, nbins):
    """Per bin: sum of weight * norm and the number of weights > 0, as the pass sees them."""
    two_d = sw.shape[1] == 2
    pad = nbins + bins1 + 2
    total = np.zeros(pad)
    entries = np.zeros(pad, np.int64)
    for p in range(sbin.size):
        b = sbin[p]
        if b < 0:
            continue
        c00, c01, c10, c11 = _slot_weights(np.float64(sw[p, 0]),
                                           np.float64(sw[p, 1]) if two_d else 1.0, two_d)
        n = np.float64(norm[p])
        b1 = b + (bins1 if two_d else 1)
        total[b] += c00 * n
        total[b + 1] += c01 * n
        total[b1] += c10 * n
        total[b1 + 1] += c11 * n
        entries[b] += c00 > 0
        entries[b + 1] += c01 > 0
        entries[b1] += c10 > 0
        entries[b1 + 1] += c11 > 0
    e = 0
    for i in range(overflow_pix.size):
        p = overflow_pix[i]
        for j in range(e, e + np.int64(ocount[i])):
            total[oebin[j]] += np.float64(oecoef[j]) * norm[p]
            entries[oebin[j]] += 1
        e += np.int64(ocount[i])
    return total[:nbins], entries[:nbins]


@numba.njit(nogil=True, cache=True, inline="always")
def _correct(v, d, f, scale):
    """(v - dark) * invflat * scale in float32, as Correct then Normalise compute it."""
    return ((v - d) * f) * scale


@numba.njit(nogil=True, cache=True, inline="always")
def _invalid(v, check_dummy, dummy, delta_dummy):
    if v != v:
        return True
    if check_dummy:
        if delta_dummy == 0:
            return v == dummy
        return abs(v - dummy) <= delta_dummy
    return False


@numba.njit(nogil=True, cache=True)
def integrate_nosplit(raw, pbin, nbins, dark0, dark_map, invflat0, invflat_map, scale,
                      corrected, check_dummy, dummy, delta_dummy, norm, poisson, floor,
                      check_marker, marker):
    """One pass, no splitting: (signal, variance, bad norm, bad entries) per bin.

    `raw` is the flattened frame; the corrections apply when `corrected`;
    variance is sum(max(floor, v)) when `poisson` (floor 1: counts; for a frame
    scaled by s since it was counts, floor s and the caller multiplies by s).
    """
    sig = np.zeros((LANES, nbins))
    var = np.zeros((LANES, nbins))
    bad = np.zeros(nbins)
    nbad = np.zeros(nbins, np.int64)
    one = np.float32(floor)
    has_dark, has_flat = dark_map.size > 0, invflat_map.size > 0
    for p in range(raw.size):
        b = pbin[p]
        if b < 0:
            continue
        v = np.float32(raw[p])
        if corrected:
            v = _correct(v, dark_map[p] if has_dark else dark0,
                         invflat_map[p] if has_flat else invflat0, scale)
        if _invalid(v, check_dummy, dummy, delta_dummy) or (check_marker and raw[p] == marker):
            bad[b] += norm[p]
            nbad[b] += 1
            continue
        lane = p & (LANES - 1)
        sig[lane, b] += v
        if poisson:
            var[lane, b] += max(one, v)
    return sig.sum(axis=0), var.sum(axis=0), bad, nbad


@numba.njit(nogil=True, cache=True)
def integrate_slots(raw, sbin, sw, bins1, nbins, dark0, dark_map, invflat0, invflat_map, scale,
                    corrected, check_dummy, dummy, delta_dummy, norm, poisson, floor,
                    check_marker, marker):
    """One pass over the slots (`to_slots`): weights c into sum(c v), sum(c^2 max(floor, v));
    the accumulators are padded past the last bin (for slots of weight 0)."""
    two_d = sw.shape[1] == 2
    pad = nbins + bins1 + 2
    sig = np.zeros((LANES, pad))
    var = np.zeros((LANES, pad))
    bad = np.zeros(pad)
    nbad = np.zeros(pad, np.int64)
    one = np.float32(floor)
    has_dark, has_flat = dark_map.size > 0, invflat_map.size > 0
    if not two_d:  # 1D: weights a (bin b) and 1 - a (bin b + 1)
        for p in range(raw.size):
            b = sbin[p]
            if b < 0:
                continue
            v = np.float32(raw[p])
            if corrected:
                v = _correct(v, dark_map[p] if has_dark else dark0,
                             invflat_map[p] if has_flat else invflat0, scale)
            c0 = np.float64(sw[p, 0])
            c1 = 1.0 - c0
            if _invalid(v, check_dummy, dummy, delta_dummy) or (check_marker and raw[p] == marker):
                n = np.float64(norm[p])
                bad[b] += c0 * n
                bad[b + 1] += c1 * n
                nbad[b] += 1
                nbad[b + 1] += c1 > 0
                continue
            lane = p & (LANES - 1)
            x = np.float64(v)
            sig[lane, b] += c0 * x
            sig[lane, b + 1] += c1 * x
            if poisson:
                vv = np.float64(max(one, v))
                var[lane, b] += c0 * c0 * vv
                var[lane, b + 1] += c1 * c1 * vv
        return sig.sum(axis=0)[:nbins], var.sum(axis=0)[:nbins], bad[:nbins], nbad[:nbins]
    for p in range(raw.size):
        b = sbin[p]
        if b < 0:
            continue
        v = np.float32(raw[p])
        if corrected:
            v = _correct(v, dark_map[p] if has_dark else dark0,
                         invflat_map[p] if has_flat else invflat0, scale)
        c00, c01, c10, c11 = _slot_weights(np.float64(sw[p, 0]), np.float64(sw[p, 1]), True)
        b1 = b + bins1
        if _invalid(v, check_dummy, dummy, delta_dummy) or (check_marker and raw[p] == marker):
            n = np.float64(norm[p])
            bad[b] += c00 * n
            bad[b + 1] += c01 * n
            bad[b1] += c10 * n
            bad[b1 + 1] += c11 * n
            nbad[b] += c00 > 0
            nbad[b + 1] += c01 > 0
            nbad[b1] += c10 > 0
            nbad[b1 + 1] += c11 > 0
            continue
        lane = p & (LANES - 1)
        x = np.float64(v)
        sig[lane, b] += c00 * x
        sig[lane, b + 1] += c01 * x
        sig[lane, b1] += c10 * x
        sig[lane, b1 + 1] += c11 * x
        if poisson:
            vv = np.float64(max(one, v))
            var[lane, b] += c00 * c00 * vv
            var[lane, b + 1] += c01 * c01 * vv
            var[lane, b1] += c10 * c10 * vv
            var[lane, b1 + 1] += c11 * c11 * vv
    return sig.sum(axis=0)[:nbins], var.sum(axis=0)[:nbins], bad[:nbins], nbad[:nbins]


@numba.njit(nogil=True, cache=True)
def add_overflow(raw, opix, ocount, oebin, oecoef, dark0, dark_map, invflat0, invflat_map,
                 scale, corrected, check_dummy, dummy, delta_dummy, norm, poisson, floor,
                 check_marker, marker, sig, var, bad, nbad):
    """Add the pixels that span more bins than the slots hold (in place)."""
    one = np.float32(floor)
    has_dark, has_flat = dark_map.size > 0, invflat_map.size > 0
    e = 0
    for i in range(opix.size):
        p = opix[i]
        k = np.int64(ocount[i])
        v = np.float32(raw[p])
        if corrected:
            v = _correct(v, dark_map[p] if has_dark else dark0,
                         invflat_map[p] if has_flat else invflat0, scale)
        invalid = (_invalid(v, check_dummy, dummy, delta_dummy)
                   or (check_marker and raw[p] == marker))
        vv = np.float64(max(one, v))
        for j in range(e, e + k):
            c = np.float64(oecoef[j])
            b = oebin[j]
            if invalid:
                bad[b] += c * norm[p]
                nbad[b] += 1
            else:
                sig[b] += c * v
                if poisson:
                    var[b] += c * c * vv
        e += k


@numba.njit(nogil=True, cache=True)
def finish(sig, var, bad, nbad, norm_total, entries, empty, poisson):
    """(intensity, error) float32 per bin: sum(c v) / sum(c norm), sqrt(sum(c^2 var)) / sum(c norm).

    Bins without a valid pixel hold `empty` (and error `empty`).
    """
    n = sig.size
    intensity = np.empty(n, np.float32)
    error = np.empty(n, np.float32)
    for b in range(n):
        norm = norm_total[b] - bad[b]
        if entries[b] - nbad[b] <= 0 or not norm > 0:
            intensity[b] = empty
            error[b] = empty
            continue
        intensity[b] = sig[b] / norm
        error[b] = np.sqrt(var[b]) / norm if poisson else empty
    return intensity, error
