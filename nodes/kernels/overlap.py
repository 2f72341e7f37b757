"""Shared pixels between labelled sparse frames: a merge-join of their runs.

`overlap_runs` merges two frames' runs of labelled pixels (`kernels.runs`),
row by row, with the saddle between the blobs when the linker splits
(`overlaps_block`: for many pairs of frames at once, the linker's block path);
`overlap_counts` merges their pixels, the pixel-level reference. The pairs
within a distance (`pairs_within`) serve the centroid criterion. The linker's
point-by-point kernel is `kernels.linking.link_frames`.
"""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.runs import (
    RUN_C0,
    RUN_C1,
    RUN_COLUMNS,
    RUN_LABEL,
    RUN_PX,
    RUN_ROW,
    frame_runs,
    runs_npx,
)

__all__ = ["RUN_C0", "RUN_C1", "RUN_COLUMNS", "RUN_LABEL", "RUN_PX", "RUN_ROW", "frame_runs",
           "overlap_counts", "overlap_pairs", "overlap_runs", "overlaps_block", "pairs_within",
           "pairs_within_block", "runs_npx"]


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
def overlap_runs(runs_a, nlabel_a, runs_b, int_a, int_b, peak_key_a, peak_h_a, peak_key_b,
                 peak_h_b, ncols, with_saddle):
    """Shared pixels per (label_a, label_b) pair of two frames' runs (`frame_runs`).

    One pass over both run lists (interval intersection row by row); the
    pairs met are kept in a short chain per label_a (a blob overlaps few
    others). With `with_saddle`, per pair also the saddle (float64): the
    highest pass between the two blobs through one pixel on both frames, the
    largest min(int_a, int_b) over their shared pixels (within a blob cut at its
    local maxima every pixel ascends to the maximum, so this is a pass between
    the maxima); the lower maximum itself if the two peak pixels (`peak_key_*`,
    raster keys with `ncols` columns, and heights `peak_h_*`, per label - 1)
    are within a pixel of each other: one maximum seen twice (on another pass
    or turn), whatever the noise. Without, saddles are 0. Returns (label_a
    int32, label_b int32, npixels int32, saddle float64) sorted by (a, b).
    """
    na = runs_a.shape[0]
    nb = runs_b.shape[0]
    cap = na + nb
    head = np.full(nlabel_a + 1, -1, np.int64)
    pair_b = np.empty(cap, np.int32)
    pair_n = np.empty(cap, np.int32)
    pair_s = np.zeros(cap, np.float64)
    chain = np.empty(cap, np.int64)
    npairs = 0
    cur = -1
    cur_a = -1
    cur_b = -1
    i = 0
    j = 0
    while i < na and j < nb:
        ra = runs_a[i, RUN_ROW]
        rb = runs_b[j, RUN_ROW]
        if ra < rb:
            i += 1
            continue
        if rb < ra:
            j += 1
            continue
        a0 = runs_a[i, RUN_C0]
        a1 = runs_a[i, RUN_C1]
        b0 = runs_b[j, RUN_C0]
        b1 = runs_b[j, RUN_C1]
        lo = max(a0, b0)
        hi = min(a1, b1)
        if lo <= hi:
            la = runs_a[i, RUN_LABEL]
            lb = runs_b[j, RUN_LABEL]
            new = False
            if la != cur_a or lb != cur_b:  # not the pair of the previous shared run
                prev = -1
                cur = head[la]
                while cur >= 0 and pair_b[cur] != lb:
                    prev = cur
                    cur = chain[cur]
                if cur >= 0 and prev >= 0:  # move to front: a big blob meets its partners
                    chain[prev] = chain[cur]  # in runs
                    chain[cur] = head[la]
                    head[la] = cur
                elif cur < 0:
                    cur = npairs
                    npairs += 1
                    pair_b[cur] = lb
                    pair_n[cur] = 0
                    chain[cur] = head[la]
                    head[la] = cur
                    new = True
                cur_a = la
                cur_b = lb
            pair_n[cur] += hi - lo + 1
            if with_saddle:
                pa = runs_a[i, RUN_PX] + lo - a0
                pb = runs_b[j, RUN_PX] + lo - b0
                for x in range(hi - lo + 1):  # the shared pixels in raster order
                    low = min(np.float64(int_a[pa + x]), np.float64(int_b[pb + x]))
                    if new and x == 0:
                        pair_s[cur] = low
                    elif low > pair_s[cur]:
                        pair_s[cur] = low
        if a1 < b1:
            i += 1
        elif b1 < a1:
            j += 1
        else:
            i += 1
            j += 1
    if with_saddle and npairs:
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
def overlap_pairs(runs_a, nlabel_a, runs_b, int_a, int_b, peak_key_a, peak_h_a, peak_key_b,
                  peak_h_b, ncols, with_saddle, gid0_a, gid0_b, npx_a, npx_b):
    """`overlap_runs` as the linker stores it: per pair the global peak ids (gid0_* +
    label - 1, int64), npixels (int32), score (float32: npixels / the smaller
    blob's npx_*), saddle, and the peaks' indices in their frames (int64)."""
    la, lb, n, saddle = overlap_runs(runs_a, nlabel_a, runs_b, int_a, int_b, peak_key_a,
                                     peak_h_a, peak_key_b, peak_h_b, ncols, with_saddle)
    m = la.shape[0]
    ia = np.empty(m, np.int64)
    ib = np.empty(m, np.int64)
    peak_a = np.empty(m, np.int64)
    peak_b = np.empty(m, np.int64)
    score = np.empty(m, np.float32)
    for q in range(m):
        ia[q] = la[q] - 1
        ib[q] = lb[q] - 1
        peak_a[q] = gid0_a + ia[q]
        peak_b[q] = gid0_b + ib[q]
        score[q] = np.float32(n[q] / min(npx_a[ia[q]], npx_b[ib[q]]))
    return peak_a, peak_b, n, score, saddle, ia, ib


