"""Union-find over slots of 2D peaks, with member lists and closing of cliques.

A slot holds one 2D peak of an open clique. Per slot: `parent` (union-find),
`close_at` (meaningful at roots: the last point that may still link to the
clique), `size` (at roots), `next_member` (a circular list through the
clique's members, spliced on union, so closing a clique walks its members
only), `alive`, `gid` (global peak id), `point` and `acc` (additive columns).
The root of a clique is its smallest slot, so results never depend on the
order of the unions.
"""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.label import significant


@numba.njit(nogil=True, cache=True)
def _unique(x):
    """np.unique(x) by the merge sort the other kernels use (numba compiles each sort
    apart: one kind of sort is seconds less to compile)."""
    s = x[np.argsort(x, kind="mergesort")]
    keep = np.ones(s.shape[0], np.bool_)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


@numba.njit(nogil=True, cache=True)
def find_root(parent, s):
    """Root of slot `s`, compressing the path on the way."""
    r = s
    while parent[r] != r:
        r = parent[r]
    while parent[s] != r:
        nxt = parent[s]
        parent[s] = r
        s = nxt
    return r


@numba.njit(nogil=True, cache=True)
def _closing_roots(parent, close_at, size, alive, candidates, step, by_close_at):
    """The live roots among the candidates' cliques that close by `step` (unique,
    by slot or by close_at), and how many members they have in all."""
    roots = np.empty(candidates.shape[0], np.int64)
    nr = 0
    for k in range(candidates.shape[0]):
        r = find_root(parent, candidates[k])
        if alive[r] and close_at[r] <= step:
            roots[nr] = r
            nr += 1
    roots = _unique(roots[:nr])
    if by_close_at:
        roots = roots[np.argsort(close_at[roots], kind="mergesort")]
    nmembers = 0
    for c in range(roots.shape[0]):
        nmembers += size[roots[c]]
    return roots, nmembers


@numba.njit(nogil=True, cache=True)
def union_pairs(parent, close_at, size, next_member, slot_a, slot_b):
    """Join the cliques of slot_a[k] and slot_b[k] for every k."""
    for k in range(slot_a.shape[0]):
        ra = find_root(parent, slot_a[k])
        rb = find_root(parent, slot_b[k])
        if ra == rb:
            continue
        lo = min(ra, rb)
        hi = max(ra, rb)
        parent[hi] = lo
        close_at[lo] = max(close_at[lo], close_at[hi])
        size[lo] += size[hi]
        t = next_member[lo]
        next_member[lo] = next_member[hi]
        next_member[hi] = t


@numba.njit(nogil=True, cache=True)
def append_peaks(gid, point, parent, next_member, close_at, point_close, size, alive, acc,
                 height, n, gid0, points, closes, npx, sum_intensity, s_1, s_I, s_sI, s_fI,
                 s_ssI, s_ffI, s_sfI, point_value, factors, heights):
    """Fill slots n.. with the peaks gid0.. (each its own clique): on points `points`
    closing at `closes`, with heights `heights` (empty: 0) and the additive columns
    npx, sum_intensity, the seven moments, s_I * point_value, then s_I * factor per
    motor column. `points`, `closes`, `point_value` and the rows of `factors` hold
    one entry per peak, or one for all."""
    for i in range(npx.shape[0]):
        s = n + i
        gid[s] = gid0 + i
        point[s] = points[min(i, points.shape[0] - 1)]
        parent[s] = s
        next_member[s] = s
        close_at[s] = closes[min(i, closes.shape[0] - 1)]
        point_close[s] = close_at[s]
        size[s] = 1
        alive[s] = True
        height[s] = heights[i] if heights.shape[0] else 0.0
        acc[s, 0] = npx[i]
        acc[s, 1] = sum_intensity[i]
        acc[s, 2] = s_1[i]
        acc[s, 3] = s_I[i]
        acc[s, 4] = s_sI[i]
        acc[s, 5] = s_fI[i]
        acc[s, 6] = s_ssI[i]
        acc[s, 7] = s_ffI[i]
        acc[s, 8] = s_sfI[i]
        s_i = np.float64(s_I[i])
        acc[s, 9] = s_i * point_value[min(i, point_value.shape[0] - 1)]
        f = min(i, factors.shape[0] - 1)
        for c in range(factors.shape[1]):
            acc[s, 10 + c] = s_i * factors[f, c]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def clique_table(sums, s_i_col, copy_cols, ratio_cols):
    """Columns of closed cliques from their summed acc rows (one row per clique): the
    rows of the result are sums[:, copy_cols[k]], then sums[:, ratio_cols[k]] /
    sums[:, s_i_col] (intensity-weighted means; NaN or inf where s_I is 0). Also
    npx: column 0, rounded."""
    nc = sums.shape[0]
    ncopy = copy_cols.shape[0]
    out = np.empty((ncopy + ratio_cols.shape[0], nc), np.float64)
    npx = np.empty(nc, np.int64)
    for c in range(nc):
        for k in range(ncopy):
            out[k, c] = sums[c, copy_cols[k]]
        s_i = sums[c, s_i_col]
        for k in range(ratio_cols.shape[0]):
            out[ncopy + k, c] = sums[c, ratio_cols[k]] / s_i
        npx[c] = np.int64(np.rint(sums[c, 0]))
    return out, npx


