"""Dense per-frame kernels: threshold a frame, or correct + scale + threshold it in one pass.

Both write the kept pixels in raster order into caller-owned buffers
(`rows`, `cols`, `vals`) and return `(n, emax)`: `n` is the number of pixels
kept (it may exceed the buffer size, in which case only the first ones are
written) and `emax` the largest finite excess `value - threshold` among them.

A pixel is kept when `float64(value) - float64(threshold) > delta`; `delta` is
0 normally (so the test is `value > threshold`) and is raised by the caller
when too many pixels pass. When `hist` is not empty, the excess of each kept
pixel is also counted into it (bins of width 1/hinv from hlo, the last bin
holding everything from hhi up). (The nodes pass delta 0 and no histogram: a
frame with too many pixels is run again into buffers that hold them all, and
`nodes.threshold.raised_cut` chooses the raised cut from their values.)

`precut` (same dtype as the frame, used if `use_precut`) is a conservative
bound: a pixel whose value is not above it cannot pass (the fused pass also
never keeps such a pixel, bound or not). Each row is scanned in chunks of
CHUNK pixels with a vectorised test against it, and only chunks with a
candidate are looked at closely.

Two ways to look at a candidate chunk, with the same result (pixels, values,
`n`, `emax`, bit for bit; tests/test_kernels_dense.py checks them against
numpy):

* `delta == 0` and no histogram (every pass of a frame that does not
  overflow), C-contiguous arrays: the pieces of SUB pixels that hold a
  candidate (or, in rows crowded with candidates, whole chunks) get their
  values and keep flags in loops of constant length that the compiler
  vectorises; then every pixel of the piece is written and the write
  position moves past the kept ones, with no branch per pixel. The fused
  pass finds a row's candidate pieces one row ahead and prefetches their
  dark, flat, mask and cut-map lines. `float64(v) - t > 0` is the same test as
  `float64(v) > t` (IEEE subtraction is exact in sign), and for a float32 `v`
  that is `v > t32` with `t32` the largest float32 not above `t`, so the fused
  pass compares in float32. `emax` is found afterwards from the kept pixels;
  if more pass than the buffers hold, the pixel-by-pixel pass runs instead.
* otherwise (the raised-cut passes): pixel by pixel in float64.

Performance notes (numba 0.68, LLVM 20): indices inside a chunk are unsigned
(no negative-index wrap-around, so loads are contiguous and loops vectorise),
reductions are over integers (a boolean `|=` reduction is not vectorised), no
array views are made per chunk and no helper taking arrays is called per
chunk except the tiny tests (each costs atomic reference counting that numba
does not always prune), and flags stored as bytes are never read back as
words right away (a store-forwarding stall).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

CHUNK = 128  # pixels of a row checked against the pre-cut at once
SUB = 8  # pixels of a candidate chunk looked at together
DENSE = 16  # crowded rows: candidates from which a chunk is looked at whole
STREAK = 8  # rows in a row of the other kind before the fused pass changes kind
AHEAD = 1  # rows between finding a row's candidates (and prefetching) and using them


@numba.njit(nogil=True, cache=True, inline="always")
def _u(i):
    return np.uint64(i)


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask for the cache line of array[index] (1D, contiguous; no bounds check, no fault)."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer2(context, builder, data=ary.data,
                                        shape=cgutils.unpack_tuple(builder, ary.shape),
                                        strides=cgutils.unpack_tuple(builder, ary.strides),
                                        layout=aryty.layout, inds=[args[1]],
                                        wraparound=False, boundscheck=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read, keep in all cache levels, data cache
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def _any_above(a, i0, m, precut):
    """Any of a[i0:i0 + m] (1D) above precut?"""
    u0 = _u(i0)
    hits = 0
    for j in range(m):
        hits |= a[u0 + _u(j)] > precut
    return hits != 0


@numba.njit(nogil=True, cache=True)
def _count_above(a, i0, m, precut):
    """How many of a[i0:i0 + m] (1D) are above precut."""
    u0 = _u(i0)
    hits = 0
    for j in range(m):
        hits += a[u0 + _u(j)] > precut
    return hits


@numba.njit(nogil=True, cache=True)
def _contiguous(a):
    return a.flags.c_contiguous


@numba.njit(nogil=True, cache=True)
def _round_down32(t):
    """The largest float32 not above the float64 `t` (for a float32 v: v > it iff v > t)."""
    t32 = np.float32(t)
    if np.float64(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


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
def _emax_kept(values, rows, cols, n, ncols, cut, cut_map):
    """The largest finite float64(values[...]) - threshold over the first n kept pixels.

    `values` is 1D: the kept values themselves (ncols 0) or the frame, flat
    (ncols its row length).
    """
    emax = -np.inf
    use_map = cut_map.size > 0
    for i in range(n):
        v = values[i] if ncols == 0 else values[_u(np.int64(rows[i]) * ncols + cols[i])]
        t = np.float64(cut_map[rows[i], cols[i]]) if use_map else cut
        e = np.float64(v) - t
        if e > emax and e < np.inf:
            emax = e
    return emax


# ------------------------------------------------------------------ threshold only


@numba.njit(nogil=True, cache=True)
def _threshold_exact(frame, precut, use_precut, cut, cut_map, delta, rows, cols, vals,
                     hist, hlo, hinv, hhi):
    nrows, ncols = frame.shape
    use_map = cut_map.size > 0
    n = 0
    emax = -np.inf
    for r in range(nrows):
        line = frame[r]
        for c0 in range(0, ncols, CHUNK):
            m = min(CHUNK, ncols - c0)
            if use_precut and not _any_above(line, c0, m, precut):
                continue
            for c in range(c0, c0 + m):
                value = line[c]
                t = np.float64(cut_map[r, c]) if use_map else cut
                excess = np.float64(value) - t
                if excess > delta:
                    n, emax = _keep(n, emax, r, c, np.float32(value), excess, rows, cols, vals,
                                    hist, hlo, hinv, hhi)
    return n, emax


@numba.njit(nogil=True, cache=True)
def _threshold_fast(frame, precut, use_precut, cut, cut_map, rows, cols, vals):
    """delta 0, no histogram, C-contiguous arrays; returns n (the module docstring)."""
    nrows, ncols = frame.shape
    use_map = cut_map.size > 0
    frame1 = frame.ravel()
    cut1 = cut_map.ravel()
    te = np.empty(SUB, np.float64)
    tk = np.empty(SUB, np.bool_)
    nfull = ncols // CHUNK
    size = rows.size
    n = 0
    for r in range(nrows):
        base = r * ncols
        for q in range(nfull):
            c0 = q * CHUNK
            if use_precut and not _any_above(frame1, base + c0, CHUNK, precut):
                continue
            for s0 in range(c0, c0 + CHUNK, SUB):
                if use_precut and not _any_above(frame1, base + s0, SUB, precut):
                    continue
                u0 = _u(base + s0)
                if use_map:
                    for j in range(SUB):
                        te[j] = np.float64(frame1[u0 + _u(j)]) - np.float64(cut1[u0 + _u(j)])
                else:
                    for j in range(SUB):
                        te[j] = np.float64(frame1[u0 + _u(j)]) - cut
                hits = 0
                for j in range(SUB):
                    k = te[j] > 0.0
                    tk[j] = k
                    hits |= k
                if hits == 0:
                    continue
                if n + SUB <= size:  # room for all: write each pixel, move past the kept
                    for j in range(SUB):
                        rows[n] = r
                        cols[n] = s0 + j
                        vals[n] = np.float32(frame1[u0 + _u(j)])
                        n += tk[j]
                else:
                    for j in range(SUB):
                        if tk[j]:
                            if n < size:
                                rows[n] = r
                                cols[n] = s0 + j
                                vals[n] = np.float32(frame1[u0 + _u(j)])
                            n += 1
        c0 = nfull * CHUNK  # the rest of the row, pixel by pixel
        if c0 < ncols and (not use_precut or _any_above(frame1, base + c0, ncols - c0, precut)):
            for c in range(c0, ncols):
                i = _u(base + c)
                value = frame1[i]
                t = np.float64(cut1[i]) if use_map else cut
                if np.float64(value) - t > 0.0:
                    if n < size:
                        rows[n] = r
                        cols[n] = c
                        vals[n] = np.float32(value)
                    n += 1
    return n


@numba.njit(nogil=True, cache=True)
def threshold_frame(frame, precut, use_precut, cut, cut_map, delta, rows, cols, vals,
                    hist, hlo, hinv, hhi):
    """Keep the pixels of a frame (any dtype) above `cut` or `cut_map` (if not empty)."""
    if delta == 0.0 and hist.size == 0 and _contiguous(frame) and _contiguous(cut_map):
        n = _threshold_fast(frame, precut, use_precut, cut, cut_map, rows, cols, vals)
        if n <= rows.size:
            return n, _emax_kept(frame.ravel(), rows, cols, n, frame.shape[1], cut, cut_map)
        # more than fit: the pixel-by-pixel pass finds the emax of them all
    return _threshold_exact(frame, precut, use_precut, cut, cut_map, delta, rows, cols, vals,
                            hist, hlo, hinv, hhi)


# ------------------------------------------------------ correct + scale + threshold


@numba.njit(nogil=True, cache=True)
def _correct_exact(raw, precut, use_precut, mask, dark0, dark_map, invflat0, invflat_map,
                   scale, cut, cut_map, delta, rows, cols, vals, hist, hlo, hinv, hhi):
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
            m = min(CHUNK, ncols - c0)
            if use_precut and not _any_above(line, c0, m, precut):
                continue
            for c in range(c0, c0 + m):
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


def _make_correct_rows(crowded: bool):
    """The fused pass over rows r0.. of a frame, for frames with few candidates (spots: a
    chunk's candidates are looked at piece by piece) or, with `crowded`, for rows where
    most chunks hold one (noise near the cut: a chunk with many is looked at whole).

    `correct_rows(..., r0, n)` keeps the pixels of rows r0, r0 + 1, ... (n kept so
    far) and returns (n, r): it stops before row r when the rows seen call for the
    other kind, or at the end of the frame. Rows are scanned one row ahead of where
    pixels are kept: the scan finds a row's candidate pieces (or chunks) and asks
    for their map lines (prefetch), which arrive while the previous row is kept. A
    piece of SUB pixels, or a whole chunk, gets its values and keep flags in loops
    of constant length (the compiler vectorises them), then every pixel is written
    and the write position moves past the kept ones (no branch per pixel). The end
    of a row (ncols % CHUNK pixels) goes pixel by pixel.

    (Written out in one function: a helper taking arrays costs atomic reference
    counting on each call when numba cannot prune it.)
    """

    @numba.njit(nogil=True, cache=True)
    def correct_rows(raw1, nrows, ncols, precut, use_precut, mask1, use_mask, dark0, dark1,
                     use_dark, invflat0, invflat1, use_flat, scale, cut32, cut1, use_cut,
                     rows, cols, vals, r0, n):
        tv = np.empty(CHUNK, np.float32)
        tk = np.empty(CHUNK, np.bool_)
        nfull = ncols // CHUNK
        tail = ncols - nfull * CHUNK
        pieces = np.empty((AHEAD + 1, ncols // SUB + 1), np.int64)  # candidates, by row
        npieces = np.zeros(AHEAD + 1, np.int64)
        size = rows.size
        streak = 0  # rows in a row that look like the other kind
        for r in range(r0, nrows + AHEAD):
            if r < nrows:  # scan row r
                slot = r % (AHEAD + 1)
                base = r * ncols
                k = 0
                busy = 0  # chunks with a candidate
                for q in range(nfull):
                    c0 = q * CHUNK
                    if use_precut and not _any_above(raw1, base + c0, CHUNK, precut):
                        continue
                    busy += 1
                    if crowded and (not use_precut or _count_above(
                            raw1, base + c0, CHUNK, precut) >= DENSE):
                        pieces[slot, k] = -1 - c0  # the whole chunk
                        k += 1
                        for j in range(0, CHUNK, 16):
                            i = _u(base + c0 + j)
                            if use_dark:
                                _prefetch(dark1, i)
                            if use_flat:
                                _prefetch(invflat1, i)
                            if use_cut:
                                _prefetch(cut1, i)
                            if use_mask and j % 64 == 0:
                                _prefetch(mask1, i)
                        continue
                    for s0 in range(c0, c0 + CHUNK, SUB):
                        if use_precut and not _any_above(raw1, base + s0, SUB, precut):
                            continue
                        pieces[slot, k] = s0
                        k += 1
                        for i in (_u(base + s0), _u(base + s0 + SUB - 1)):
                            if use_dark:
                                _prefetch(dark1, i)
                            if use_flat:
                                _prefetch(invflat1, i)
                            if use_mask:
                                _prefetch(mask1, i)
                            if use_cut:
                                _prefetch(cut1, i)
                c0 = nfull * CHUNK
                if tail and (not use_precut or _any_above(raw1, base + c0, tail, precut)):
                    pieces[slot, k] = c0  # the end of the row
                    k += 1
                npieces[slot] = k
                if use_precut and nfull >= 4:
                    other = 4 * busy < nfull if crowded else 2 * busy > nfull
                    streak = streak + 1 if other else 0
            if r < r0 + AHEAD:
                continue
            p = r - AHEAD  # keep the pixels of row p
            slot = p % (AHEAD + 1)
            base = p * ncols
            for k in range(npieces[slot]):
                s0 = pieces[slot, k]
                if s0 >= nfull * CHUNK:  # the end of the row, pixel by pixel
                    for c in range(s0, ncols):
                        i = _u(base + c)
                        x = raw1[i]
                        if use_precut and not x > precut:
                            continue
                        if use_mask and mask1[i] != 0:
                            continue
                        d = dark1[i] if use_dark else dark0
                        g = invflat1[i] if use_flat else invflat0
                        v = ((np.float32(x) - d) * g) * scale
                        if (v > cut1[i]) if use_cut else (v > cut32):
                            if n < size:
                                rows[n] = p
                                cols[n] = c
                                vals[n] = v
                            n += 1
                    continue
                m = SUB
                if crowded and s0 < 0:
                    s0 = -1 - s0
                    m = CHUNK
                u0 = _u(base + s0)
                # v = ((float32(raw) - dark) * invflat) * scale; m is one of two constants
                for j in range(m):
                    tv[j] = np.float32(raw1[u0 + _u(j)])
                if use_dark:
                    for j in range(m):
                        tv[j] = tv[j] - dark1[u0 + _u(j)]
                else:
                    for j in range(m):
                        tv[j] = tv[j] - dark0
                if use_flat:
                    for j in range(m):
                        tv[j] = tv[j] * invflat1[u0 + _u(j)]
                else:
                    for j in range(m):
                        tv[j] = tv[j] * invflat0
                for j in range(m):
                    tv[j] = tv[j] * scale
                hits = 0
                if use_cut:
                    for j in range(m):
                        kj = tv[j] > cut1[u0 + _u(j)]
                        tk[j] = kj
                        hits |= kj
                else:
                    for j in range(m):
                        kj = tv[j] > cut32
                        tk[j] = kj
                        hits |= kj
                if hits == 0:
                    continue
                if use_precut:
                    for j in range(m):
                        tk[j] = tk[j] & (raw1[u0 + _u(j)] > precut)
                if use_mask:
                    for j in range(m):
                        tk[j] = tk[j] & (mask1[u0 + _u(j)] == 0)
                if n + m <= size:  # room for all: write each pixel, move past the kept
                    for j in range(m):
                        rows[n] = p
                        cols[n] = s0 + j
                        vals[n] = tv[j]
                        n += tk[j]
                else:
                    for j in range(m):
                        if tk[j]:
                            if n < size:
                                rows[n] = p
                                cols[n] = s0 + j
                                vals[n] = tv[j]
                            n += 1
            if streak >= STREAK and p + 1 < nrows:
                return n, p + 1
        return n, nrows

    return correct_rows


_correct_sparse_rows = _make_correct_rows(False)
_correct_crowded_rows = _make_correct_rows(True)


@numba.njit(nogil=True, cache=True)
def correct_threshold(raw, precut, use_precut, mask, dark0, dark_map, invflat0, invflat_map,
                      scale, cut, cut_map, delta, rows, cols, vals, hist, hlo, hinv, hhi):
    """Fused pass: v = ((float32(raw) - dark) * invflat) * scale, then keep as threshold_frame.

    Masked pixels are skipped. Maps (mask, dark, invflat, cut) are used when
    not empty, otherwise the scalars; dark0, invflat0 and scale are float32.
    """
    dark0 = np.float32(dark0)
    invflat0 = np.float32(invflat0)
    scale = np.float32(scale)
    if (delta == 0.0 and hist.size == 0 and _contiguous(raw) and _contiguous(mask)
            and _contiguous(dark_map) and _contiguous(invflat_map) and _contiguous(cut_map)):
        nrows, ncols = raw.shape
        args = (raw.ravel(), nrows, ncols, precut, use_precut, mask.ravel(), mask.size > 0,
                dark0, dark_map.ravel(), dark_map.size > 0, invflat0, invflat_map.ravel(),
                invflat_map.size > 0, scale, _round_down32(cut), cut_map.ravel(),
                cut_map.size > 0, rows, cols, vals)
        n, r = 0, 0
        crowded = False
        while r < nrows:
            if crowded:
                n, r = _correct_crowded_rows(*args, r, n)
            else:
                n, r = _correct_sparse_rows(*args, r, n)
            crowded = not crowded
        if n <= rows.size:
            return n, _emax_kept(vals, rows, cols, n, 0, cut, cut_map)
        # more than fit: the pixel-by-pixel pass finds the emax of them all
    return _correct_exact(raw, precut, use_precut, mask, dark0, dark_map, invflat0, invflat_map,
                          scale, cut, cut_map, delta, rows, cols, vals, hist, hlo, hinv, hhi)