@numba.njit(nogil=True, cache=True)
def overlaps_block(runs, run_ptr, intensity, int_ptr, npeaks, peak_ptr, peak_key, peak_h,
                   ncols, with_saddle, frame_a, frame_b):
    """`overlap_runs` for each pair of frames (frame_a[k], frame_b[k]).

    Frame f is the runs run_ptr[f]..[f + 1] (its RUN_PX index intensity from
    int_ptr[f]), with npeaks[f] labels whose peak pixels and heights are
    peak_key / peak_h[peak_ptr[f]..[f + 1]] (with saddles only). Returns (pair
    index int64, label_a int32, label_b int32, npixels int32, saddle float64),
    in pair order and (a, b) order within a pair.
    """
    cap = 1024
    out_k = np.empty(cap, np.int64)
    out_a = np.empty(cap, np.int32)
    out_b = np.empty(cap, np.int32)
    out_n = np.empty(cap, np.int32)
    out_s = np.empty(cap, np.float64)
    m = 0
    for k in range(frame_a.shape[0]):
        fa = frame_a[k]
        fb = frame_b[k]
        ra = runs[run_ptr[fa]:run_ptr[fa + 1]]
        rb = runs[run_ptr[fb]:run_ptr[fb + 1]]
        if with_saddle:
            pa = slice(peak_ptr[fa], peak_ptr[fa + 1])
            pb = slice(peak_ptr[fb], peak_ptr[fb + 1])
            la, lb, n, sad = overlap_runs(
                ra, npeaks[fa], rb, intensity[int_ptr[fa]:int_ptr[fa + 1]],
                intensity[int_ptr[fb]:int_ptr[fb + 1]], peak_key[pa], peak_h[pa],
                peak_key[pb], peak_h[pb], ncols, True)
        else:
            la, lb, n, sad = overlap_runs(ra, npeaks[fa], rb, intensity, intensity, peak_key,
                                          peak_h, peak_key, peak_h, ncols, False)
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
