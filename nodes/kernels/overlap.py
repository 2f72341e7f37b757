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


@numba.njit(nogil=True, cache=True)
def pairs_within(s_a, f_a, s_b, f_b, distance):
    """Index pairs (a, b) of points whose distance is <= `distance`, sorted by (a, b).

    The b points are sorted by s once; each a scans the window s_a +- distance
    with a binary search. Points with a non-finite coordinate never pair.
    Returns (index_a int64, index_b int64), 0-based.
    """
    na = s_a.shape[0]
    nb = s_b.shape[0]
    order = np.argsort(s_b)  # NaN last
    sorted_s = s_b[order]
    d2 = distance * distance
    cap = max(16, na + nb)
    out_a = np.empty(cap, np.int64)
    out_b = np.empty(cap, np.int64)
    found = np.empty(nb, np.int64)
    m = 0
    for i in range(na):
        s = s_a[i]
        f = f_a[i]
        if not (np.isfinite(s) and np.isfinite(f)):
            continue
        k = 0
        j = np.searchsorted(sorted_s, s - distance)
        while j < nb and sorted_s[j] <= s + distance:
            o = order[j]
            ds = s - s_b[o]
            df = f - f_b[o]
            if ds * ds + df * df <= d2:
                found[k] = o
                k += 1
            j += 1
        if k == 0:
            continue
        if m + k > cap:
            cap = max(2 * cap, m + k)
            grown_a = np.empty(cap, np.int64)
            grown_b = np.empty(cap, np.int64)
            grown_a[:m] = out_a[:m]
            grown_b[:m] = out_b[:m]
            out_a = grown_a
            out_b = grown_b
        mine = np.sort(found[:k])
        for q in range(k):
            out_a[m] = i
            out_b[m] = mine[q]
            m += 1
    return out_a[:m].copy(), out_b[:m].copy()


@numba.njit(nogil=True, cache=True)
def labelled_keys_block(row, col, label, pixel_ptr, npeaks, ncols):
    """`labelled_keys` for many frames at once (frame k is pixels pixel_ptr[k]..[k + 1]).

    Returns the keys and labels of the labelled pixels of all frames, their
    start per frame (key_ptr, n + 1), the pixels per peak of all frames
    concatenated (frame k's peaks start at cumsum(npeaks)[k - 1]) and a status
    per frame (0 ok, 1 not raster-sorted, 2 a label above its npeaks).
    """
    nframes = npeaks.shape[0]
    n = row.shape[0]
    keys = np.empty(n, np.int64)
    labels = np.empty(n, np.int32)
    key_ptr = np.zeros(nframes + 1, np.int64)
    peak_ptr = np.zeros(nframes + 1, np.int64)
    for k in range(nframes):
        peak_ptr[k + 1] = peak_ptr[k] + npeaks[k]
    npx = np.zeros(peak_ptr[nframes], np.int64)
    status = np.zeros(nframes, np.int8)
    m = 0
    for k in range(nframes):
        last = np.int64(-1)
        base = peak_ptr[k] - 1
        for i in range(pixel_ptr[k], pixel_ptr[k + 1]):
            key = np.int64(row[i]) * ncols + np.int64(col[i])
            if key <= last:
                status[k] = 1
            last = key
            lab = label[i]
            if lab <= 0:
                continue
            if lab > npeaks[k]:
                status[k] = 2
                continue
            keys[m] = key
            labels[m] = lab
            npx[base + lab] += 1
            m += 1
        key_ptr[k + 1] = m
    return keys[:m].copy(), labels[:m].copy(), key_ptr, npx, status


@numba.njit(nogil=True, cache=True)
def _frame_keys(old_keys, old_labels, old_ptr, new_keys, new_labels, new_ptr, f):
    nold = old_ptr.shape[0] - 1
    if f < nold:
        s = slice(old_ptr[f], old_ptr[f + 1])
        return old_keys[s], old_labels[s]
    s = slice(new_ptr[f - nold], new_ptr[f - nold + 1])
    return new_keys[s], new_labels[s]


@numba.njit(nogil=True, cache=True)
def overlaps_block(old_keys, old_labels, old_ptr, new_keys, new_labels, new_ptr, npeaks,
                   frame_a, frame_b):
    """`overlap_counts` for each pair of frames (frame_a[k], frame_b[k]).

    Frame slots 0..nold-1 are the pixels old_ptr[f]..old_ptr[f + 1] of
    old_keys / old_labels (the frontier), the next ones those of new_keys /
    new_labels (new_ptr); frame f has npeaks[f] labels. Returns (pair index
    int64, label_a int32, label_b int32, npixels int32), in pair order and
    (a, b) order within a pair.
    """
    cap = 1024
    out_k = np.empty(cap, np.int64)
    out_a = np.empty(cap, np.int32)
    out_b = np.empty(cap, np.int32)
    out_n = np.empty(cap, np.int32)
    m = 0
    for k in range(frame_a.shape[0]):
        fa = frame_a[k]
        ka, lab_a = _frame_keys(old_keys, old_labels, old_ptr, new_keys, new_labels, new_ptr,
                                fa)
        kb, lab_b = _frame_keys(old_keys, old_labels, old_ptr, new_keys, new_labels, new_ptr,
                                frame_b[k])
        la, lb, n = overlap_counts(ka, lab_a, npeaks[fa], kb, lab_b)
        c = la.shape[0]
        if m + c > cap:
            cap = max(2 * cap, m + c)
            out_k = _grow(out_k, m, cap)
            out_a = _grow(out_a, m, cap)
            out_b = _grow(out_b, m, cap)
            out_n = _grow(out_n, m, cap)
        for q in range(c):
            out_k[m] = k
            out_a[m] = la[q]
            out_b[m] = lb[q]
            out_n[m] = n[q]
            m += 1
    return out_k[:m].copy(), out_a[:m].copy(), out_b[:m].copy(), out_n[:m].copy()


@numba.njit(nogil=True, cache=True)
def pairs_within_block(s, f, peak_ptr, frame_a, frame_b, distance):
    """`pairs_within` for each pair of frames; peaks of frame k are peak_ptr[k]..[k + 1].

    Returns (pair index, label_a, label_b) with 1-based labels, in pair order.
    """
    cap = 1024
    out_k = np.empty(cap, np.int64)
    out_a = np.empty(cap, np.int32)
    out_b = np.empty(cap, np.int32)
    m = 0
    for k in range(frame_a.shape[0]):
        pa = slice(peak_ptr[frame_a[k]], peak_ptr[frame_a[k] + 1])
        pb = slice(peak_ptr[frame_b[k]], peak_ptr[frame_b[k] + 1])
        ia, ib = pairs_within(s[pa], f[pa], s[pb], f[pb], distance)
        c = ia.shape[0]
        if m + c > cap:
            cap = max(2 * cap, m + c)
            out_k = _grow(out_k, m, cap)
            out_a = _grow(out_a, m, cap)
            out_b = _grow(out_b, m, cap)
        for q in range(c):
            out_k[m] = k
            out_a[m] = ia[q] + 1
            out_b[m] = ib[q] + 1
            m += 1
    return out_k[:m].copy(), out_a[:m].copy(), out_b[:m].copy()


@numba.njit(nogil=True, cache=True)
def _grow(a, n, cap):
    out = np.empty(cap, a.dtype)
    out[:n] = a[:n]
    return out