@numba.njit(nogil=True, cache=True)
def closing_slots(alive, point_close, n, step):
    """Live slots whose own point closes by `step` (candidates for closing)."""
    out = np.empty(n, np.int64)
    m = 0
    for s in range(n):
        if alive[s] and point_close[s] <= step:
            out[m] = s
            m += 1
    return out[:m]


@numba.njit(nogil=True, cache=True)
def union_gids(gid, n, parent, close_at, size, next_member, gid_a, gid_b):
    """`union_pairs` of the slots of global ids gid_a[k], gid_b[k] (gid[:n] increases)."""
    live = gid[:n]
    union_pairs(parent, close_at, size, next_member, np.searchsorted(live, gid_a),
                np.searchsorted(live, gid_b))


@numba.njit(nogil=True, cache=True)
def close_cliques(parent, close_at, size, next_member, alive, gid, point, acc,
                  candidates, step, by_close_at):
    """Close the cliques of the candidate slots whose close_at <= step.

    Cliques come out in order of their smallest slot (= smallest peak id),
    or, with `by_close_at`, of (close_at, smallest slot): the order in which
    point-by-point steps would have closed them.
    Returns per clique: n2d, summed acc rows, first and last point; per
    member (sorted by gid): gid and the clique's index in this call. The
    members' slots are marked dead.
    """
    roots, nmembers = _closing_roots(parent, close_at, size, alive, candidates, step,
                                     by_close_at)
    nc = roots.shape[0]
    n2d = np.zeros(nc, np.int32)
    sums = np.zeros((nc, acc.shape[1]), np.float64)
    first = np.empty(nc, np.int64)
    last = np.empty(nc, np.int64)
    member_gid = np.empty(nmembers, np.int64)
    member_clique = np.empty(nmembers, np.int64)
    m = 0
    for c in range(nc):
        r = roots[c]
        first[c] = point[r]
        last[c] = point[r]
        s = r
        while True:
            n2d[c] += 1
            for j in range(acc.shape[1]):
                sums[c, j] += acc[s, j]
            first[c] = min(first[c], point[s])
            last[c] = max(last[c], point[s])
            member_gid[m] = gid[s]
            member_clique[m] = c
            m += 1
            alive[s] = False
            s = next_member[s]
            if s == r:
                break
    order = np.argsort(member_gid, kind="mergesort")  # gids are unique: no ties
    return n2d, sums, first, last, member_gid[order], member_clique[order]


