"""Shared pixels between labelled sparse frames: a merge-join of their runs.

The linker keeps a frame as runs of labelled pixels (`frame_runs`): pixels
next to each other on one row with one label, a row of `runs` (int32) with
the columns RUN_ROW, RUN_C0, RUN_C1 (first and last column), RUN_LABEL and
RUN_PX (the run's first pixel among the frame's labelled pixels, where its
intensities are). Spots are runs of several pixels, so the merge of two
frames' runs (`overlap_runs`) does a tenth of the steps of a merge of their
pixels (`overlap_counts`, the pixel-level reference) and the frontier holds a
fifth of the bytes.
"""

from __future__ import annotations

import numba
import numpy as np

from .unionfind import union_pairs


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


RUN_ROW, RUN_C0, RUN_C1, RUN_LABEL, RUN_PX = range(5)
RUN_COLUMNS = 5


@numba.njit(nogil=True, cache=True)
def frame_runs(row, col, label, intensity, pixel_ptr, npeaks, ncols):
    """The runs of the labelled pixels of frames k = 0.. (pixels pixel_ptr[k]..[k + 1],
    labels 1..npeaks[k]; pixels labelled <= 0 are skipped).

    Returns runs (nruns, RUN_COLUMNS) int32, frame after frame (frame k's are
    run_ptr[k]..[k + 1]); the pixels per peak of all frames (int64, frame k's
    peaks start at sum(npeaks[:k])); a status per frame (0 ok, 1 pixels not
    strictly raster-sorted, 2 a label above its npeaks). With intensities (not
    empty) also the labelled pixels' intensities (float32, frame after frame,
    frame k's start at int_ptr[k]) and per peak the raster key (row * ncols +
    col) and value (float64) of its highest pixel, the first in raster order
    among equals; else these three are empty. The pixel passes but the last
    have no branches (the compiler vectorises them).
    """
    nframes = npeaks.shape[0]
    n = row.shape[0]
    with_int = intensity.shape[0] > 0
    start = np.empty(n, np.bool_)  # a pixel that does not continue the run before it
    for i in range(1, n):
        start[i] = ((row[i] != row[i - 1]) | (np.int32(col[i]) != np.int32(col[i - 1]) + 1)
                    | (label[i] != label[i - 1]) | (label[i] <= 0))
    for k in range(nframes):
        if pixel_ptr[k + 1] > pixel_ptr[k]:
            start[pixel_ptr[k]] = True
    nruns = 0
    for i in range(n):
        nruns += start[i] & (label[i] > 0)
    runs = np.empty((nruns, RUN_COLUMNS), np.int32)
    run_ptr = np.zeros(nframes + 1, np.int64)
    int_ptr = np.zeros(nframes + 1, np.int64)
    peak_ptr = np.zeros(nframes + 1, np.int64)
    for k in range(nframes):
        peak_ptr[k + 1] = peak_ptr[k] + npeaks[k]
    npx = np.zeros(peak_ptr[nframes], np.int64)
    status = np.zeros(nframes, np.int8)
    kept = np.empty(n if with_int else 0, np.float32)
    npk = peak_ptr[nframes] if with_int else 0
    peak_key = np.full(npk, -1, np.int64)
    peak_h = np.full(npk, -np.inf)
    m = 0
    q = 0
    for k in range(nframes):
        s = pixel_ptr[k]
        e = pixel_ptr[k + 1]
        ordered = _unordered(row[s:e], col[s:e], ncols) == 0
        top = _top(label[s:e])
        if not ordered:
            status[k] = 1
        if top > npeaks[k]:
            status[k] = 2 if ordered else 1
        if status[k]:  # the caller raises
            run_ptr[k + 1] = m
            int_ptr[k + 1] = q
            continue
        base = peak_ptr[k] - 1
        q0 = q
        m0 = m
        cur = -1  # the labelled run open at pixel i, and its first pixel
        first = s
        for i in range(s, e):
            if start[i]:
                if cur >= 0:
                    length = i - first
                    runs[cur, RUN_C1] = runs[cur, RUN_C0] + length - 1
                    q += length
                    cur = -1
                if label[i] > 0:
                    runs[m, RUN_ROW] = row[i]
                    runs[m, RUN_C0] = col[i]
                    runs[m, RUN_LABEL] = label[i]
                    runs[m, RUN_PX] = q - q0
                    cur = m
                    first = i
                    m += 1
        if cur >= 0:
            runs[cur, RUN_C1] = runs[cur, RUN_C0] + (e - first) - 1
            q += e - first
        for r in range(m0, m):
            npx[base + runs[r, RUN_LABEL]] += runs[r, RUN_C1] - runs[r, RUN_C0] + 1
        run_ptr[k + 1] = m
        if with_int:
            q = q0
            for i in range(s, e):
                lab = label[i]
                if lab > 0:
                    v = intensity[i]
                    kept[q] = v
                    if np.float64(v) > peak_h[base + lab]:
                        peak_h[base + lab] = v
                        peak_key[base + lab] = np.int64(row[i]) * ncols + np.int64(col[i])
                    q += 1
        int_ptr[k + 1] = q if with_int else 0
    return runs[:m], run_ptr, npx, status, kept[:q], int_ptr, peak_key, peak_h


