"""The linker's open 2D peaks: slot arrays for union-find, compacted as cliques close."""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes.kernels.unionfind import (
    append_peaks,
    close_split_step,
    close_step,
    union_gids,
)


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

    def append(self, gid0: int, point: np.ndarray | int, close_at: np.ndarray | int,
               columns: list[np.ndarray], point_value: np.ndarray, factors: np.ndarray,
               height: np.ndarray | None = None) -> None:
        """Add the peaks gid0.. (on points `point`, per peak or one for all), each its
        own clique, with their additive columns (`kernels.unionfind.append_peaks`:
        the peak table's `columns`, s_I * point_value and s_I * factors)."""
        k = columns[0].shape[0]
        if self.n + k > self.capacity:
            if self.n - self.nlive >= self.nlive:
                self._compact()
            if self.n + k > self.capacity:
                self._allocate(max(2 * self.capacity, self.n + k))
        append_peaks(self.gid, self.point, self.parent, self.next_member, self.close_at,
                     self.point_close, self.size, self.alive, self.acc, self.height, self.n,
                     gid0, _ints(point), _ints(close_at), *columns, point_value, factors,
                     _NO_HEIGHT if height is None else height)
        self.n += k
        self.nlive += k

    def union_gids(self, gid_a: np.ndarray, gid_b: np.ndarray) -> None:
        """Join the cliques of the open peaks gid_a[k] and gid_b[k] (global ids)."""
        union_gids(self.gid, self.n, self.parent, self.close_at, self.size, self.next_member,
                   gid_a, gid_b)

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

    def close(self, step: int, by_close_at: bool, columns: tuple[int, np.ndarray, np.ndarray],
              split: tuple[float, float] | None = None) -> tuple:
        """Close the cliques of the live slots whose own point closes by `step`, in the
        order point-by-point steps close them (`by_close_at`) or by smallest peak id;
        with `split` (prominence, prominence_sigma) each one cut at its significant
        maxima (kernels.unionfind.close_split). `columns`: (s_i_col, copy_cols,
        ratio_cols) of their `clique_table`. Returns (n2d, table, npx, first, last,
        member_gid, member_clique, sums)."""
        if split is None:
            out = close_step(self.parent, self.close_at, self.size, self.next_member,
                             self.alive, self.gid, self.point, self.acc, self.point_close,
                             self.n, step, by_close_at, *columns)
        else:
            ne = self.nedges
            *out, used = close_split_step(
                self.parent, self.close_at, self.size, self.next_member, self.alive, self.gid,
                self.point, self.acc, self.height, self.point_close, self.n, step,
                by_close_at, self.edge_a[:ne], self.edge_b[:ne], self.edge_s[:ne], *split,
                *columns)
            if used.any():
                keep = np.flatnonzero(~used)
                m = keep.shape[0]
                for name in ("edge_a", "edge_b", "edge_s"):
                    a = getattr(self, name)
                    a[:m] = a[keep]
                self.nedges = m
        self.nlive -= out[5].shape[0]
        return tuple(out)


    # ------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, Any]:
        """The live slots (compacted copies, in slot order) and the kept edges.

        Dead slots are left out: no live slot points to one (a clique closes
        whole), and compaction keeps the order of slots, which is all the
        closing order depends on."""
        keep = self.alive[:self.n]
        new_slot = np.cumsum(keep) - 1
        out: dict[str, Any] = {"nacc": self.nacc, "nlive": self.nlive}
        for k in self._arrays():
            a = getattr(self, k)[:self.n][keep]
            out[k] = new_slot[a] if k in ("parent", "next_member") else a.copy()
        out["alive"] = out["alive"].astype(np.uint8)
        ne = self.nedges
        out.update(edge_a=self.edge_a[:ne].copy(), edge_b=self.edge_b[:ne].copy(),
                   edge_s=self.edge_s[:ne].copy())
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Forest:
        """A forest from `state()`; ValueError if the arrays do not fit together."""
        nacc, n = int(state["nacc"]), int(state["nlive"])
        forest = cls(nacc, max(1024, 2 * n))
        for k in forest._INDEX:
            forest._put(k, state[k], (n,), n)
        forest._put("alive", state["alive"], (n,), n)
        forest._put("acc", state["acc"], (n, nacc), n)
        forest._put("height", state["height"], (n,), n)
        if not forest.alive[:n].all() or n and not (
                (0 <= forest.parent[:n]).all() and (forest.parent[:n] < n).all()
                and (0 <= forest.next_member[:n]).all() and (forest.next_member[:n] < n).all()):
            raise ValueError("linker state: forest slots are not consistent")
        forest.n = forest.nlive = n
        ne = int(np.asarray(state["edge_a"]).shape[0])
        forest.add_edges(*(_array(state, k, (ne,)) for k in ("edge_a", "edge_b", "edge_s")))
        return forest

    def _put(self, name: str, value: Any, shape: tuple[int, ...], n: int) -> None:
        target = getattr(self, name)
        target[:n] = _array({name: value}, name, shape).astype(target.dtype, copy=False)


_NO_HEIGHT = np.empty(0, np.float64)


def _ints(x: np.ndarray | int) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else np.array([x], np.int64)


def _array(state: dict[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(state[name])
    if a.shape != shape:
        raise ValueError(f"linker state: forest {name} has shape {a.shape}, expected {shape}")
    return a
