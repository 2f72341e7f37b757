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
def _find(parent, i):
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
def connected_pixels(row, col, labels):
    """Write labels 1..npeaks (raster order of first pixel) into `labels`; return npeaks."""
    n = row.size
    first = np.empty(n + 1, np.int64)
    run_row = np.empty(n, np.int64)
    run_c0 = np.empty(n, np.int64)
    run_c1 = np.empty(n, np.int64)
    nruns = _runs(row, col, first, run_row, run_c0, run_c1)
    first[nruns] = n
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
            other = _find(parent, k)
            if other < root:
                parent[root] = other
                root = other
            elif root < other:
                parent[other] = root
            k += 1
    npeaks = 0
    for q in range(nruns):
        root = _find(parent, q)
        if root == q:
            npeaks += 1
            label = npeaks
        else:
            label = labels[first[root]]
        for i in range(first[q], first[q + 1]):
            labels[i] = label
    return npeaks


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