@numba.njit(nogil=True, cache=True)
def runs_npx(runs, npeaks):
    """Pixels per peak of a frame given as runs (`frame_runs`' form, from the label
    node), and a status: 0 ok, 1 runs not in raster order or overlapping, 2 a
    label outside 1..npeaks."""
    npx = np.zeros(npeaks, np.int64)
    status = 0
    for q in range(runs.shape[0]):
        lab = runs[q, RUN_LABEL]
        if lab < 1 or lab > npeaks:
            return npx, 2
        if runs[q, RUN_C1] < runs[q, RUN_C0] or q and (
                runs[q, RUN_ROW] < runs[q - 1, RUN_ROW] or runs[q, RUN_ROW]
                == runs[q - 1, RUN_ROW] and runs[q, RUN_C0] <= runs[q - 1, RUN_C1]):
            status = 1
        npx[lab - 1] += runs[q, RUN_C1] - runs[q, RUN_C0] + 1
    return npx, status


@numba.njit(nogil=True, cache=True)
def _unordered(row, col, ncols):
    """How many pixels do not come strictly after the one before in raster order."""
    bad = 0
    for i in range(1, row.shape[0]):
        bad += (np.int64(row[i]) * ncols + np.int64(col[i])
                <= np.int64(row[i - 1]) * ncols + np.int64(col[i - 1]))
    return bad


@numba.njit(nogil=True, cache=True)
def _top(label):
    top = np.int64(0)
    for i in range(label.shape[0]):
        top = max(top, np.int64(label[i]))
    return top


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
def link_frames(old_runs, old_run_ptr, old_int, old_int_ptr, old_peak_key, old_peak_h,
                old_npx, old_s, old_f, old_peak_ptr, old_offset, runs, intensity, peak_key,
                peak_h, npx, s_raw, f_raw, offset, ncols, with_saddle, fraction, distance,
                gid, n, parent, close_at, size, next_member):
    """Overlap a new frame with its neighbours' frames and union the pairs kept.

    The old_* arrays hold the neighbours' frames one after the other (in the
    neighbour order; frame j's runs are old_run_ptr[j]..[j + 1], its
    intensities old_int_ptr[j].., its peaks old_peak_ptr[j].., the global id
    of its first peak old_offset[j]); the new frame's first peak is `offset`.
    A pair of overlapping peaks is kept if it shares at least `fraction` of
    the smaller blob (when fraction >= 0) and its centroids are within
    `distance` (when distance >= 0) (`nodes.criteria`); kept pairs are unioned
    in the linker's forest (gid[:n] and its slot arrays, `union_pairs`).
    Returns the overlaps of all frames, frame after frame and (a, b) order
    within one (`overlap_pairs`: peak_a, peak_b, npixels, score), and the kept
    links (gid_a, gid_b, saddle).
    """
    total = 0
    parts = []
    for j in range(old_offset.shape[0]):
        pp = slice(old_peak_ptr[j], old_peak_ptr[j + 1])
        part = overlap_pairs(old_runs[old_run_ptr[j]:old_run_ptr[j + 1]], old_npx[pp].shape[0],
                             runs, old_int[old_int_ptr[j]:old_int_ptr[j + 1]], intensity,
                             old_peak_key[pp] if with_saddle else old_peak_key,
                             old_peak_h[pp] if with_saddle else old_peak_h, peak_key, peak_h,
                             ncols, with_saddle, old_offset[j], offset, old_npx[pp], npx)
        total += part[0].shape[0]
        parts.append(part)
    peak_a = np.empty(total, np.int64)
    peak_b = np.empty(total, np.int64)
    npixels = np.empty(total, np.int32)
    score = np.empty(total, np.float32)
    keep_a = np.empty(total, np.int64)
    keep_b = np.empty(total, np.int64)
    keep_s = np.empty(total, np.float64)
    m = 0
    kept = 0
    d2 = distance * distance
    for j in range(len(parts)):
        pa, pb, nj, sc, sad, ia, ib = parts[j]
        for q in range(pa.shape[0]):
            peak_a[m] = pa[q]
            peak_b[m] = pb[q]
            npixels[m] = nj[q]
            score[m] = sc[q]
            m += 1
            ok = True
            a = old_peak_ptr[j] + ia[q]
            if fraction >= 0.0:
                smaller = np.float64(min(old_npx[a], npx[ib[q]]))
                ok = nj[q] > 0 and np.float64(nj[q]) >= fraction * smaller
            if distance >= 0.0:
                ds = old_s[a] - s_raw[ib[q]]
                df = old_f[a] - f_raw[ib[q]]
                ok = ok and ds * ds + df * df <= d2
            if ok:
                keep_a[kept] = pa[q]
                keep_b[kept] = pb[q]
                keep_s[kept] = sad[q]
                kept += 1
    live = gid[:n]
    union_pairs(parent, close_at, size, next_member, np.searchsorted(live, keep_a[:kept]),
                np.searchsorted(live, keep_b[:kept]))
    return peak_a, peak_b, npixels, score, keep_a[:kept], keep_b[:kept], keep_s[:kept]


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
