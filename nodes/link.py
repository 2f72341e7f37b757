"""The incremental linker: joins 2D peaks on neighbouring points into cliques.

Points arrive in `point_id` order. Each is overlapped with its neighbours
before it that are still in the frontier (merge-join of raster keys), the
linked pairs are unioned, and every clique that no point to come can reach is
closed and returned at once. Memory holds only the frontier frames and the
peaks of open cliques.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stream.item import MOMENT_COLUMNS, SparseFrame
from stream.scan import Scan

from .kernels.overlap import labelled_keys, overlap_counts
from .kernels.unionfind import close_cliques, union_pairs

OVERLAP_COLUMNS = {"peak_a": np.int64, "peak_b": np.int64, "npixels": np.int32,
                   "score": np.float32}
MEMBER_COLUMNS = {"peak_id": np.int64, "clique_id": np.int64}
# Additive columns summed over a clique's members (then the intensity-weighted
# point and motor sums, s_I * value, one column per motor).
_ACC = ("npx", "sum_intensity", *MOMENT_COLUMNS)
_S_I = _ACC.index("s_I")
_NEVER = np.iinfo(np.int64).max


@dataclass
class LinkResult:
    """What one linker step produced: new overlaps, and the cliques it closed."""

    point_id: int  # -1 for finish()
    peak_offset: int  # global id of this point's first 2D peak
    overlaps: dict[str, np.ndarray]  # peak_a, peak_b, npixels, score; sorted by (a, b)
    cliques: dict[str, np.ndarray]  # one row per clique closed by this step
    members: dict[str, np.ndarray]  # peak_id, clique_id of their members, sorted by peak_id


@dataclass
class FrontierFrame:
    """The labelled pixels of a point that may still be linked to."""

    point_id: int
    shape: tuple[int, int]
    keys: np.ndarray  # int64 raster keys of labelled pixels, increasing
    labels: np.ndarray  # int32, 1..npeaks
    peak_offset: int
    npx: np.ndarray  # int64 pixels per peak (index label - 1)
    s_raw: np.ndarray  # float64 centroids per peak, for centroid criteria
    f_raw: np.ndarray


class AnyPixel:
    """Link every pair of 2D peaks that share at least one pixel (ImageD11)."""

    kind: ClassVar[str] = "any_pixel"

    def select(self, overlaps: dict[str, np.ndarray], frame_a: FrontierFrame,
               frame_b: FrontierFrame) -> tuple[np.ndarray, np.ndarray]:
        """Label pairs (label_a, label_b) to link, from the overlaps of two frames."""
        return overlaps["label_a"], overlaps["label_b"]


# A criterion sees the raw overlaps and both frames (with per-peak npx and
# centroids), so "fraction" (a subset of the overlaps) and "distance" (pairs
# by centroid, overlapping or not) fit the same `select`.
CRITERIA: dict[str, type] = {"any_pixel": AnyPixel}


class _Forest:
    """Slot arrays of the peaks of open cliques, compacted as cliques close."""

    _INDEX = ("gid", "point", "parent", "close_at", "size", "next_member")

    def __init__(self, nacc: int, capacity: int = 1024):
        self.n = 0  # slots in use, live or dead
        self.nlive = 0
        self.nacc = nacc
        self._allocate(capacity)

    def _arrays(self) -> list[str]:
        return [*self._INDEX, "alive", "acc"]

    def _allocate(self, capacity: int) -> None:
        old = {k: getattr(self, k) for k in self._arrays()} if self.n else {}
        for k in self._INDEX:
            setattr(self, k, np.empty(capacity, np.int64))
        self.alive = np.zeros(capacity, np.bool_)
        self.acc = np.empty((capacity, self.nacc), np.float64)
        for k, a in old.items():
            getattr(self, k)[:self.n] = a[:self.n]
        self.capacity = capacity

    def _compact(self) -> None:
        keep = self.alive[:self.n]
        new_slot = np.cumsum(keep) - 1
        for k in self._arrays():
            a = getattr(self, k)
            kept = a[:self.n][keep]
            a[:kept.shape[0]] = new_slot[kept] if k in ("parent", "next_member") else kept
        self.n = self.nlive

    def append(self, gid0: int, point: int, close_at: int, acc: np.ndarray) -> None:
        """Add the peaks gid0.. of one point, each its own clique."""
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
        self.size[s] = 1
        self.alive[s] = True
        self.acc[s] = acc
        self.n += k
        self.nlive += k

    def slots(self, gids: np.ndarray) -> np.ndarray:
        """Slots of open peaks by global id (slots are in increasing gid order)."""
        return np.searchsorted(self.gid[:self.n], gids).astype(np.int64)

    def union(self, slot_a: np.ndarray, slot_b: np.ndarray) -> None:
        union_pairs(self.parent, self.close_at, self.size, self.next_member, slot_a, slot_b)

    def close(self, candidates: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
        out = close_cliques(self.parent, self.close_at, self.size, self.next_member,
                            self.alive, self.gid, self.point, self.acc, candidates, step)
        self.nlive -= out[4].shape[0]
        return out

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive[:self.n]).astype(np.int64)


class Linker:
    """Incremental linker of 2D peaks into cliques (3D peaks) along the trajectory."""

    kind: ClassVar[str] = "linker"

    def __init__(self, *, criterion: str = "any_pixel"):
        if criterion not in CRITERIA:
            raise ValueError(f"linker criterion {criterion!r} is not supported "
                             f"(choices: {', '.join(CRITERIA)})")
        self.criterion = criterion
        self._criterion = CRITERIA[criterion]()
        self._trajectory: Any = None

    def setup(self, scan: Scan) -> None:
        """Forget everything and prepare for a new scan."""
        self._trajectory = scan.trajectory
        self._motors = list(scan.start.motors)
        clash = set(self._motors) & set(_clique_dtypes([]))
        if clash:
            raise ValueError(f"motor names {sorted(clash)} clash with clique columns")
        self._next_point = 0
        self._shape: tuple[int, int] | None = None
        self._npeaks = 0
        self._nclosed = 0
        self._finished = False
        self._frontier: dict[int, FrontierFrame] = {}
        # step -> [(point_id, peak_offset, npeaks)] of the points whose last neighbour it is
        self._closing: dict[int, list[tuple[int, int, int]]] = {}
        self._forest = _Forest(len(_ACC) + 1 + len(self._motors))
        if not Linker._warm:
            self.warmup()

    _warm: ClassVar[bool] = False

    @staticmethod
    def warmup() -> None:
        """Compile the kernels on a two-point scan, so the first real point is not slow."""
        from stream.item import PEAK_COLUMNS
        from stream.message import DetectorInfo, Start

        Linker._warm = True
        linker = Linker()
        linker.setup(Scan.from_start(Start("warmup", {"d": DetectorInfo((2, 2), "uint16")},
                                           motors=["omega"], npoints=2)))
        one = np.ones(1)
        frame = SparseFrame((2, 2), np.zeros(1, np.uint16), np.zeros(1, np.uint16),
                            np.ones(1, np.float32), np.ones(1, np.int32), 1)
        peaks = {k: one.astype(dt) for k, dt in PEAK_COLUMNS.items()}
        for i in range(2):
            linker.add_point(i, frame, peaks, {"omega": float(i)})
        linker.finish()

    # ------------------------------------------------------------ per point

    def add_point(self, point_id: int, sparse: SparseFrame | None,
                  peaks: dict[str, np.ndarray] | None, motors: dict[str, float]) -> LinkResult:
        """Link one point to its neighbours before it; return what closed."""
        self._check_order(point_id)
        offset = self._npeaks
        close_at = max(int(self._trajectory.last_neighbour(point_id)), point_id)
        overlaps = _empty(OVERLAP_COLUMNS)
        if sparse is not None:
            frame = self._frame(point_id, sparse, peaks, offset)
            npeaks = frame.npx.shape[0]
            self._npeaks += npeaks
            if npeaks:
                self._forest.append(offset, point_id, close_at,
                                    self._acc_rows(point_id, peaks, motors, npeaks))
                self._closing.setdefault(close_at, []).append((point_id, offset, npeaks))
                overlaps = self._link(frame)
                if close_at > point_id:
                    self._frontier[point_id] = frame
        self._next_point = point_id + 1
        cliques, members = self._close(point_id)
        return LinkResult(point_id, offset, overlaps, cliques, members)

    def finish(self) -> LinkResult:
        """Close every clique still open (end of scan)."""
        if self._trajectory is None or self._finished:
            raise ValueError("linker: finish() needs setup() and may be called once per scan")
        self._finished = True
        cliques, members = self._emit(self._forest.live_slots(), _NEVER)
        self._frontier.clear()
        self._closing.clear()
        return LinkResult(-1, self._npeaks, _empty(OVERLAP_COLUMNS), cliques, members)

    # --------------------------------------------------------- introspection

    def frontier_points(self) -> list[int]:
        """Points whose sparse frames are still kept."""
        return sorted(self._frontier)

    def open_peaks(self) -> int:
        """2D peaks in open cliques held in memory."""
        return self._forest.nlive

    # -------------------------------------------------------------- helpers

    def _check_order(self, point_id: int) -> None:
        if self._trajectory is None:
            raise ValueError("linker: call setup(scan) before add_point()")
        if self._finished:
            raise ValueError(f"linker: point {point_id} after finish()")
        if point_id != self._next_point:
            raise ValueError(f"linker: expected point {self._next_point}, got {point_id} "
                             "(points must come once each, in order, from 0)")

    def _frame(self, point_id: int, sparse: SparseFrame, peaks: dict[str, np.ndarray] | None,
               offset: int) -> FrontierFrame:
        if sparse.label is None or peaks is None:
            raise ValueError(f"linker: point {point_id} needs a labelled frame and its peaks")
        shape = (int(sparse.shape[0]), int(sparse.shape[1]))
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"linker: point {point_id} frame shape {shape} differs from "
                             f"the scan's {self._shape}")
        npeaks = int(sparse.npeaks)
        if peaks["npx"].shape[0] != npeaks:
            raise ValueError(f"linker: point {point_id} has {npeaks} labels but "
                             f"{peaks['npx'].shape[0]} peak rows")
        keys, labels, npx, status = labelled_keys(sparse.row, sparse.col, sparse.label,
                                                  sparse.shape[1], npeaks)
        if status == 1:
            raise ValueError(f"linker: point {point_id}: pixels are not raster-sorted")
        if status == 2:
            raise ValueError(f"linker: point {point_id} has labels above npeaks={npeaks}")
        self._shape = shape
        return FrontierFrame(point_id, shape, keys, labels, offset, npx,
                             np.asarray(peaks["s_raw"], np.float64),
                             np.asarray(peaks["f_raw"], np.float64))

    def _acc_rows(self, point_id: int, peaks: dict[str, np.ndarray],
                  motors: dict[str, float], npeaks: int) -> np.ndarray:
        acc = np.empty((npeaks, self._forest.nacc), np.float64)
        for k, name in enumerate(_ACC):
            acc[:, k] = peaks[name]
        s_i = acc[:, _S_I]
        acc[:, len(_ACC)] = s_i * point_id
        for k, name in enumerate(self._motors):
            acc[:, len(_ACC) + 1 + k] = s_i * float(motors.get(name, np.nan))
        return acc

    def _link(self, frame: FrontierFrame) -> dict[str, np.ndarray]:
        """Overlap with the frontier neighbours before this point; union linked pairs."""
        parts = []
        for j in sorted(set(self._trajectory.neighbours_before(frame.point_id))):
            other = self._frontier.get(j)
            if other is None:
                continue
            la, lb, npixels = overlap_counts(other.keys, other.labels, other.npx.shape[0],
                                             frame.keys, frame.labels)
            smaller = np.minimum(other.npx[la - 1], frame.npx[lb - 1])
            pairs = {"label_a": la, "label_b": lb, "npixels": npixels,
                     "score": (npixels / smaller).astype(np.float32)}
            link_a, link_b = self._criterion.select(pairs, other, frame)
            gids = np.concatenate([other.peak_offset + link_a.astype(np.int64) - 1,
                                   frame.peak_offset + link_b.astype(np.int64) - 1])
            slots = self._forest.slots(gids)
            self._forest.union(slots[:link_a.shape[0]], slots[link_a.shape[0]:])
            parts.append({"peak_a": other.peak_offset + la.astype(np.int64) - 1,
                          "peak_b": frame.peak_offset + lb.astype(np.int64) - 1,
                          "npixels": npixels, "score": pairs["score"]})
        if not parts:
            return _empty(OVERLAP_COLUMNS)
        # each part is sorted by (a, b) and the parts' peak_a ranges increase with j
        return {k: np.concatenate([p[k] for p in parts]).astype(dt, copy=False)
                for k, dt in OVERLAP_COLUMNS.items()}

    def _close(self, step: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Drop the frames no later point can reach and close the cliques they end."""
        ending = self._closing.pop(step, [])
        for p, _, _ in ending:
            self._frontier.pop(p, None)
        if not ending:
            return _empty(_clique_dtypes(self._motors)), _empty(MEMBER_COLUMNS)
        gids = np.concatenate([np.arange(o, o + n, dtype=np.int64) for _, o, n in ending])
        return self._emit(self._forest.slots(gids), step)

    def _emit(self, candidates: np.ndarray, step: int):
        n2d, sums, first, last, member_gid, member_clique = self._forest.close(candidates, step)
        nc = n2d.shape[0]
        ids = np.arange(self._nclosed, self._nclosed + nc, dtype=np.int64)
        self._nclosed += nc
        with np.errstate(invalid="ignore", divide="ignore"):
            s_i = sums[:, _S_I]
            cliques = {"clique_id": ids, "n2d": n2d, "npx": sums[:, 0].round().astype(np.int64),
                       "sum_intensity": sums[:, 1],
                       "s_raw": sums[:, _ACC.index("s_sI")] / s_i,
                       "f_raw": sums[:, _ACC.index("s_fI")] / s_i}
            for name in MOMENT_COLUMNS:
                cliques[name] = sums[:, _ACC.index(name)].copy()
            cliques["first_point"] = first
            cliques["last_point"] = last
            cliques["point"] = sums[:, len(_ACC)] / s_i
            for k, name in enumerate(self._motors):
                cliques[name] = sums[:, len(_ACC) + 1 + k] / s_i
        members = {"peak_id": member_gid, "clique_id": ids[member_clique]}
        return cliques, members


def _clique_dtypes(motors: list[str]) -> dict[str, Any]:
    """Columns of the cliques table, in order."""
    cols: dict[str, Any] = {"clique_id": np.int64, "n2d": np.int32, "npx": np.int64,
                            "sum_intensity": np.float64, "s_raw": np.float64,
                            "f_raw": np.float64}
    cols.update({name: np.float64 for name in MOMENT_COLUMNS})
    cols.update({"first_point": np.int64, "last_point": np.int64, "point": np.float64})
    cols.update({name: np.float64 for name in motors})
    return cols


def _empty(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.empty(0, dt) for k, dt in columns.items()}
