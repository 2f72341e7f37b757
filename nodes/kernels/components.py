"""Connected components of raster-sorted sparse pixels (8-connectivity), O(n).

In the style of ImageD11's sparse_connectedpixels, without a dense image:
the pixels are first cut into runs (consecutive columns on one row), then
union-find joins each run to the runs of the previous row it touches (column
ranges within one pixel, diagonals included), found with a pointer that only
moves forward. The root of a set is always its first run in raster order, so
labels come out numbered in raster order of each blob's first pixel.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def find_root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(nogil=True, cache=True)
def _runs(row, col, first, run_row, run_c0, run_c1):
    """Cut the pixels into runs; fill the run arrays, return the number of runs."""
    nruns = 0
    for i in range(row.size):
        r = np.int64(row[i])
        c = np.int64(col[i])
        if nruns > 0 and run_row[nruns - 1] == r and run_c1[nruns - 1] == c - 1:
            run_c1[nruns - 1] = c
        else:
            first[nruns] = i
            run_row[nruns] = r
            run_c0[nruns] = c
            run_c1[nruns] = c
            nruns += 1
    return nruns


@numba.njit(nogil=True, cache=True)
def _join_runs(run_row, run_c0, run_c1, nruns):
    """Union-find over the runs: each run joined to the runs of the previous row that
    it touches (column ranges within one pixel), found with a pointer that only moves
    forward. A set's root is its first run; returns the parents."""
    parent = np.empty(nruns, np.int64)
    j = 0  # first run of the previous row that can still touch the current one
    for q in range(nruns):
        parent[q] = q
        root = q
        r = run_row[q]
        lo = run_c0[q] - 1
        hi = run_c1[q] + 1
        while j < q and (run_row[j] < r - 1 or (run_row[j] == r - 1 and run_c1[j] < lo)):
            j += 1
        k = j
        while k < q and run_row[k] == r - 1 and run_c0[k] <= hi:
            other = find_root(parent, k)
            if other < root:
                parent[root] = other
                root = other
            elif root < other:
                parent[other] = root
            k += 1
    return parent


@numba.njit(nogil=True, cache=True)
def connected_pixels(row, col, labels):
    """Write labels 1..npeaks (raster order of first pixel) into `labels`; return npeaks."""
    n = row.size
    first = np.empty(n + 1, np.int64)
    run_row = np.empty(n, np.int64)
    run_c0 = np.empty(n, np.int64)
    run_c1 = np.empty(n, np.int64)
    nruns = _runs(row, col, first, run_row, run_c0, run_c1)
    first[nruns] = n
    parent = _join_runs(run_row, run_c0, run_c1, nruns)
    npeaks = 0
    for q in range(nruns):
        root = find_root(parent, q)
        if root == q:
            npeaks += 1
            label = npeaks
        else:
            label = labels[first[root]]
        for i in range(first[q], first[q + 1]):
            labels[i] = label
    return npeaks


@numba.njit(nogil=True, cache=True)
def label_kept(row, col, intensity, min_pixels):
    """`connected_pixels`, `remove_small` and the compaction in one call.

    Returns (npeaks, kept, row, col, intensity, labels, runs): the labels
    (int32, 1..npeaks in raster order of each kept blob's first pixel) of
    the `kept` pixels of blobs with at least `min_pixels` pixels, and these
    pixels (new arrays), or, if every pixel is kept, the labels of all and
    empty arrays; and the runs of the kept pixels as the linker keeps them
    (`kernels.runs`: row, first and last column, label, first pixel; int32).
    Works on runs (blob sizes are sums of run lengths); the passes over the
    pixels have no branches and no chain longer than a count.
    """
    n = row.size
    start = np.empty(n, np.bool_)  # the first pixel of a run (next columns on a row)
    for i in range(1, n):
        start[i] = (row[i] != row[i - 1]) | (np.int32(col[i]) != np.int32(col[i - 1]) + 1)
    nruns = 0
    if n:
        start[0] = True
    for i in range(n):
        nruns += start[i]
    first = np.empty(nruns + 1, np.int64)
    q = 0
    for i in range(n):  # first[q] is overwritten until the next run starts
        first[q] = i
        q += start[i]
    first[nruns] = n
    run_row = np.empty(nruns, np.int32)
    run_c0 = np.empty(nruns, np.int32)
    run_c1 = np.empty(nruns, np.int32)
    for q in range(nruns):
        run_row[q] = row[first[q]]
        run_c0[q] = col[first[q]]
        run_c1[q] = col[first[q + 1] - 1]
    parent = _join_runs(run_row, run_c0, run_c1, nruns)
    size = np.zeros(nruns, np.int64)
    for q in range(nruns):  # roots are first runs: parents are found before their runs
        root = find_root(parent, q)
        parent[q] = root
        size[root] += first[q + 1] - first[q]
    run_label = np.zeros(nruns, np.int32)
    npeaks = 0
    kept = 0
    for q in range(nruns):
        if parent[q] == q and size[q] >= min_pixels:
            npeaks += 1
            run_label[q] = npeaks
            kept += size[q]
    for q in range(nruns):
        run_label[q] = run_label[parent[q]]
    runs = np.empty((nruns, 5), np.int32)
    m = 0
    px = 0
    for q in range(nruns):
        if run_label[q]:
            runs[m, 0] = run_row[q]
            runs[m, 1] = run_c0[q]
            runs[m, 2] = run_c1[q]
            runs[m, 3] = run_label[q]
            runs[m, 4] = px
            px += first[q + 1] - first[q]
            m += 1
    runs = runs[:m]
    q = -1
    if kept == n:
        labels = np.empty(n, np.int32)
        for i in range(n):
            q += start[i]
            labels[i] = run_label[q]
        return (npeaks, kept, row[:0].copy(), col[:0].copy(), intensity[:0].copy(), labels,
                runs)
    out_row = np.empty(kept + 1, row.dtype)  # one more: every pixel is written, the
    out_col = np.empty(kept + 1, col.dtype)  # dropped ones overwritten by the next
    out_int = np.empty(kept + 1, intensity.dtype)
    out_lab = np.empty(kept + 1, np.int32)
    m = 0
    for i in range(n):
        q += start[i]
        lab = run_label[q]
        out_row[m] = row[i]
        out_col[m] = col[i]
        out_int[m] = intensity[i]
        out_lab[m] = lab
        m += lab != 0
    return (npeaks, kept, out_row[:kept], out_col[:kept], out_int[:kept], out_lab[:kept],
            runs)


@numba.njit(nogil=True, cache=True)
def remove_small(labels, npeaks, min_pixels, keep):
    """Drop blobs under `min_pixels` pixels: relabel in place (0 = dropped), set `keep`.

    Kept blobs are renumbered 1..m in their previous order; returns m.
    """
    counts = np.zeros(npeaks + 1, np.int64)
    for i in range(labels.size):
        counts[labels[i]] += 1
    new = np.zeros(npeaks + 1, np.int32)
    m = 0
    for k in range(1, npeaks + 1):
        if counts[k] >= min_pixels:
            m += 1
            new[k] = m
    for i in range(labels.size):
        labels[i] = new[labels[i]]
        keep[i] = labels[i] > 0
    return m
