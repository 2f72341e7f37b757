"""The incremental linker: joins 2D peaks on neighbouring points into cliques.

Points arrive in `point_id` order, one at a time (`add_point`, live) or as a
block of consecutive points (`add_block`, replay of sparse files: the same
kernels and the same result, with far less Python per point). Each point is
overlapped with its neighbours before it that are still in the frontier
(merge-join of raster keys), the pairs that the criteria (`nodes.criteria`)
keep are unioned, and every clique that no point to come can reach is closed
and returned at once, in the order the point-by-point steps close them.
Memory holds only the frontier frames and the peaks of open cliques.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stream.item import MOMENT_COLUMNS, SparseFrame
from stream.scan import Scan

from .criteria import CRITERIA, Rule
from .forest import Forest
from .kernels.overlap import labelled_keys_block, overlaps_block, pairs_within_block

OVERLAP_COLUMNS = {"peak_a": np.int64, "peak_b": np.int64, "npixels": np.int32,
                   "score": np.float32}
MEMBER_COLUMNS = {"peak_id": np.int64, "clique_id": np.int64}
# Additive columns summed over a clique's members (then the intensity-weighted
# point and motor sums, s_I * value, one column per motor).
_ACC = ("npx", "sum_intensity", *MOMENT_COLUMNS)
_S_I = _ACC.index("s_I")
_NEVER = np.iinfo(np.int64).max

__all__ = ["CRITERIA", "FrontierFrame", "Linker", "LinkResult", "PeakBlock"]


@dataclass
class LinkResult:
    """What one linker step produced: new overlaps, and the cliques it closed."""

    point_id: int  # the last point of the step; -1 for finish()
    peak_offset: int  # global id of the step's first 2D peak
    overlaps: dict[str, np.ndarray]  # peak_a, peak_b, npixels, score (see _link for the order)
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
    close_at: int = 0  # the step after which no point links to it


@dataclass
class PeakBlock:
    """Consecutive points first .. first + n - 1 for the linker, arrays concatenated.

    A point without a frame (missing or bad) has `has_frame` False, no pixels
    and no peaks. Labels are per point (1..npeaks[k]); `peaks` holds the 2D
    peak columns of all points, point after point.
    """

    first: int
    shape: tuple[int, int]
    has_frame: np.ndarray  # bool (n,)
    nnz: np.ndarray  # int64 (n,) pixels per point
    row: np.ndarray  # uint16
    col: np.ndarray  # uint16
    label: np.ndarray  # int32
    npeaks: np.ndarray  # int64 (n,)
    peaks: dict[str, np.ndarray]
    motors: dict[str, np.ndarray]  # float64 (n,) per motor
    # The trajectory's answers, when the caller asked it already (block replay):
    # links (earlier point, point of this block) sorted by the later point, and
    # each point's close step max(last_neighbour(p), p). None: the linker asks.
    links: tuple[np.ndarray, np.ndarray] | None = None
    close_at: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.nnz.shape[0])

    @classmethod
    def single(cls, point_id: int, sparse: SparseFrame | None,
               peaks: dict[str, np.ndarray] | None, motors: dict[str, float]) -> PeakBlock:
        """One point, as the collector hands it over (None: missing or bad)."""
        values = {k: np.array([v], np.float64) for k, v in motors.items()}
        if sparse is None:
            empty = np.empty(0, np.uint16)
            return cls(point_id, (0, 0), np.zeros(1, np.bool_), np.zeros(1, np.int64), empty,
                       empty, np.empty(0, np.int32), np.zeros(1, np.int64), {}, values)
        if sparse.label is None or peaks is None:
            raise ValueError(f"linker: point {point_id} needs a labelled frame and its peaks")
        return cls(point_id, (int(sparse.shape[0]), int(sparse.shape[1])),
                   np.ones(1, np.bool_), np.array([sparse.nnz], np.int64), sparse.row,
                   sparse.col, sparse.label, np.array([sparse.npeaks], np.int64), peaks, values)


class Linker:
    """Incremental linker of 2D peaks into cliques (3D peaks) along the trajectory."""

    kind: ClassVar[str] = "linker"

    def __init__(self, *, criterion: str | list[str] = "any_pixel", fraction: float = 0.2,
                 distance: float = 3.0):
        self.rule = Rule(criterion, fraction=fraction, distance=distance)
        self.criterion = criterion
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
        self._forest = Forest(len(_ACC) + 1 + len(self._motors))
        if not Linker._warm:
            self.warmup()

    _warm: ClassVar[bool] = False

    @staticmethod
    def warmup() -> None:
        """Compile the kernels on a two-point scan, so the first real point is not slow."""
        from stream.item import PEAK_COLUMNS
        from stream.message import DetectorInfo, Start

        Linker._warm = True
        one = np.ones(1)
        frame = SparseFrame((2, 2), np.zeros(1, np.uint16), np.zeros(1, np.uint16),
                            np.ones(1, np.float32), np.ones(1, np.int32), 1)
        peaks = {k: one.astype(dt) for k, dt in PEAK_COLUMNS.items()}
        for criterion in ("any_pixel", "distance"):
            linker = Linker(criterion=criterion)
            linker.setup(Scan.from_start(Start("warmup", {"d": DetectorInfo((2, 2), "uint16")},
                                               motors=["omega"], npoints=2)))
            for i in range(2):
                linker.add_point(i, frame, peaks, {"omega": float(i)})
            linker.finish()

    # ------------------------------------------------------------ per point

    def add_point(self, point_id: int, sparse: SparseFrame | None,
                  peaks: dict[str, np.ndarray] | None, motors: dict[str, float]) -> LinkResult:
        """Link one point to its neighbours before it; return what closed."""
        self._check_order(point_id)
        return self.add_block(PeakBlock.single(point_id, sparse, peaks, motors))

    def add_block(self, block: PeakBlock) -> LinkResult:
        """Link consecutive points at once: the same result as one add_point per point,
        with the cliques closed in the same order."""
        self._check_order(block.first)
        last = block.first + block.n - 1
        offset = self._npeaks
        keys, labels, key_ptr, npx, point_close = self._check_block(block)
        with_peaks = np.flatnonzero(block.npeaks > 0)
        overlaps = _empty(OVERLAP_COLUMNS)
        if with_peaks.shape[0]:
            peak_ptr = np.zeros(block.n + 1, np.int64)
            np.cumsum(block.npeaks, out=peak_ptr[1:])
            points = block.first + with_peaks
            per_peak = np.repeat(np.arange(block.n), block.npeaks)
            self._forest.append(offset, block.first + per_peak, point_close[per_peak],
                                self._acc_rows(block, per_peak))
            self._npeaks += int(peak_ptr[-1])
            frames = self._frames(block, points, keys, labels, key_ptr, npx, peak_ptr,
                                  point_close, offset)
            overlaps = self._link(frames, self._frame_pairs(block, frames, points))
            self._keep_frontier(frames, points, last)
        self._next_point = last + 1
        for p in [p for p, f in self._frontier.items() if f.close_at <= last]:
            del self._frontier[p]
        cliques, members = self._emit(self._forest.closing_by(last), last, True)
        return LinkResult(last, offset, overlaps, cliques, members)

    def finish(self) -> LinkResult:
        """Close every clique still open (end of scan)."""
        if self._trajectory is None or self._finished:
            raise ValueError("linker: finish() needs setup() and may be called once per scan")
        self._finished = True
        cliques, members = self._emit(self._forest.live_slots(), _NEVER, False)
        self._frontier.clear()
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

    def _check_block(self, block: PeakBlock):
        """Raster keys of the labelled pixels, pixels per peak, and each point's close step."""
        npeaks = np.asarray(block.npeaks, np.int64)
        nrows = len(block.peaks["npx"]) if block.peaks else 0
        if nrows != int(npeaks.sum()):
            p = block.first if block.n == 1 else f"{block.first}..{block.first + block.n - 1}"
            raise ValueError(f"linker: point {p} has {int(npeaks.sum())} labels but "
                             f"{nrows} peak rows")
        if (npeaks[~block.has_frame] != 0).any():
            raise ValueError("linker: a point without a frame cannot have peaks")
        if block.has_frame.any():
            shape = (int(block.shape[0]), int(block.shape[1]))
            if self._shape is not None and shape != self._shape:
                raise ValueError(f"linker: point {block.first} frame shape {shape} differs "
                                 f"from the scan's {self._shape}")
            self._shape = shape
        pixel_ptr = np.zeros(block.n + 1, np.int64)
        np.cumsum(block.nnz, out=pixel_ptr[1:])
        keys, labels, key_ptr, npx, status = labelled_keys_block(
            block.row, block.col, block.label, pixel_ptr, npeaks,
            self._shape[1] if self._shape else 1)
        for k in np.flatnonzero(status)[:1]:
            what = ("pixels are not raster-sorted" if status[k] == 1 else
                    f"has labels above npeaks={npeaks[k]}")
            raise ValueError(f"linker: point {block.first + k}: {what}")
        if block.close_at is not None:
            point_close = np.asarray(block.close_at, np.int64)
        else:
            point_close = np.full(block.n, -1, np.int64)
            traj = self._trajectory
            for k in np.flatnonzero(npeaks > 0).tolist():
                p = block.first + k
                point_close[k] = max(int(traj.last_neighbour(p)), p)
        return keys, labels, key_ptr, npx, point_close

    def _acc_rows(self, block: PeakBlock, per_peak: np.ndarray) -> np.ndarray:
        acc = np.empty((per_peak.shape[0], self._forest.nacc), np.float64)
        for k, name in enumerate(_ACC):
            acc[:, k] = block.peaks[name]
        s_i = acc[:, _S_I]
        acc[:, len(_ACC)] = s_i * (block.first + per_peak)
        for k, name in enumerate(self._motors):
            values = block.motors.get(name)
            value = values[per_peak] if values is not None else np.nan
            acc[:, len(_ACC) + 1 + k] = s_i * value
        return acc

    def _frames(self, block, points, keys, labels, key_ptr, npx, peak_ptr, point_close,
                offset) -> dict[str, Any]:
        """Frame slots: the frontier frames (their pixels in `old_*`), then the block's
        points with peaks (pixels in `new_*`, the block's own arrays, not copied)."""
        old = [self._frontier[p] for p in sorted(self._frontier)]
        k = points - block.first
        npeaks = block.npeaks[k]
        s_raw = np.asarray(block.peaks["s_raw"], np.float64)
        f_raw = np.asarray(block.peaks["f_raw"], np.float64)
        new = {"npx": npx, "s_raw": s_raw, "f_raw": f_raw}
        if old:
            npx = np.concatenate([*(f.npx for f in old), npx])
            s_raw = np.concatenate([*(f.s_raw for f in old), s_raw])
            f_raw = np.concatenate([*(f.f_raw for f in old), f_raw])
        old_keys = _joined([f.keys for f in old], np.int64)
        old_labels = _joined([f.labels for f in old], np.int32)
        old_ptr = np.cumsum([0, *(f.keys.shape[0] for f in old)]).astype(np.int64)
        new_ptr = np.r_[key_ptr[k], keys.shape[0]].astype(np.int64)
        all_npeaks = np.array([*(f.npx.shape[0] for f in old), *npeaks], np.int64)
        peak_ptr_all = np.zeros(all_npeaks.shape[0] + 1, np.int64)
        np.cumsum(all_npeaks, out=peak_ptr_all[1:])
        gid0 = np.array([*(f.peak_offset for f in old), *(offset + peak_ptr[k])], np.int64)
        slot = {f.point_id: i for i, f in enumerate(old)}
        slot.update(zip(points.tolist(), range(len(old), len(old) + points.shape[0]),
                        strict=True))
        return {"old_keys": old_keys, "old_labels": old_labels, "old_ptr": old_ptr,
                "new_keys": keys, "new_labels": labels, "new_ptr": new_ptr,
                "npeaks": all_npeaks, "peak_ptr": peak_ptr_all, "gid0": gid0, "npx": npx,
                "s_raw": s_raw, "f_raw": f_raw, "slot": slot, "nold": len(old), "new": new,
                "new_peak0": int(peak_ptr_all[len(old)]),
                "close_at": np.array([*(f.close_at for f in old), *point_close[k]], np.int64)}

    def _frame_pairs(self, block: PeakBlock, frames: dict[str, Any],
                     points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame slots (earlier, later) to overlap: each new point with peaks and its
        neighbours before it that have peaks, point after point, neighbours increasing."""
        slot = frames["slot"]
        if block.links is None:
            fa, fb = [], []
            traj = self._trajectory
            for i in points.tolist():
                for j in sorted(set(traj.neighbours_before(i))):
                    sj = slot.get(j)
                    if sj is not None:
                        fa.append(sj)
                        fb.append(slot[i])
            return np.array(fa, np.int64), np.array(fb, np.int64)
        link_a, link_b = (np.asarray(x, np.int64) for x in block.links)
        in_block = np.full(block.n, -1, np.int64)
        in_block[points - block.first] = frames["nold"] + np.arange(points.shape[0])
        fb = in_block[link_b - block.first]
        inside = link_a >= block.first
        fa = np.full(link_a.shape[0], -1, np.int64)
        fa[inside] = in_block[link_a[inside] - block.first]
        for k in np.flatnonzero(~inside).tolist():
            fa[k] = slot.get(int(link_a[k]), -1)
        use = (fa >= 0) & (fb >= 0)
        fa, fb, link_b, link_a = fa[use], fb[use], link_b[use], link_a[use]
        order = np.lexsort((link_a, link_b))
        fa, fb = fa[order], fb[order]
        dup = np.zeros(fa.shape[0], np.bool_)
        dup[1:] = (fa[1:] == fa[:-1]) & (fb[1:] == fb[:-1])
        return fa[~dup], fb[~dup]

    def _link(self, frames: dict[str, Any],
              pairs: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """Overlap each new frame with its neighbours before it; union the linked pairs.

        The overlaps come point after point, each point's neighbours in
        increasing order, each pair of frames sorted by (peak_a, peak_b).
        """
        fa, fb = pairs
        if not fa.shape[0]:
            return _empty(OVERLAP_COLUMNS)
        pair, la, lb, npixels = overlaps_block(
            frames["old_keys"], frames["old_labels"], frames["old_ptr"], frames["new_keys"],
            frames["new_labels"], frames["new_ptr"], frames["npeaks"], fa, fb)
        ia = frames["peak_ptr"][fa[pair]] + la - 1  # rows of the frames' peak arrays
        ib = frames["peak_ptr"][fb[pair]] + lb - 1
        npx = frames["npx"]
        smaller = np.minimum(npx[ia], npx[ib])
        overlaps = {"peak_a": frames["gid0"][fa[pair]] + la - 1,
                    "peak_b": frames["gid0"][fb[pair]] + lb - 1,
                    "npixels": npixels, "score": (npixels / smaller).astype(np.float32)}
        if not self.rule.needs_overlap:  # distance alone: pairs by centroid
            pair, la, lb = pairs_within_block(frames["s_raw"], frames["f_raw"],
                                              frames["peak_ptr"], fa, fb, self.rule.distance)
            ia = frames["peak_ptr"][fa[pair]] + la - 1
            ib = frames["peak_ptr"][fb[pair]] + lb - 1
            npixels = np.zeros(ia.shape[0], np.int32)
        keep = self.rule.keep({"npixels": npixels, "npx_a": npx[ia], "npx_b": npx[ib],
                               "s_a": frames["s_raw"][ia], "f_a": frames["f_raw"][ia],
                               "s_b": frames["s_raw"][ib], "f_b": frames["f_raw"][ib]})
        gids = np.concatenate([frames["gid0"][fa[pair]] + la - 1,
                               frames["gid0"][fb[pair]] + lb - 1])
        nk = keep.shape[0]
        slots = self._forest.slots(np.concatenate([gids[:nk][keep], gids[nk:][keep]]))
        half = slots.shape[0] // 2
        self._forest.union(slots[:half], slots[half:])
        return {k: np.asarray(v).astype(dt, copy=False) for (k, v), dt in
                zip(overlaps.items(), OVERLAP_COLUMNS.values(), strict=True)}

    def _keep_frontier(self, frames: dict[str, Any], points: np.ndarray, last: int) -> None:
        """Keep the new frames that a later point may still link to."""
        nold = frames["nold"]
        for n, p in enumerate(points.tolist()):
            s = nold + n
            close_at = int(frames["close_at"][s])
            if close_at <= last:
                continue
            new = frames["new"]  # the block's own arrays: a frame that is all of them
            p0 = frames["new_peak0"]  # is kept without a copy
            kp = slice(int(frames["new_ptr"][n]), int(frames["new_ptr"][n + 1]))
            pp = slice(int(frames["peak_ptr"][s]) - p0, int(frames["peak_ptr"][s + 1]) - p0)
            keys = _part(frames["new_keys"], kp)
            labels = _part(frames["new_labels"], kp)
            self._frontier[p] = FrontierFrame(
                p, self._shape, keys, labels, int(frames["gid0"][s]), _part(new["npx"], pp),
                _part(new["s_raw"], pp), _part(new["f_raw"], pp), close_at)

    def _emit(self, candidates: np.ndarray, step: int, by_close_at: bool):
        n2d, sums, first, last, member_gid, member_clique = self._forest.close(
            candidates, step, by_close_at)
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


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _part(a: np.ndarray, s: slice) -> np.ndarray:
    """a[s], copied unless it is all of a (so a kept frame does not pin a whole block)."""
    return a if s.start == 0 and s.stop == a.shape[0] else a[s].copy()


def _empty(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.empty(0, dt) for k, dt in columns.items()}
