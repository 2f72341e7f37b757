"""Linking a block of consecutive points at once (replay of sparse files): `PeakBlock`
and `BlockPath` behind `Linker.add_block`, the same kernels and the same result as one
`Linker.add_point` per point, with far less Python per point: the block's
frames and the frontier's are concatenated once, the pairs of frames to
overlap found from the trajectory's links, and all overlapped in one call
(`kernels.overlap.overlaps_block`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from nodes.kernels.overlap import overlaps_block, pairs_within_block
from nodes.kernels.runs import frame_runs
from nodes.link.cliques import ACC, OVERLAP_COLUMNS, CliqueColumns, LinkResult, empty_table
from nodes.link.criteria import Rule
from nodes.link.forest import Forest
from nodes.link.frontier import NO_H, NO_INT, NO_KEY, FrontierFrame
from nodes.link.separate import PixelPool
from stream.core.item import SparseFrame


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
    # The pixels' intensities (as row / col): needed when the linker splits cliques.
    intensity: np.ndarray | None = None

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
                   sparse.col, sparse.label, np.array([sparse.npeaks], np.int64), peaks, values,
                   intensity=sparse.intensity)


class LinkSteps(Protocol):
    """What the block path uses of a linker (`nodes.link.linker.Linker` implements it):
    the scan's state, which both paths change, and the steps they share."""

    trajectory: Any  # the scan's trajectory (setup)
    rule: Rule  # the link criteria
    shape: tuple[int, int] | None  # the frames' shape, once a frame came
    splitting: bool  # cliques are split at their maxima (needs intensities, saddles)
    separating: bool  # closed cliques are divided at pixel level (split "pixels")
    pool: PixelPool  # the pixels of open cliques' 2D peaks (when separating)
    npeaks: int  # 2D peaks linked so far: the global id of the next one
    next_point: int  # the point expected next
    cols: CliqueColumns  # where each clique column's sums are
    forest: Forest  # the open cliques
    frontier: dict[int, FrontierFrame]  # frames a later point may still link to

    def check_order(self, point_id: int) -> None:
        """ValueError unless `point_id` is the point expected next."""

    def union(self, cand: dict[str, np.ndarray]) -> None:
        """Union the candidate pairs the rule keeps."""

    def drop_frontier(self, last: int) -> None:
        """Forget the frames no point after `last` links to."""

    def emit(self, step: int, by_close_at: bool) -> tuple[dict, dict]:
        """The cliques (and their members) that close by `step`."""


