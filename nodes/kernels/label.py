"""Label kernels: 8-connected components of sparse pixels (`kernels.components`) and
their split at significant local maxima, a watershed on the sparse pixels
(`split_local_max`, here), with its significance test (`significant`), which
the linker's 3D split uses too.
"""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.components import connected_pixels, find_root, label_kept, remove_small

__all__ = ["connected_pixels", "label_kept", "remove_small", "significant", "split_local_max"]


@numba.njit(nogil=True, cache=True)
def _higher(intensity, a, b):
    """Strict total order of pixels: by intensity, ties by index (so ascent never cycles;
    _order_codes sorts float32 intensities the same way)."""
    return intensity[a] > intensity[b] or (intensity[a] == intensity[b] and a > b)


@numba.njit(nogil=True, cache=True)
def _order_codes(row, col, intensity):
    """Raster keys row << 16 | col (uint16 rows and columns) and, per pixel, an
    integer that sorts as _higher does: the float32's bits made monotone, then the
    index (so a max over neighbours needs no branches)."""
    n = row.size
    key = np.empty(n, np.int64)
    code = np.empty(n, np.uint64)
    for i in range(n):
        key[i] = (np.int64(row[i]) << 16) | np.int64(col[i])
        b = np.uint64(np.float32(intensity[i]).view(np.uint32))
        if b & np.uint64(0x80000000):
            b = ~b & np.uint64(0xFFFFFFFF)
        else:
            b = b | np.uint64(0x80000000)
        code[i] = (b << np.uint64(32)) | np.uint64(i)
    return key, code


@numba.njit(nogil=True, cache=True)
def _maxima(key, code, labels, nmax):
    """Count the local maxima (8 neighbours) per blob into nmax; return the total.
    Only pixels that top their row neighbours are compared with the rows above and
    below, found with two pointers that only move forward."""
    n = key.shape[0]
    total = 0
    pu = 0
    pd = 0
    for i in range(n):
        ki = key[i]
        ci = code[i]
        if i > 0 and key[i - 1] == ki - 1 and code[i - 1] > ci:
            continue
        if i + 1 < n and key[i + 1] == ki + 1 and code[i + 1] > ci:
            continue
        best = ci
        lo = ki - 65537  # (r - 1, c - 1); key[i] > lo stops pu at i at the latest
        while key[pu] < lo:
            pu += 1
        k = pu
        while key[k] <= ki - 65535:  # up to (r - 1, c + 1)
            best = max(best, code[k])
            k += 1
        if pd <= i:
            pd = i + 1
        lo = ki + 65535  # (r + 1, c - 1)
        while pd < n and key[pd] < lo:
            pd += 1
        k = pd
        while k < n and key[k] <= ki + 65537:  # up to (r + 1, c + 1)
            best = max(best, code[k])
            k += 1
        if best == ci:
            nmax[labels[i]] += 1
            total += 1
    return total


@numba.njit(nogil=True, cache=True)
def _ascent(key, code, up):
    """up[i]: the highest of pixel i and its 8 neighbours (steepest ascent; `code`
    holds the local index), with the pointers of _maxima."""
    n = key.shape[0]
    mask = np.uint64(0xFFFFFFFF)
    pu = 0
    pd = 0
    for i in range(n):
        ki = key[i]
        best = code[i]
        if i > 0 and key[i - 1] == ki - 1:
            best = max(best, code[i - 1])
        if i + 1 < n and key[i + 1] == ki + 1:
            best = max(best, code[i + 1])
        lo = ki - 65537
        while key[pu] < lo:
            pu += 1
        k = pu
        while key[k] <= ki - 65535:
            best = max(best, code[k])
            k += 1
        if pd <= i:
            pd = i + 1
        lo = ki + 65535
        while pd < n and key[pd] < lo:
            pd += 1
        k = pd
        while k < n and key[k] <= ki + 65537:
            best = max(best, code[k])
            k += 1
        up[i] = np.int64(best & mask)


@numba.njit(nogil=True, cache=True)
def _boundaries(key, intensity, basin, fill, sad, ba, bb):
    """Neighbouring pixel pairs (right, and the three of the row below) in different
    basins; with `fill`, their saddle (min of the two values) and basins go to sad,
    ba, bb. Returns how many."""
    n = key.shape[0]
    m = 0
    pd = 0
    for i in range(n):
        ki = key[i]
        bi = basin[i]
        j = i + 1
        if j < n and key[j] == ki + 1 and basin[j] != bi:
            if fill:
                sad[m] = min(np.float64(intensity[i]), np.float64(intensity[j]))
                ba[m] = bi
                bb[m] = basin[j]
            m += 1
        if pd <= i:
            pd = i + 1
        lo = ki + 65535
        while pd < n and key[pd] < lo:
            pd += 1
        k = pd
        while k < n and key[k] <= ki + 65537:
            if basin[k] != bi:
                if fill:
                    sad[m] = min(np.float64(intensity[i]), np.float64(intensity[k]))
                    ba[m] = bi
                    bb[m] = basin[k]
                m += 1
            k += 1
    return m


