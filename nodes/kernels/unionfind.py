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

from .label import significant


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
    roots = np.unique(roots[:nr])
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
    order = np.argsort(member_gid)
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
    order = np.argsort(gid[m_slot])
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
