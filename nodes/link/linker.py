"""The incremental linker: joins 2D peaks on neighbouring points into cliques.

Points arrive in `point_id` order, one at a time (`add_point`, live) or as a
block of consecutive points (`add_block`, replay of sparse files: the same
kernels and the same result, with far less Python per point). Each point is
overlapped with its neighbours before it that are still in the frontier
(a merge-join of the runs of their labelled pixels, `kernels.overlap`; the
label node's runs when the frame brings them, `SparseFrame.runs`), the
pairs that the criteria (`nodes.criteria`) keep are unioned, and every clique
that no point to come can reach is closed and returned at once, in the order
the point-by-point steps close them. Memory holds only the frontier frames
(as runs, `nodes.frontier`) and the peaks of open cliques (`nodes.forest`);
`state()` / `restore()` carry both across a restart. The block path is in
`nodes.link.block`, the output tables in `nodes.link.cliques`.

`split = "pixels"` divides each closing clique's pixels between the spots it
holds (`nodes.link.separate`; `background`, the level under the spots in the
pixel values, is taken off for their fitted intensity). `split = "local_max"`
splits each clique as it closes at its significant maxima in 3D: its 2D peaks
are nodes with their maximum intensity, its links edges with their saddle
(`kernels.overlap.overlap_runs`: the highest min(I_a, I_b) over the pixels the
two peaks share, or the lower maximum when the two peak pixels are within a
pixel of each other); a part whose maximum stands above its highest saddle to
a higher part by at least max(prominence * peak, prominence_sigma * sqrt(peak
+ saddle)) stays a clique of its own (a watershed at the level of 2D peaks,
`significant`). With the label node's local-maximum split this parts spots
that merely touch, in the frame or along the rocking curve, and keeps one spot
seen on several passes or turns whole. Links made without a shared pixel (the
distance criterion alone) never split.

Clique centroids in the scan's motors are intensity-weighted means; a motor
the trajectory declares periodic (`trajectory.period`, omega 360 in a scan
that wraps) gets the circular mean in [0, period) (`nodes.cliques`), so a
clique across the wrap sits at its true angle. `point` is the
intensity-weighted mean of the members' point ids: a position along the scan
only for scans that neither wrap nor turn more than once (use the motor
columns there).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from nodes.kernels.linking import link_frames
from nodes.kernels.runs import RUN_COLUMNS, frame_runs, runs_npx
from nodes.link.block import BlockPath, PeakBlock
from nodes.link.cliques import ACC, OVERLAP_COLUMNS, CliqueColumns, LinkResult, empty_table
from nodes.link.criteria import CRITERIA, Rule
from nodes.link.forest import Forest
from nodes.link.frontier import (
    NO_H,
    NO_INT,
    NO_KEY,
    FrontierFrame,
    distance_links,
    frontier_from,
    frontier_state,
    joined_frames,
    plain,
)
from nodes.link.separate import Background, PixelPool, Separator
from nodes.link.warmup import readonly_frame, readonly_peaks, warm_separation
from stream.core.item import SparseFrame
from stream.core.scan import Scan

_NEVER = np.iinfo(np.int64).max
SPLITS = ("none", "local_max", "pixels")

__all__ = ["CRITERIA", "SPLITS", "FrontierFrame", "Linker", "LinkResult", "PeakBlock"]


class Linker:
    """Incremental linker of 2D peaks into cliques (3D peaks) along the trajectory."""

    kind: ClassVar[str] = "linker"

    def __init__(self, *, criterion: str | list[str] = "any_pixel", fraction: float = 0.2,
                 distance: float = 3.0, split: str = "none", prominence: float = 0.1,
                 prominence_sigma: float = 3.0, background: float = 0.0):
        self.rule = Rule(criterion, fraction=fraction, distance=distance)
        self.criterion = criterion
        if split not in SPLITS:
            raise ValueError(f"linker split {split!r} is not supported "
                             f"(choices: {', '.join(SPLITS)})")
        for name, value in (("prominence", prominence), ("prominence_sigma", prominence_sigma),
                            ("background", background)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value < np.inf:
                raise ValueError(f"linker {name} must be a number >= 0, got {value!r}")
        self.split = split
        self.background = float(background)
        self.prominence = float(prominence)
        self.prominence_sigma = float(prominence_sigma)
        self.trajectory: Any = None  # the scan's trajectory, from setup(scan)
        self.block_path = BlockPath(self)  # add_block: the linker's state, block-wise
        self._background: Background | None = None  # separate_in_background()

    def setup(self, scan: Scan) -> None:
        """Forget everything and prepare for a new scan."""
        self.trajectory = scan.trajectory
        self.cols = CliqueColumns(list(scan.start.motors),
                                   getattr(scan.trajectory, "period", None) or {})
        self.splitting = self.split == "local_max"
        self.separating = self.split == "pixels"
        self.pool = PixelPool(self.cols.nacc - len(ACC) - 1)
        self.separator = Separator(background=self.background)
        names = self.rule.names  # link_frames' criteria (< 0: not used)
        self._fraction = self.rule.fraction if "fraction" in names else -1.0
        self._distance = self.rule.distance if "distance" in names else -1.0
        self.next_point = 0
        self.shape: tuple[int, int] | None = None
        self.npeaks = 0
        self._nclosed = 0
        self._finished = False
        self.frontier: dict[int, FrontierFrame] = {}
        self.forest = Forest(self.cols.nacc)
        if self._background is not None:  # a scan given up: its closings go too
            self._background.cancel()
        if self.separating and not Linker._separation_warm:
            # the separation runs on the first crowded clique, maybe deep in a scan:
            # compile it now (the warm-up scan's spots need not be crowded enough)
            Linker._separation_warm = True
            warm_separation()

    _separation_warm: ClassVar[bool] = False

    # ------------------------------------------------------------ per point

    def add_point(self, point_id: int, sparse: SparseFrame | None,
                  peaks: dict[str, np.ndarray] | None, motors: dict[str, float]) -> LinkResult:
        """Link one point to its neighbours before it; return what closed.

        The same kernels and the same result as `add_block` with one point,
        without the block's bookkeeping: each neighbour frame is overlapped
        with this one directly (no concatenation of the frontier)."""
        self.check_order(point_id)
        offset = self.npeaks
        overlaps = None
        # one array kind for the kernels whoever made the arrays (a worker thread, the
        # wire): numba compiles read-only and writeable arrays apart
        sparse, peaks = readonly_frame(sparse), readonly_peaks(peaks)
        if sparse is not None:
            if sparse.label is None or peaks is None:
                raise ValueError(f"linker: point {point_id} needs a labelled frame and its peaks")
            npeaks = int(sparse.npeaks)
            nrows = len(peaks["npx"]) if peaks else 0
            if nrows != npeaks:
                raise ValueError(f"linker: point {point_id} has {npeaks} labels but "
                                 f"{nrows} peak rows")
            shape = (int(sparse.shape[0]), int(sparse.shape[1]))
            if self.shape is not None and shape != self.shape:
                raise ValueError(f"linker: point {point_id} frame shape {shape} differs "
                                 f"from the scan's {self.shape}")
            self.shape = shape
            runs = None if self.splitting else sparse.runs
            if runs is not None:  # the label node's runs: no pass over the pixels
                if runs.dtype != np.int32 or runs.ndim != 2 or runs.shape[1] != RUN_COLUMNS:
                    raise ValueError(f"linker: point {point_id}: runs are {runs.dtype} "
                                     f"{list(runs.shape)}, not int32 [n, {RUN_COLUMNS}]")
                runs = np.ascontiguousarray(runs)
                npx, status = runs_npx(runs, npeaks)
                ints, peak_key, peak_h = NO_INT, NO_KEY, NO_H
            else:
                runs, _, npx, status, ints, _, peak_key, peak_h = frame_runs(
                    sparse.row, sparse.col, sparse.label,
                    sparse.intensity if self.splitting else NO_INT,
                    np.array([0, sparse.nnz], np.int64), np.array([npeaks], np.int64),
                    shape[1])
                status = status[0]
            if status:
                what = ("pixels are not raster-sorted" if status == 1 else
                        f"has labels above npeaks={npeaks}")
                raise ValueError(f"linker: point {point_id}: {what}")
            if npeaks:
                overlaps = self._add_frame(point_id, runs, ints, npx, peak_key, peak_h, peaks,
                                           motors, offset)
                if self.separating:
                    self.pool.append_frame(offset, point_id, sparse,
                                           self.cols.point_factors(motors))
        self.next_point = point_id + 1
        self.drop_frontier(point_id)
        cliques, members = self.emit(point_id, True)
        return LinkResult(point_id, offset,
                          empty_table(OVERLAP_COLUMNS) if overlaps is None else overlaps,
                          cliques, members)

    def skip(self, first: int, stop: int) -> LinkResult:  # a gap: add_point(p, None) each
        self.check_order(first)
        offset, self.next_point, last = self.npeaks, stop, stop - 1
        self.drop_frontier(last)
        return LinkResult(last, offset, empty_table(OVERLAP_COLUMNS), *self.emit(last, True))

    def add_block(self, block: PeakBlock) -> LinkResult:
        """Link consecutive points at once: the same result as one add_point per point,
        with the cliques closed in the same order (`nodes.link.block`)."""
        return self.block_path.add(block)

    def _add_frame(self, p: int, runs, ints, npx, peak_key, peak_h, peaks, motors,
                   offset: int) -> dict[str, np.ndarray]:
        """One point with peaks: append its peaks, link them to the frontier frames of
        its neighbours before it, keep the frame if a later point may link to it."""
        traj = self.trajectory
        close_at = max(int(traj.last_neighbour(p)), p)
        self.forest.append(offset, p, close_at, [peaks[name] for name in ACC],
                            np.array([float(p)]), self.cols.point_factors(motors),
                            peak_h if self.splitting else None)
        self.npeaks += npx.shape[0]
        s_raw = np.asarray(peaks["s_raw"], np.float64)
        f_raw = np.asarray(peaks["f_raw"], np.float64)
        frontier = self.frontier
        olds = [frontier[j] for j in sorted(set(traj.neighbours_before(p))) if j in frontier]
        overlaps = None
        if olds and self.rule.needs_overlap:
            forest = self.forest
            *ov, gid_a, gid_b, saddle = link_frames(
                *joined_frames(olds), runs, ints, peak_key, peak_h, npx, s_raw, f_raw, offset,
                self.shape[1], self.splitting, self._fraction, self._distance, forest.gid,
                forest.n, forest.parent, forest.close_at, forest.size, forest.next_member)
            overlaps = dict(zip(OVERLAP_COLUMNS, ov, strict=True))
            if self.splitting and gid_a.shape[0]:
                forest.add_edges(gid_a, gid_b, saddle)
        elif olds:  # distance alone: pairs by centroid
            overlaps, cand = distance_links(olds, runs, npx, s_raw, f_raw, offset,
                                            self.shape[1], self.rule.distance)
            self.union(cand)
        if close_at > p:
            frontier[p] = FrontierFrame(p, runs, offset, npx, s_raw, f_raw, close_at, ints,
                                        peak_key, peak_h)
        return overlaps if overlaps is not None else empty_table(OVERLAP_COLUMNS)

    def union(self, cand: dict[str, np.ndarray]) -> None:
        """Union the candidate pairs the rule keeps (and keep them as edges to split)."""
        keep = self.rule.keep(cand)
        ga, gb, saddle = cand["gid_a"][keep], cand["gid_b"][keep], cand["saddle"][keep]
        if not ga.shape[0]:
            return
        self.forest.union_gids(ga, gb)
        if self.splitting:
            self.forest.add_edges(ga, gb, saddle)

    def drop_frontier(self, last: int) -> None:
        frontier = self.frontier
        for p in [p for p, f in frontier.items() if f.close_at <= last]:
            del frontier[p]

    def finish(self) -> LinkResult:
        """Close every clique still open (end of scan)."""
        if self.trajectory is None or self._finished:
            raise ValueError("linker: finish() needs setup() and may be called once per scan")
        self._finished = True
        cliques, members = self.emit(_NEVER, False)
        if self._background is not None:
            self._background.cancel()  # nothing is left under way: the thread ends
        self.frontier.clear()
        return LinkResult(-1, self.npeaks, empty_table(OVERLAP_COLUMNS), cliques, members)

    # ------------------------------------------------------------ checkpoint

    STATE_VERSION: ClassVar[int] = 1

    def params(self) -> dict[str, Any]:
        """The parameters that decide the output (part of `state()`)."""
        return {"criterion": ",".join(self.rule.names), "fraction": self.rule.fraction,
                "distance": self.rule.distance, "split": self.split,
                "prominence": self.prominence, "prominence_sigma": self.prominence_sigma,
                "background": self.background}

    def state(self) -> dict[str, Any]:
        """Everything needed to go on linking after the last point added, as plain values.

        str keys; values are numpy arrays, Python int / float / str / bool or
        dicts of those (no pickle needed: HDF5 or msgpack). Holds the
        parameters, the scan's motors and periods, the counters, the frontier
        frames (their runs of labelled pixels and per-peak arrays concatenated,
        with per-frame pointers) and the open cliques' slots and edges
        (`Forest.state`): the frontier only, never the scan.
        """
        if self.trajectory is None:
            raise ValueError("linker: state() needs setup(scan) first")
        if self.pending:
            raise ValueError("linker: drain() the background separation before state()")
        shape = self.shape if self.shape is not None else (-1, -1)
        return {"kind": self.kind, "version": self.STATE_VERSION, "params": self.params(),
                "motors": json.dumps(self.cols.motors), "period": dict(self.cols.period),
                "next_point": self.next_point, "npeaks": self.npeaks,
                "nclosed": self._nclosed, "finished": self._finished,
                "shape0": int(shape[0]), "shape1": int(shape[1]),
                "frontier": frontier_state(self.frontier), "forest": self.forest.state(),
                "pixels": self.pool.state(), "fit_failed": self.separator.nfit_failed}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`: call after `setup(scan)` on a linker built with the
        same parameters, for the same scan. ValueError if the state does not fit."""
        if self.trajectory is None:
            raise ValueError("linker: call setup(scan) before restore(state)")
        try:
            self._restore(state)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"linker state is malformed: {type(exc).__name__}: {exc}") from exc

    def _restore(self, state: dict[str, Any]) -> None:
        if state["kind"] != self.kind or int(state["version"]) != self.STATE_VERSION:
            raise ValueError(f"linker state: kind {state['kind']!r} version "
                             f"{state['version']!r}, expected {self.kind!r} version "
                             f"{self.STATE_VERSION}")
        mine = self.params()
        theirs = {k: plain(v) for k, v in dict(state["params"]).items()}
        differ = [f"{k}: state {theirs.get(k)!r}, linker {v!r}" for k, v in mine.items()
                  if theirs.get(k) != v]
        differ += [f"{k}: state {v!r}, linker has none" for k, v in theirs.items()
                   if k not in mine]
        if differ:
            raise ValueError("linker state was taken with other parameters ("
                             + "; ".join(differ) + ")")
        motors = json.loads(plain(state["motors"]))
        period = {k: float(v) for k, v in dict(state["period"]).items()}
        cols = self.cols
        if motors != cols.motors or period != cols.period:
            raise ValueError(f"linker state is for motors {motors} (periods {period}), this "
                             f"scan has {cols.motors} (periods {cols.period})")
        forest = Forest.from_state(state["forest"])
        if forest.nacc != self.forest.nacc:
            raise ValueError(f"linker state: {forest.nacc} accumulator columns, expected "
                             f"{self.forest.nacc}")
        shape = (int(state["shape0"]), int(state["shape1"]))
        self.frontier = frontier_from(state["frontier"], self.splitting)
        if self.frontier and shape[0] < 0:
            raise ValueError("linker state: frontier frames without a frame shape")
        self.forest = forest
        self.pool = PixelPool.from_state(state["pixels"])
        self.shape = None if shape[0] < 0 else shape
        self.next_point, self.npeaks = int(state["next_point"]), int(state["npeaks"])
        self.separator.nfit_failed = int(state.get("fit_failed", 0))  # (older states: none)
        self._nclosed = int(state["nclosed"])
        self._finished = bool(state["finished"])

    # --------------------------------------------------------- introspection

    def frontier_points(self) -> list[int]:
        """Points whose sparse frames are still kept."""
        return sorted(self.frontier)

    def open_peaks(self) -> int:
        """2D peaks in open cliques held in memory."""
        return self.forest.nlive

    # -------------------------------------------------------------- helpers

    def check_order(self, point_id: int) -> None:
        if self.trajectory is None:
            raise ValueError("linker: call setup(scan) before add_point()")
        if self._finished:
            raise ValueError(f"linker: point {point_id} after finish()")
        if point_id != self.next_point:
            raise ValueError(f"linker: expected point {self.next_point}, got {point_id} "
                             "(points must come once each, in order, from 0)")

    def emit(self, step: int, by_close_at: bool):
        """The cliques that close by `step` (kernels.unionfind.close_step), as tables.
        With the separation in the background, those of earlier steps whose separation
        is done instead (in the order they closed; all of them at finish())."""
        closed = self.forest.close(step, by_close_at, self.cols.table_cols,
                                   (self.prominence, self.prominence_sigma) if self.splitting
                                   else None)
        if not self.separating:
            return self._numbered([closed])
        if self._background is None:
            return self._numbered([self.separator.apply(closed, self.pool,
                                                      self.cols.table_cols)])
        self._background.submit(self.separator, closed, self.pool, self.cols.table_cols)
        return self._numbered(self._background.done(wait_all=not by_close_at))

    def separate_in_background(self, threads: int | None = None) -> None:
        """Run split "pixels"' separation (the heavy part of a closing) in threads of
        its own (`separate.Background`), so a point's linking does not wait for it:
        its cliques come out with a later step's result, in the same order and with
        the same ids. `drain()` before `state()`. A no-op for other splits."""
        if self.split == "pixels" and self._background is None:
            self._background = Background(threads)

    def drain(self) -> LinkResult:
        """The cliques whose separation is still running, once it is done (nothing
        pending after it, so `state()` may be taken)."""
        done = self._background.done(wait_all=True) if self._background else []
        return LinkResult(-1, self.npeaks, empty_table(OVERLAP_COLUMNS), *self._numbered(done))

    def _numbered(self, closed: list[tuple]) -> tuple[dict, dict]:
        cliques, members = self.cols.tables_of(closed, self._nclosed)
        self._nclosed += cliques["clique_id"].shape[0]
        return cliques, members

    @property
    def pending(self) -> int:
        """Closings whose cliques the background separation has not given back yet."""
        return len(self._background.pending) if self._background else 0


