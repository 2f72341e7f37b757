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
    nc = roots.shape[0]
    nmembers = 0
    for c in range(nc):
        nmembers += size[roots[c]]
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
