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
def overlap_saddles(key_a, label_a, nlabel_a, key_b, label_b, int_a, int_b,
                    peak_key_a, peak_h_a, peak_key_b, peak_h_b, ncols):
    """`overlap_counts`, and per overlapping pair the saddle (float64): the highest
    pass between the two blobs, through one pixel on both frames: the largest
    min(int_a, int_b) over their shared pixels (within a blob cut at its local
    maxima every pixel ascends to the maximum, so this is a pass between the
    maxima); the lower maximum itself if the two peak pixels (`peak_key_*`,
    raster keys with `ncols` columns, and heights `peak_h_*`, per label - 1)
    are within a pixel of each other: one maximum seen twice (on another pass
    or turn), whatever the noise. (`overlap_counts` without the saddles, which
    costs half as much.)
    """
    na = key_a.shape[0]
    nb = key_b.shape[0]
    nmax = min(na, nb)
    head = np.full(nlabel_a + 1, -1, np.int64)
    pair_b = np.empty(nmax, np.int32)
    pair_n = np.empty(nmax, np.int32)
    pair_s = np.zeros(nmax, np.float64)
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
        low = min(np.float64(int_a[i - 1]), np.float64(int_b[j - 1]))
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
                pair_s[cur] = low
                chain[cur] = head[la]
                head[la] = cur
            cur_a = la
            cur_b = lb
        pair_n[cur] += 1
        if low > pair_s[cur]:
            pair_s[cur] = low
    if npairs:
        for la in range(1, nlabel_a + 1):  # maxima next to each other: one maximum
            ka = peak_key_a[la - 1]
            p = head[la]
            while p >= 0:
                kb = peak_key_b[pair_b[p] - 1]
                if (abs(ka // ncols - kb // ncols) <= 1 and abs(ka % ncols - kb % ncols) <= 1):
                    pair_s[p] = max(pair_s[p], min(peak_h_a[la - 1], peak_h_b[pair_b[p] - 1]))
                p = chain[p]
    out_a = np.empty(npairs, np.int32)
    out_b = np.empty(npairs, np.int32)
    out_n = np.empty(npairs, np.int32)
    out_s = np.empty(npairs, np.float64)
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
                out_s[k] = out_s[k - 1]
                k -= 1
            out_a[k] = la
            out_b[k] = pair_b[p]
            out_n[k] = pair_n[p]
            out_s[k] = pair_s[p]
            m += 1
            p = chain[p]
    return out_a, out_b, out_n, out_s


@numba.njit(nogil=True, cache=True)
def peak_pixels(keys, labels, values, npeaks):
    """Per label (1..npeaks): the raster key of its highest pixel (the first in
    raster order among equals) and its value (float64)."""
    peak_key = np.full(npeaks, -1, np.int64)
    peak_h = np.full(npeaks, -np.inf)
    for i in range(keys.shape[0]):
        k = labels[i] - 1
        if k >= 0 and np.float64(values[i]) > peak_h[k]:
            peak_h[k] = values[i]
            peak_key[k] = keys[i]
    return peak_key, peak_h


@numba.njit(nogil=True, cache=True)
def peak_pixels_block(keys, labels, values, key_ptr, npeaks):
    """`peak_pixels` of every frame (frame k is keys key_ptr[k]..[k + 1]), concatenated."""
    total = 0
    for k in range(npeaks.shape[0]):
        total += npeaks[k]
    peak_key = np.empty(total, np.int64)
    peak_h = np.empty(total, np.float64)
    base = 0
    for k in range(npeaks.shape[0]):
        s = slice(key_ptr[k], key_ptr[k + 1])
        pk, ph = peak_pixels(keys[s], labels[s], values[s], npeaks[k])
        peak_key[base:base + npeaks[k]] = pk
        peak_h[base:base + npeaks[k]] = ph
        base += npeaks[k]
    return peak_key, peak_h


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
def labelled_keys_block(row, col, label, intensity, pixel_ptr, npeaks, ncols):
    """`labelled_keys` for many frames at once (frame k is pixels pixel_ptr[k]..[k + 1]).

    Returns the keys and labels of the labelled pixels of all frames (and
    their intensities, if `intensity` is not empty; else an empty array),
    their start per frame (key_ptr, n + 1), the pixels per peak of all frames
    concatenated (frame k's peaks start at cumsum(npeaks)[k - 1]) and a status
    per frame (0 ok, 1 not raster-sorted, 2 a label above its npeaks).
    """
    nframes = npeaks.shape[0]
    n = row.shape[0]
    with_int = intensity.shape[0] > 0
    keys = np.empty(n, np.int64)
    labels = np.empty(n, np.int32)
    kept = np.empty(n if with_int else 0, np.float32)
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
            if with_int:
                kept[m] = intensity[i]
            npx[base + lab] += 1
            m += 1
        key_ptr[k + 1] = m
    return (keys[:m].copy(), labels[:m].copy(), kept[:m].copy() if with_int else kept, key_ptr,
            npx, status)


@numba.njit(nogil=True, cache=True)
def _frame_keys(old_keys, old_labels, old_int, old_ptr, new_keys, new_labels, new_int,
                new_ptr, f):
    """Keys, labels and intensities (empty if not given) of frame slot f."""
    nold = old_ptr.shape[0] - 1
    if f < nold:
        s = slice(old_ptr[f], old_ptr[f + 1])
        return old_keys[s], old_labels[s], old_int[s] if old_int.shape[0] else old_int[0:0]
    s = slice(new_ptr[f - nold], new_ptr[f - nold + 1])
    return new_keys[s], new_labels[s], new_int[s] if new_int.shape[0] else new_int[0:0]


@numba.njit(nogil=True, cache=True)
def overlaps_block(old_keys, old_labels, old_int, old_ptr, new_keys, new_labels, new_int,
                   new_ptr, npeaks, peak_ptr, peak_key, peak_h, ncols, frame_a, frame_b):
    """`overlap_saddles` for each pair of frames (frame_a[k], frame_b[k]).

    Frame slots 0..nold-1 are the pixels old_ptr[f]..old_ptr[f + 1] of
    old_keys / old_labels / old_int (the frontier), the next ones those of
    new_keys / new_labels / new_int (new_ptr); frame f has npeaks[f] labels.
    The intensity arrays may both be empty (no saddles: all 0); else frame f's
    peaks' peak pixels and heights are peak_key / peak_h[peak_ptr[f]..[f + 1]]
    (`peak_pixels`). Returns (pair index int64, label_a int32, label_b int32,
    npixels int32, saddle float64), in pair order and (a, b) order within a pair.
    """
    with_saddle = old_int.shape[0] > 0 or new_int.shape[0] > 0
    cap = 1024
    out_k = np.empty(cap, np.int64)
    out_a = np.empty(cap, np.int32)
    out_b = np.empty(cap, np.int32)
    out_n = np.empty(cap, np.int32)
    out_s = np.empty(cap, np.float64)
    m = 0
    for k in range(frame_a.shape[0]):
        fa = frame_a[k]
        ka, lab_a, int_a = _frame_keys(old_keys, old_labels, old_int, old_ptr, new_keys,
                                       new_labels, new_int, new_ptr, fa)
        kb, lab_b, int_b = _frame_keys(old_keys, old_labels, old_int, old_ptr, new_keys,
                                       new_labels, new_int, new_ptr, frame_b[k])
        fb = frame_b[k]
        if with_saddle:
            pa = slice(peak_ptr[fa], peak_ptr[fa + 1])
            pb = slice(peak_ptr[fb], peak_ptr[fb + 1])
            la, lb, n, sad = overlap_saddles(ka, lab_a, npeaks[fa], kb, lab_b, int_a, int_b,
                                             peak_key[pa], peak_h[pa], peak_key[pb],
                                             peak_h[pb], ncols)
        else:
            la, lb, n = overlap_counts(ka, lab_a, npeaks[fa], kb, lab_b)
            sad = np.zeros(la.shape[0], np.float64)
        c = la.shape[0]
        if m + c > cap:
            cap = max(2 * cap, m + c)
            out_k = _grow(out_k, m, cap)
            out_a = _grow(out_a, m, cap)
            out_b = _grow(out_b, m, cap)
            out_n = _grow(out_n, m, cap)
            out_s = _grow(out_s, m, cap)
        for q in range(c):
            out_k[m] = k
            out_a[m] = la[q]
            out_b[m] = lb[q]
            out_n[m] = n[q]
            out_s[m] = sad[q]
            m += 1
    return (out_k[:m].copy(), out_a[:m].copy(), out_b[:m].copy(), out_n[:m].copy(),
            out_s[:m].copy())


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