@numba.njit(nogil=True, cache=True)
def close_split(parent, close_at, size, next_member, alive, gid, point, acc, height,
                candidates, step, by_close_at, edge_a, edge_b, edge_s, prominence,
                prominence_sigma):
    """`close_cliques`, each closing clique split at its significant maxima.

    The clique's 2D peaks are the nodes (`height`: each one's maximum
    intensity), its links the edges (edge_a, edge_b: global ids; edge_s: the
    saddle, the highest pixel value the two peaks share, +inf for links
    without a shared pixel). Edges are taken from the highest saddle down
    (ties by ids); two parts join unless the lower one's maximum stands
    significantly above the saddle (`significant`): a 0-dimensional
    persistence, so the result does not depend on the order of the links.
    Parts come out clique after clique (in close_cliques' order), each
    clique's parts in order of their smallest peak id. Returns what
    close_cliques returns, plus a mask of the edges used (their cliques are
    closed).
    """
    roots, nmembers = _closing_roots(parent, close_at, size, alive, candidates, step,
                                     by_close_at)
    nc = roots.shape[0]
    m_slot = np.empty(nmembers, np.int64)
    m_comp = np.empty(nmembers, np.int64)
    m = 0
    for c in range(nc):
        r = roots[c]
        s = r
        while True:
            m_slot[m] = s
            m_comp[m] = c
            m += 1
            alive[s] = False
            s = next_member[s]
            if s == r:
                break
    order = np.argsort(gid[m_slot], kind="mergesort")  # one sort kind: less to compile
    m_slot = m_slot[order]
    m_comp = m_comp[order]
    m_gid = gid[m_slot]
    # the edges of the closing cliques, as member positions
    ne = edge_a.shape[0]
    used = np.zeros(ne, np.bool_)
    pa = np.searchsorted(m_gid, edge_a)
    pb = np.searchsorted(m_gid, edge_b)
    nu = 0
    for e in range(ne):
        if (pa[e] < nmembers and m_gid[pa[e]] == edge_a[e] and pb[e] < nmembers
                and m_gid[pb[e]] == edge_b[e]):
            used[e] = True
            nu += 1
    ea = np.empty(nu, np.int64)
    eb = np.empty(nu, np.int64)
    es = np.empty(nu, np.float64)
    q = 0
    for e in range(ne):
        if used[e]:
            ea[q] = pa[e]
            eb[q] = pb[e]
            es[q] = edge_s[e]
            q += 1
    o = np.argsort(eb, kind="mergesort")  # saddle descending, then a, then b
    o = o[np.argsort(ea[o], kind="mergesort")]
    o = o[np.argsort(-es[o], kind="mergesort")]
    h = height[m_slot]
    part = np.arange(nmembers)
    for k in range(nu):
        e = o[k]
        ra = find_root(part, ea[e])
        rb = find_root(part, eb[e])
        if ra == rb:
            continue
        hi = ra
        lo = rb
        if h[rb] > h[ra] or (h[rb] == h[ra] and rb < ra):
            hi = rb
            lo = ra
        if not significant(h[lo], es[e], prominence, prominence_sigma):
            part[lo] = hi  # the root of a part is its highest peak
    # parts: root per member; number them by (clique, smallest member id)
    proot = np.empty(nmembers, np.int64)
    index = np.full(nmembers, -1, np.int64)
    nparts = 0
    first_member = np.empty(nmembers, np.int64)
    for k in range(nmembers):  # members are in increasing id order
        r = find_root(part, k)
        proot[k] = r
        if index[r] < 0:
            index[r] = nparts
            first_member[nparts] = k
            nparts += 1
    pc = m_comp[first_member[:nparts]]
    porder = np.argsort(pc, kind="mergesort")  # parts were met in smallest-id order
    rank = np.empty(nparts, np.int64)
    rank[porder] = np.arange(nparts)
    n2d = np.zeros(nparts, np.int32)
    sums = np.zeros((nparts, acc.shape[1]), np.float64)
    first = np.full(nparts, np.iinfo(np.int64).max, np.int64)
    last = np.full(nparts, np.iinfo(np.int64).min, np.int64)
    member_clique = np.empty(nmembers, np.int64)
    for k in range(nmembers):
        c = rank[index[proot[k]]]
        s = m_slot[k]
        member_clique[k] = c
        n2d[c] += 1
        for j in range(acc.shape[1]):
            sums[c, j] += acc[s, j]
        first[c] = min(first[c], point[s])
        last[c] = max(last[c], point[s])
    return n2d, sums, first, last, m_gid, member_clique, used


@numba.njit(nogil=True, cache=True, error_model="numpy")
def close_step(parent, close_at, size, next_member, alive, gid, point, acc, point_close, n,
               step, by_close_at, s_i_col, copy_cols, ratio_cols):
    """`close_cliques` of the live slots whose own point closes by `step`, and the
    cliques' `clique_table`: (n2d, table, npx, first, last, member_gid,
    member_clique, sums)."""
    candidates = closing_slots(alive, point_close, n, step)
    n2d, sums, first, last, member_gid, member_clique = close_cliques(
        parent, close_at, size, next_member, alive, gid, point, acc, candidates, step,
        by_close_at)
    table, npx = clique_table(sums, s_i_col, copy_cols, ratio_cols)
    return n2d, table, npx, first, last, member_gid, member_clique, sums


@numba.njit(nogil=True, cache=True, error_model="numpy")
def close_split_step(parent, close_at, size, next_member, alive, gid, point, acc, height,
                     point_close, n, step, by_close_at, edge_a, edge_b, edge_s, prominence,
                     prominence_sigma, s_i_col, copy_cols, ratio_cols):
    """`close_step` with `close_split`; also the mask of the edges used."""
    candidates = closing_slots(alive, point_close, n, step)
    n2d, sums, first, last, member_gid, member_clique, used = close_split(
        parent, close_at, size, next_member, alive, gid, point, acc, height, candidates,
        step, by_close_at, edge_a, edge_b, edge_s, prominence, prominence_sigma)
    table, npx = clique_table(sums, s_i_col, copy_cols, ratio_cols)
    return n2d, table, npx, first, last, member_gid, member_clique, sums, used