@numba.njit(nogil=True, cache=True)
def significant(peak, saddle, prominence, prominence_sigma):
    """Whether a maximum `peak` stands significantly above a `saddle` to a higher one:
    peak - saddle >= max(prominence * peak, prominence_sigma * sqrt(peak + saddle))
    (relative, and in Poisson sigmas of the difference of the two counts)."""
    depth = peak - saddle
    noise = prominence_sigma * np.sqrt(max(peak + saddle, 0.0))
    return depth >= max(prominence * peak, noise) and depth > 0.0


@numba.njit(nogil=True, cache=True)
def split_local_max(row, col, intensity, labels, npeaks, prominence, prominence_sigma,
                    min_pixels):
    """Split blobs at their significant local maxima (a watershed on the sparse pixels).

    `labels` holds the blobs (1..npeaks, as `connected_pixels` numbers them)
    and is rewritten in place. Each pixel goes to the maximum that steepest
    ascent over its 8 neighbours reaches. Two such basins merge when their
    highest saddle (the larger of min(I_i, I_j) over neighbouring pixels i, j,
    one in each) is not significantly below the lower maximum
    (`significant`), or when the lower one has fewer than `min_pixels`
    pixels; saddles are taken from the highest down (the persistence order),
    so the result does not depend on pixel order. Only blobs with more than
    one maximum are looked at twice. Labels come out 1..m in raster order of
    each part's first pixel; returns m.
    """
    n = row.size
    if n == 0:
        return 0
    key, code = _order_codes(row, col, intensity)
    nmax = np.zeros(npeaks + 1, np.int64)
    if _maxima(key, code, labels, nmax) == npeaks:  # one maximum per blob: nothing to do
        return npeaks
    # the blobs with several maxima, on their own (8-neighbours stay within a blob)
    idx = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if nmax[labels[i]] > 1:
            idx[m] = i
            m += 1
    idx = idx[:m]
    skey = key[idx]
    sval = intensity[idx]
    scode = np.empty(m, np.uint64)
    high = ~np.uint64(0xFFFFFFFF)
    for j in range(m):  # local indices keep the order of the global ones
        scode[j] = (code[idx[j]] & high) | np.uint64(j)
    up = np.empty(m, np.int64)
    _ascent(skey, scode, up)
    basin = np.empty(m, np.int64)
    size = np.zeros(m, np.int64)
    for i in range(m):
        x = i
        while up[x] != x:
            x = up[x]
        y = i
        while up[y] != x:  # compress the path
            nxt = up[y]
            up[y] = x
            y = nxt
        basin[i] = x
        size[x] += 1
    empty_f = np.empty(0, np.float64)
    empty_i = np.empty(0, np.int64)
    nb = _boundaries(skey, sval, basin, False, empty_f, empty_i, empty_i)
    saddle = np.empty(nb, np.float64)
    ba = np.empty(nb, np.int64)
    bb = np.empty(nb, np.int64)
    _boundaries(skey, sval, basin, True, saddle, ba, bb)
    order = np.argsort(ba, kind="mergesort")  # saddle descending, then basins
    order = order[np.argsort(bb[order], kind="mergesort")]
    order = order[np.argsort(-saddle[order], kind="mergesort")]
    parent = up  # reused: each basin's maximum is its own root (up[x] == x)
    for q in range(nb):
        e = order[q]
        ra = find_root(parent, ba[e])
        rb = find_root(parent, bb[e])
        if ra == rb:
            continue
        hi = ra
        lo = rb
        if _higher(sval, rb, ra):
            hi = rb
            lo = ra
        if not significant(np.float64(sval[lo]), saddle[e], prominence,
                           prominence_sigma) or size[lo] < min_pixels:
            parent[lo] = hi  # the root of a part is its highest pixel
            size[hi] += size[lo]
    # renumber in raster order of first pixel: blobs kept whole by their label,
    # split ones by their part's root
    part = np.full(n, -1, np.int64)
    for j in range(m):
        part[idx[j]] = npeaks + 1 + find_root(parent, basin[j])
    new = np.zeros(npeaks + 1 + m, np.int32)
    count = 0
    for i in range(n):
        k = part[i] if part[i] >= 0 else labels[i]
        if new[k] == 0:
            count += 1
            new[k] = count
        labels[i] = new[k]
    return count
