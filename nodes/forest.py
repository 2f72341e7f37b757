"""The linker's open 2D peaks: slot arrays for union-find, compacted as cliques close."""

from __future__ import annotations

import numpy as np

from .kernels.unionfind import close_cliques, close_split, union_pairs


class Forest:
    """Slot arrays of the peaks of open cliques (see kernels.unionfind).

    Per slot also `point_close`: the close step of the slot's own point, so
    the peaks that may close by a step are found without a per-step index,
    and `height` (the peak's maximum intensity). With `split`, the links of
    open cliques are kept as edges (global ids and saddle) until their clique
    closes, so that it can be split at its significant maxima
    (kernels.unionfind.close_split).
    """

    _INDEX = ("gid", "point", "parent", "close_at", "point_close", "size", "next_member")

    def __init__(self, nacc: int, capacity: int = 1024):
        self.n = 0  # slots in use, live or dead
        self.nlive = 0
        self.nacc = nacc
        self._allocate(capacity)
        self.nedges = 0
        self.edge_a = np.empty(capacity, np.int64)
        self.edge_b = np.empty(capacity, np.int64)
        self.edge_s = np.empty(capacity, np.float64)

    def _arrays(self) -> list[str]:
        return [*self._INDEX, "alive", "acc", "height"]

    def _allocate(self, capacity: int) -> None:
        old = {k: getattr(self, k) for k in self._arrays()} if self.n else {}
        for k in self._INDEX:
            setattr(self, k, np.empty(capacity, np.int64))
        self.alive = np.zeros(capacity, np.bool_)
        self.acc = np.empty((capacity, self.nacc), np.float64)
        self.height = np.empty(capacity, np.float64)
        for k, a in old.items():
            getattr(self, k)[:self.n] = a[:self.n]
        self.capacity = capacity

    def _compact(self) -> None:
        keep = self.alive[:self.n].copy()  # a copy: "alive" itself is compacted below
        new_slot = np.cumsum(keep) - 1
        for k in self._arrays():
            a = getattr(self, k)
            kept = a[:self.n][keep]
            a[:kept.shape[0]] = new_slot[kept] if k in ("parent", "next_member") else kept
        self.n = self.nlive

    def append(self, gid0: int, point: np.ndarray, close_at: np.ndarray, acc: np.ndarray,
               height: np.ndarray | None = None) -> None:
        """Add the peaks gid0.. (on points `point`), each its own clique."""
        k = acc.shape[0]
        if self.n + k > self.capacity:
            if self.n - self.nlive >= self.nlive:
                self._compact()
            if self.n + k > self.capacity:
                self._allocate(max(2 * self.capacity, self.n + k))
        s = slice(self.n, self.n + k)
        slots = np.arange(self.n, self.n + k, dtype=np.int64)
        self.gid[s] = np.arange(gid0, gid0 + k, dtype=np.int64)
        self.point[s] = point
        self.parent[s] = slots
        self.next_member[s] = slots
        self.close_at[s] = close_at
        self.point_close[s] = close_at
        self.size[s] = 1
        self.alive[s] = True
        self.acc[s] = acc
        self.height[s] = 0.0 if height is None else height
        self.n += k
        self.nlive += k

    def slots(self, gids: np.ndarray) -> np.ndarray:
        """Slots of open peaks by global id (slots are in increasing gid order)."""
        return np.searchsorted(self.gid[:self.n], gids).astype(np.int64)

    def union(self, slot_a: np.ndarray, slot_b: np.ndarray) -> None:
        union_pairs(self.parent, self.close_at, self.size, self.next_member, slot_a, slot_b)

    def add_edges(self, gid_a: np.ndarray, gid_b: np.ndarray, saddle: np.ndarray) -> None:
        """Keep links of open cliques (global ids, saddle) for close_split."""
        k = gid_a.shape[0]
        if self.nedges + k > self.edge_a.shape[0]:
            cap = max(2 * self.edge_a.shape[0], self.nedges + k)
            for name in ("edge_a", "edge_b", "edge_s"):
                old = getattr(self, name)
                new = np.empty(cap, old.dtype)
                new[:self.nedges] = old[:self.nedges]
                setattr(self, name, new)
        s = slice(self.nedges, self.nedges + k)
        self.edge_a[s] = gid_a
        self.edge_b[s] = gid_b
        self.edge_s[s] = saddle
        self.nedges += k

    def closing_by(self, step: int) -> np.ndarray:
        """Live slots whose own point closes by `step` (candidates for closing)."""
        n = self.n
        return np.flatnonzero(self.alive[:n] & (self.point_close[:n] <= step)).astype(np.int64)

    def close(self, candidates: np.ndarray, step: int, by_close_at: bool) -> tuple:
        out = close_cliques(self.parent, self.close_at, self.size, self.next_member,
                            self.alive, self.gid, self.point, self.acc, candidates, step,
                            by_close_at)
        self.nlive -= out[4].shape[0]
        return out

    def close_split(self, candidates: np.ndarray, step: int, by_close_at: bool,
                    prominence: float, prominence_sigma: float) -> tuple:
        """`close`, each closing clique split at its significant maxima."""
        ne = self.nedges
        *out, used = close_split(self.parent, self.close_at, self.size, self.next_member,
                                 self.alive, self.gid, self.point, self.acc, self.height,
                                 candidates, step, by_close_at, self.edge_a[:ne],
                                 self.edge_b[:ne], self.edge_s[:ne], prominence,
                                 prominence_sigma)
        self.nlive -= out[4].shape[0]
        if used.any():
            keep = np.flatnonzero(~used)
            m = keep.shape[0]
            for name in ("edge_a", "edge_b", "edge_s"):
                a = getattr(self, name)
                a[:m] = a[keep]
            self.nedges = m
        return tuple(out)

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive[:self.n]).astype(np.int64)
