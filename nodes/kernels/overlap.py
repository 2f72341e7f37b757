"""Shared pixels between two labelled sparse frames (merge-join of raster keys)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def labelled_keys(row, col, label, ncols, npeaks):
    """Raster keys (row * ncols + col, int64) and labels of the labelled pixels.

    Also the pixel count per label (index label - 1) and a status: 0 ok,
    1 pixels not strictly raster-sorted, 2 a label above `npeaks`.
    """
    n = row.shape[0]
    keys = np.empty(n, np.int64)
    labels = np.empty(n, np.int32)
    npx = np.zeros(npeaks, np.int64)
    m = 0
    last = np.int64(-1)
    status = 0
    for k in range(n):
        key = np.int64(row[k]) * ncols + np.int64(col[k])
        if key <= last:
            status = 1
        last = key
        lab = label[k]
        if lab <= 0:
            continue
        if lab > npeaks:
            status = 2
            continue
        keys[m] = key
        labels[m] = lab
        npx[lab - 1] += 1
        m += 1
    return keys[:m].copy(), labels[:m].copy(), npx, status


@numba.njit(nogil=True, cache=True)
def overlap_counts(key_a, label_a, nlabel_a, key_b, label_b):
    """Count shared pixels per (label_a, label_b) pair of two raster-sorted frames.

    `key_*` are strictly increasing raster keys, `label_*` their labels
    (1..nlabel_a for frame a; pixels labelled <= 0 are skipped). One pass over
    both frames, O(na + nb); the pairs met are kept in a short chain per
    label_a (a blob overlaps few others). Returns (label_a int32, label_b
    int32, npixels int32) sorted by (a, b).
    """
    na = key_a.shape[0]
    nb = key_b.shape[0]
    nmax = min(na, nb)
    head = np.full(nlabel_a + 1, -1, np.int64)
    pair_b = np.empty(nmax, np.int32)
    pair_n = np.empty(nmax, np.int32)
    chain = np.empty(nmax, np.int64)
    npairs = 0
    cur = -1
    cur_a = -1
    cur_b = -1
    i = 0
    j = 0
    while i < na and j < nb:
        ka = key_a[i]
        kb = key_b[j]
        if ka < kb:
            i += 1
            continue
        if kb < ka:
            j += 1
            continue
        la = label_a[i]
        lb = label_b[j]
        i += 1
        j += 1
        if la <= 0 or lb <= 0:
            continue
        if la != cur_a or lb != cur_b:  # not the pair of the previous shared pixel
            prev = -1
            cur = head[la]
            while cur >= 0 and pair_b[cur] != lb:
                prev = cur
                cur = chain[cur]
            if cur >= 0 and prev >= 0:  # move to front: a big blob meets its partners in runs
                chain[prev] = chain[cur]
                chain[cur] = head[la]
                head[la] = cur
            elif cur < 0:
                cur = npairs
                npairs += 1
                pair_b[cur] = lb
                pair_n[cur] = 0
                chain[cur] = head[la]
                head[la] = cur
            cur_a = la
            cur_b = lb
        pair_n[cur] += 1
    out_a = np.empty(npairs, np.int32)
    out_b = np.empty(npairs, np.int32)
    out_n = np.empty(npairs, np.int32)
    m = 0
    for la in range(1, nlabel_a + 1):
        start = m
        p = head[la]
        while p >= 0:  # insertion sort of this label's short chain by label_b
            k = m
            while k > start and out_b[k - 1] > pair_b[p]:
                out_a[k] = la
                out_b[k] = out_b[k - 1]
                out_n[k] = out_n[k - 1]
                k -= 1
            out_a[k] = la
            out_b[k] = pair_b[p]
            out_n[k] = pair_n[p]
            m += 1
            p = chain[p]
    return out_a, out_b, out_n