class BlockPath:
    """A linker's block path: links a `PeakBlock` through the linker's state and steps
    (`LinkSteps`), as that many `add_point` calls would."""

    def __init__(self, linker: LinkSteps):
        self.linker = linker

    def add(self, block: PeakBlock) -> LinkResult:
        """Link consecutive points at once: the same result as one add_point per point,
        with the cliques closed in the same order."""
        self.linker.check_order(block.first)
        last = block.first + block.n - 1
        offset = self.linker.npeaks
        runs, run_ptr, npx, ints, int_ptr, peak_key, peak_h, point_close = \
            self._check_block(block)
        with_peaks = np.flatnonzero(block.npeaks > 0)
        overlaps = empty_table(OVERLAP_COLUMNS)
        if with_peaks.shape[0]:
            peak_ptr = np.zeros(block.n + 1, np.int64)
            np.cumsum(block.npeaks, out=peak_ptr[1:])
            points = block.first + with_peaks
            per_peak = np.repeat(np.arange(block.n), block.npeaks)
            values = {}
            for m in self.linker.cols.motors:
                v = block.motors.get(m)
                values[m] = (np.asarray(v, np.float64)[per_peak] if v is not None else
                             np.full(per_peak.shape[0], np.nan))
            factors = self.linker.cols.factors(values)
            self.linker.forest.append(offset, block.first + per_peak, point_close[per_peak],
                                [block.peaks[name] for name in ACC],
                                (block.first + per_peak).astype(np.float64),
                                factors, peak_h if self.linker.splitting else None)
            if self.linker.separating:
                if block.intensity is None and block.row.shape[0]:
                    raise ValueError("linker: split pixels needs the pixels' intensities "
                                     "(PeakBlock.intensity)")
                self.linker.pool.append(offset, block.first + per_peak, factors, block.nnz,
                                        block.npeaks, block.row, block.col, block.label,
                                        block.intensity)
            self.linker.npeaks += int(peak_ptr[-1])
            frames = self._frames(block, points, runs, run_ptr, ints, int_ptr, npx, peak_key,
                                  peak_h, peak_ptr, point_close, offset)
            overlaps = self._link(frames, self._frame_pairs(block, frames, points))
            self._keep_frontier(frames, points, last)
        self.linker.next_point = last + 1
        self.linker.drop_frontier(last)
        cliques, members = self.linker.emit(last, True)
        return LinkResult(last, offset, overlaps, cliques, members)

    def _check_block(self, block: PeakBlock):
        """The runs of the labelled pixels (and their intensities, to split), pixels per
        peak, and each point's close step."""
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
            if self.linker.shape is not None and shape != self.linker.shape:
                raise ValueError(f"linker: point {block.first} frame shape {shape} differs "
                                 f"from the scan's {self.linker.shape}")
            self.linker.shape = shape
        intensity = NO_INT
        if self.linker.splitting:
            if block.intensity is None and block.row.shape[0]:
                raise ValueError("linker: split needs the pixels' intensities "
                                 "(PeakBlock.intensity)")
            if block.intensity is not None:
                intensity = np.asarray(block.intensity, np.float32)
        pixel_ptr = np.zeros(block.n + 1, np.int64)
        np.cumsum(block.nnz, out=pixel_ptr[1:])
        runs, run_ptr, npx, status, ints, int_ptr, peak_key, peak_h = frame_runs(
            block.row, block.col, block.label, intensity, pixel_ptr, npeaks,
            self.linker.shape[1] if self.linker.shape else 1)
        for k in np.flatnonzero(status)[:1]:
            what = ("pixels are not raster-sorted" if status[k] == 1 else
                    f"has labels above npeaks={npeaks[k]}")
            raise ValueError(f"linker: point {block.first + k}: {what}")
        if block.close_at is not None:
            point_close = np.asarray(block.close_at, np.int64)
        else:
            point_close = np.full(block.n, -1, np.int64)
            traj = self.linker.trajectory
            for k in np.flatnonzero(npeaks > 0).tolist():
                p = block.first + k
                point_close[k] = max(int(traj.last_neighbour(p)), p)
        return runs, run_ptr, npx, ints, int_ptr, peak_key, peak_h, point_close

    def _frames(self, block, points, runs, run_ptr, ints, int_ptr, npx, peak_key, peak_h,
                peak_ptr, point_close, offset) -> dict[str, Any]:
        """Frame slots: the frontier frames, then the block's points with peaks (a point
        without peaks has no runs), their runs and per-peak arrays concatenated."""
        old = [self.linker.frontier[p] for p in sorted(self.linker.frontier)]
        k = points - block.first
        npeaks = block.npeaks[k]
        s_raw = np.asarray(block.peaks["s_raw"], np.float64)
        f_raw = np.asarray(block.peaks["f_raw"], np.float64)
        new = {"npx": npx, "s_raw": s_raw, "f_raw": f_raw, "peak_key": peak_key,
               "peak_h": peak_h, "runs": runs, "intensity": ints}
        old_runs = np.array([0, *(f.runs.shape[0] for f in old)], np.int64).cumsum()
        old_int = np.array([0, *(f.intensity.shape[0] for f in old)], np.int64).cumsum()
        if old:
            npx = np.concatenate([*(f.npx for f in old), npx])
            s_raw = np.concatenate([*(f.s_raw for f in old), s_raw])
            f_raw = np.concatenate([*(f.f_raw for f in old), f_raw])
            runs = np.concatenate([*(f.runs for f in old), runs])
            if self.linker.splitting:
                peak_key = np.concatenate([*(f.peak_key for f in old), peak_key])
                peak_h = np.concatenate([*(f.peak_h for f in old), peak_h])
                ints = np.concatenate([*(f.intensity for f in old), ints])
        all_run_ptr = np.r_[old_runs[:-1], old_runs[-1] + run_ptr[k], runs.shape[0]]
        all_int_ptr = np.r_[old_int[:-1], old_int[-1] + int_ptr[k], ints.shape[0]]
        all_npeaks = np.array([*(f.npx.shape[0] for f in old), *npeaks], np.int64)
        peak_ptr_all = np.zeros(all_npeaks.shape[0] + 1, np.int64)
        np.cumsum(all_npeaks, out=peak_ptr_all[1:])
        gid0 = np.array([*(f.peak_offset for f in old), *(offset + peak_ptr[k])], np.int64)
        slot = {f.point_id: i for i, f in enumerate(old)}
        slot.update(zip(points.tolist(), range(len(old), len(old) + points.shape[0]),
                        strict=True))
        return {"runs": runs, "run_ptr": all_run_ptr.astype(np.int64),
                "intensity": ints, "int_ptr": all_int_ptr.astype(np.int64),
                "npeaks": all_npeaks, "peak_ptr": peak_ptr_all, "gid0": gid0, "npx": npx,
                "s_raw": s_raw, "f_raw": f_raw, "slot": slot, "peak_key": peak_key,
                "peak_h": peak_h, "nold": len(old), "new": new,
                "new_peak0": int(peak_ptr_all[len(old)]),
                "new_run0": int(old_runs[-1]), "new_int0": int(old_int[-1]),
                "close_at": np.array([*(f.close_at for f in old), *point_close[k]], np.int64)}

    def _frame_pairs(self, block: PeakBlock, frames: dict[str, Any],
                     points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame slots (earlier, later) to overlap: each new point with peaks and its
        neighbours before it that have peaks, point after point, neighbours increasing."""
        slot = frames["slot"]
        if block.links is None:
            fa, fb = [], []
            traj = self.linker.trajectory
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
            return empty_table(OVERLAP_COLUMNS)
        pair, la, lb, npixels, saddle = overlaps_block(
            frames["runs"], frames["run_ptr"], frames["intensity"], frames["int_ptr"],
            frames["npeaks"], frames["peak_ptr"], frames["peak_key"], frames["peak_h"],
            self.linker.shape[1], self.linker.splitting, fa, fb)
        ia = frames["peak_ptr"][fa[pair]] + la - 1  # rows of the frames' peak arrays
        ib = frames["peak_ptr"][fb[pair]] + lb - 1
        npx = frames["npx"]
        smaller = np.minimum(npx[ia], npx[ib])
        overlaps = {"peak_a": frames["gid0"][fa[pair]] + la - 1,
                    "peak_b": frames["gid0"][fb[pair]] + lb - 1,
                    "npixels": npixels, "score": (npixels / smaller).astype(np.float32)}
        if not self.linker.rule.needs_overlap:  # distance alone: pairs by centroid
            pair, la, lb = pairs_within_block(frames["s_raw"], frames["f_raw"],
                                              frames["peak_ptr"], fa, fb, self.linker.rule.distance)
            ia = frames["peak_ptr"][fa[pair]] + la - 1
            ib = frames["peak_ptr"][fb[pair]] + lb - 1
            npixels = np.zeros(ia.shape[0], np.int32)
            saddle = np.full(ia.shape[0], np.inf)
        self.linker.union({"npixels": npixels, "npx_a": npx[ia], "npx_b": npx[ib],
                     "s_a": frames["s_raw"][ia], "f_a": frames["f_raw"][ia],
                     "s_b": frames["s_raw"][ib], "f_b": frames["f_raw"][ib],
                     "saddle": saddle, "gid_a": frames["gid0"][fa[pair]] + la - 1,
                     "gid_b": frames["gid0"][fb[pair]] + lb - 1})
        return {k: np.asarray(v).astype(dt, copy=False) for (k, v), dt in
                zip(overlaps.items(), OVERLAP_COLUMNS.values(), strict=True)}

    def _keep_frontier(self, frames: dict[str, Any], points: np.ndarray, last: int) -> None:
        """Keep the new frames that a later point may still link to."""
        nold = frames["nold"]
        new = frames["new"]  # the block's own arrays: a frame that is all of them
        p0, r0, i0 = frames["new_peak0"], frames["new_run0"], frames["new_int0"]  # is kept
        split = self.linker.splitting  # without a copy
        for n, p in enumerate(points.tolist()):
            s = nold + n
            close_at = int(frames["close_at"][s])
            if close_at <= last:
                continue
            pp = slice(int(frames["peak_ptr"][s]) - p0, int(frames["peak_ptr"][s + 1]) - p0)
            rp = slice(int(frames["run_ptr"][s]) - r0, int(frames["run_ptr"][s + 1]) - r0)
            ip = slice(int(frames["int_ptr"][s]) - i0, int(frames["int_ptr"][s + 1]) - i0)
            self.linker.frontier[p] = FrontierFrame(
                p, _part(new["runs"], rp), int(frames["gid0"][s]), _part(new["npx"], pp),
                _part(new["s_raw"], pp), _part(new["f_raw"], pp), close_at,
                _part(new["intensity"], ip) if split else NO_INT,
                _part(new["peak_key"], pp) if split else NO_KEY,
                _part(new["peak_h"], pp) if split else NO_H)


def _part(a: np.ndarray, s: slice) -> np.ndarray:
    """a[s], copied unless it is all of a (so a kept frame does not pin a whole block)."""
    return a if s.start == 0 and s.stop == a.shape[0] else a[s].copy()
