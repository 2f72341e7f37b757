"""The incremental linker: joins 2D peaks on neighbouring points into cliques.

Points arrive in `point_id` order, one at a time (`add_point`, live) or as a
block of consecutive points (`add_block`, replay of sparse files: the same
kernels and the same result, with far less Python per point). Each point is
overlapped with its neighbours before it that are still in the frontier
(a merge-join of the runs of their labelled pixels, `kernels.overlap`), the
pairs that the criteria (`nodes.criteria`) keep are unioned, and every clique
that no point to come can reach is closed and returned at once, in the order
the point-by-point steps close them. Memory holds only the frontier frames
(as runs) and the peaks of open cliques; `state()` / `restore()` carry both
across a restart.

`split = "local_max"` splits each clique as it closes at its significant
maxima in 3D: its 2D peaks are nodes with their maximum intensity, its links
edges with their saddle (`kernels.overlap.overlap_runs`: the highest
min(I_a, I_b) over the pixels the two peaks share, or the lower maximum when
the two peak pixels are within a pixel of each other); a part whose maximum
stands above its highest saddle to a higher part by at least
max(prominence * peak, prominence_sigma * sqrt(peak + saddle)) stays a
clique of its own (a watershed at the level of 2D peaks, `significant`).
With the label node's local-maximum split this parts spots that merely
touch, in the frame or along the rocking curve, and keeps one spot seen on
several passes or turns whole. Links made without a shared pixel (the
distance criterion alone) never split.

Clique centroids in the scan's motors are intensity-weighted means; a motor
the trajectory declares periodic (`trajectory.period`, omega 360 in a scan
that wraps) gets the circular mean in [0, period) (`circular_centroid`), so a
clique across the wrap sits at its true angle. `point` is the
intensity-weighted mean of the members' point ids: a position along the scan
only for scans that neither wrap nor turn more than once (use the motor
columns there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from stream.item import MOMENT_COLUMNS, SparseFrame
from stream.scan import Scan
from stream.trajectory import circular_centroid

from .criteria import CRITERIA, Rule
from .forest import Forest
from .kernels.overlap import (
    RUN_COLUMNS,
    frame_runs,
    link_frames,
    overlap_pairs,
    overlaps_block,
    pairs_within,
    pairs_within_block,
    runs_npx,
)

OVERLAP_COLUMNS = {"peak_a": np.int64, "peak_b": np.int64, "npixels": np.int32,
                   "score": np.float32}
MEMBER_COLUMNS = {"peak_id": np.int64, "clique_id": np.int64}
# Additive columns summed over a clique's members (then the intensity-weighted
# point, s_I * point, and per motor s_I * value, or s_I * cos and s_I * sin of
# 2 pi value / period for a periodic one).
_ACC = ("npx", "sum_intensity", *MOMENT_COLUMNS)
_S_I = _ACC.index("s_I")
_NEVER = np.iinfo(np.int64).max
SPLITS = ("none", "local_max")
_NO_INT = np.empty(0, np.float32)
_NO_KEY = np.empty(0, np.int64)
_NO_H = np.empty(0, np.float64)
_NO_RUNS = np.empty((0, RUN_COLUMNS), np.int32)
# clique_table: the columns copied (sum_intensity, the moments), then the intensity-
# weighted means (s_raw, f_raw, point, then the motors that are not periodic)
_COPY_COLS = np.array([_ACC.index(k) for k in ("sum_intensity", *MOMENT_COLUMNS)], np.int64)
_NCOPY = _COPY_COLS.shape[0]

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
    runs: np.ndarray  # int32 (nruns, RUN_COLUMNS): runs of labelled pixels (kernels.overlap)
    peak_offset: int
    npx: np.ndarray  # int64 pixels per peak (index label - 1)
    s_raw: np.ndarray  # float64 centroids per peak, for centroid criteria
    f_raw: np.ndarray
    close_at: int = 0  # the step after which no point links to it
    # split only (else empty): float32 per labelled pixel (RUN_PX indexes it); per peak
    # its highest pixel's raster key and value (kernels.overlap.frame_runs)
    intensity: np.ndarray = field(default_factory=lambda: _NO_INT)
    peak_key: np.ndarray = field(default_factory=lambda: _NO_KEY)
    peak_h: np.ndarray = field(default_factory=lambda: _NO_H)


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


class Linker:
    """Incremental linker of 2D peaks into cliques (3D peaks) along the trajectory."""

    kind: ClassVar[str] = "linker"

    def __init__(self, *, criterion: str | list[str] = "any_pixel", fraction: float = 0.2,
                 distance: float = 3.0, split: str = "none", prominence: float = 0.1,
                 prominence_sigma: float = 3.0):
        self.rule = Rule(criterion, fraction=fraction, distance=distance)
        self.criterion = criterion
        if split not in SPLITS:
            raise ValueError(f"linker split {split!r} is not supported "
                             f"(choices: {', '.join(SPLITS)})")
        for name, value in (("prominence", prominence), ("prominence_sigma", prominence_sigma)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value < np.inf:
                raise ValueError(f"linker {name} must be a number >= 0, got {value!r}")
        self.split = split
        self.prominence = float(prominence)
        self.prominence_sigma = float(prominence_sigma)
        self.trajectory: Any = None  # the scan's trajectory, from setup(scan)

    def setup(self, scan: Scan) -> None:
        """Forget everything and prepare for a new scan."""
        self.trajectory = scan.trajectory
        self._motors = list(scan.start.motors)
        clash = set(self._motors) & set(_clique_dtypes([]))
        if clash:
            raise ValueError(f"motor names {sorted(clash)} clash with clique columns")
        period = getattr(scan.trajectory, "period", None) or {}
        self._period = {m: float(period[m]) for m in self._motors if m in period}
        # accumulator columns per motor: s_I * x, or s_I * cos and s_I * sin (periodic)
        self._motor_col: dict[str, int] = {}
        col = len(_ACC) + 1
        for m in self._motors:
            self._motor_col[m] = col
            col += 2 if m in self._period else 1
        self._split = self.split != "none"
        names = self.rule.names  # link_frames' criteria (< 0: not used)
        self._fraction = self.rule.fraction if "fraction" in names else -1.0
        self._distance = self.rule.distance if "distance" in names else -1.0
        linear = [m for m in self._motors if m not in self._period]
        self._table_cols = (_S_I, _COPY_COLS, np.array(
            [_ACC.index("s_sI"), _ACC.index("s_fI"), len(_ACC),
             *(self._motor_col[m] for m in linear)], np.int64))
        self._motor_row = [_NCOPY + 3 + linear.index(m) if m in linear else -1
                           for m in self._motors]
        self._clique_dtypes = _clique_dtypes(self._motors)
        self._next_point = 0
        self._shape: tuple[int, int] | None = None
        self._npeaks = 0
        self._nclosed = 0
        self._finished = False
        self._frontier: dict[int, FrontierFrame] = {}
        self._forest = Forest(col)
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
        labelled = SparseFrame(frame.shape, frame.row, frame.col, frame.intensity, frame.label,
                               1)
        labelled.runs = np.array([[0, 0, 0, 1, 0]], np.int32)  # as the label node gives
        peaks = {k: one.astype(dt) for k, dt in PEAK_COLUMNS.items()}
        for criterion, split, how in (("any_pixel", "none", "point"),
                                      ("any_pixel", "none", "runs"),
                                      ("any_pixel", "none", "block"),
                                      ("distance", "none", "point"),
                                      ("distance", "none", "block"),
                                      ("any_pixel", "local_max", "point"),
                                      ("any_pixel", "local_max", "block")):
            linker = Linker(criterion=criterion, split=split)
            linker.setup(Scan.from_start(Start(
                "warmup", {"d": DetectorInfo((2, 2), "uint16")}, motors=["omega"],
                npoints=2)))
            for i in range(2):
                if how == "block":
                    linker.add_block(PeakBlock.single(i, frame, peaks, {"omega": float(i)}))
                else:
                    linker.add_point(i, labelled if how == "runs" else frame, peaks,
                                     {"omega": float(i)})
            linker.finish()

    # ------------------------------------------------------------ per point

    def add_point(self, point_id: int, sparse: SparseFrame | None,
                  peaks: dict[str, np.ndarray] | None, motors: dict[str, float]) -> LinkResult:
        """Link one point to its neighbours before it; return what closed.

        The same kernels and the same result as `add_block` with one point,
        without the block's bookkeeping: each neighbour frame is overlapped
        with this one directly (no concatenation of the frontier)."""
        self._check_order(point_id)
        offset = self._npeaks
        overlaps = None
        if sparse is not None:
            if sparse.label is None or peaks is None:
                raise ValueError(f"linker: point {point_id} needs a labelled frame and its peaks")
            npeaks = int(sparse.npeaks)
            nrows = len(peaks["npx"]) if peaks else 0
            if nrows != npeaks:
                raise ValueError(f"linker: point {point_id} has {npeaks} labels but "
                                 f"{nrows} peak rows")
            shape = (int(sparse.shape[0]), int(sparse.shape[1]))
            if self._shape is not None and shape != self._shape:
                raise ValueError(f"linker: point {point_id} frame shape {shape} differs "
                                 f"from the scan's {self._shape}")
            self._shape = shape
            runs = None if self._split else getattr(sparse, "runs", None)
            if runs is not None:  # the label node's runs: no pass over the pixels
                npx, status = runs_npx(runs, npeaks)
                ints, peak_key, peak_h = _NO_INT, _NO_KEY, _NO_H
            else:
                runs, _, npx, status, ints, _, peak_key, peak_h = frame_runs(
                    sparse.row, sparse.col, sparse.label,
                    sparse.intensity if self._split else _NO_INT,
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
        self._next_point = point_id + 1
        self._drop_frontier(point_id)
        cliques, members = self._emit(point_id, True)
        return LinkResult(point_id, offset,
                          _empty(OVERLAP_COLUMNS) if overlaps is None else overlaps,
                          cliques, members)

    def _add_frame(self, p: int, runs, ints, npx, peak_key, peak_h, peaks, motors,
                   offset: int) -> dict[str, np.ndarray]:
        """One point with peaks: append its peaks, link them to the frontier frames of
        its neighbours before it, keep the frame if a later point may link to it."""
        traj = self.trajectory
        close_at = max(int(traj.last_neighbour(p)), p)
        if self._period:
            factors = self._factors({m: np.array([float(motors.get(m, np.nan))])
                                     for m in self._motors})
        else:  # one column per motor, its value
            factors = np.array([[float(motors.get(m, np.nan)) for m in self._motors]])
        self._forest.append(offset, p, close_at, [peaks[name] for name in _ACC],
                            np.array([float(p)]), factors, peak_h if self._split else None)
        self._npeaks += npx.shape[0]
        s_raw = np.asarray(peaks["s_raw"], np.float64)
        f_raw = np.asarray(peaks["f_raw"], np.float64)
        frontier = self._frontier
        olds = [frontier[j] for j in sorted(set(traj.neighbours_before(p))) if j in frontier]
        overlaps = None
        if olds and self.rule.needs_overlap:
            forest = self._forest
            *ov, gid_a, gid_b, saddle = link_frames(
                *_joined_frames(olds), runs, ints, peak_key, peak_h, npx, s_raw, f_raw, offset,
                self._shape[1], self._split, self._fraction, self._distance, forest.gid,
                forest.n, forest.parent, forest.close_at, forest.size, forest.next_member)
            overlaps = dict(zip(OVERLAP_COLUMNS, ov, strict=True))
            if self._split and gid_a.shape[0]:
                forest.add_edges(gid_a, gid_b, saddle)
        elif olds:  # distance alone: pairs by centroid
            overlaps = self._link_by_distance(olds, runs, npx, s_raw, f_raw, offset)
        if close_at > p:
            frontier[p] = FrontierFrame(p, runs, offset, npx, s_raw, f_raw, close_at, ints,
                                        peak_key, peak_h)
        return overlaps if overlaps is not None else _empty(OVERLAP_COLUMNS)

    def _link_by_distance(self, olds: list[FrontierFrame], runs, npx, s_raw, f_raw,
                          offset: int) -> dict[str, np.ndarray]:
        """The overlaps with the neighbours' frames (stored, not used), and links between
        the peaks whose centroids are within the distance."""
        parts = []
        for old in olds:
            peak_a, peak_b, npixels, score, _, _, _ = overlap_pairs(
                old.runs, old.npx.shape[0], runs, _NO_INT, _NO_INT, _NO_KEY, _NO_H, _NO_KEY,
                _NO_H, self._shape[1], False, old.peak_offset, offset, old.npx, npx)
            ia, ib = pairs_within(old.s_raw, old.f_raw, s_raw, f_raw, self.rule.distance)
            cand = {"npixels": np.zeros(ia.shape[0], np.int32), "npx_a": old.npx[ia],
                    "npx_b": npx[ib], "s_a": old.s_raw[ia], "f_a": old.f_raw[ia],
                    "s_b": s_raw[ib], "f_b": f_raw[ib], "saddle": np.full(ia.shape[0], np.inf),
                    "gid_a": old.peak_offset + ia, "gid_b": offset + ib}
            parts.append(({"peak_a": peak_a, "peak_b": peak_b, "npixels": npixels,
                           "score": score}, cand))
        overlaps = {k: np.concatenate([pt[k] for pt, _ in parts]) for k in parts[0][0]}
        self._union({k: np.concatenate([c[k] for _, c in parts]) for k in parts[0][1]})
        return overlaps

    def _union(self, cand: dict[str, np.ndarray]) -> None:
        """Union the candidate pairs the rule keeps (and keep them as edges to split)."""
        keep = self.rule.keep(cand)
        ga, gb, saddle = cand["gid_a"][keep], cand["gid_b"][keep], cand["saddle"][keep]
        if not ga.shape[0]:
            return
        self._forest.union_gids(ga, gb)
        if self._split:
            self._forest.add_edges(ga, gb, saddle)

    def _drop_frontier(self, last: int) -> None:
        frontier = self._frontier
        for p in [p for p, f in frontier.items() if f.close_at <= last]:
            del frontier[p]

    def add_block(self, block: PeakBlock) -> LinkResult:
        """Link consecutive points at once: the same result as one add_point per point,
        with the cliques closed in the same order."""
        self._check_order(block.first)
        last = block.first + block.n - 1
        offset = self._npeaks
        runs, run_ptr, npx, ints, int_ptr, peak_key, peak_h, point_close = \
            self._check_block(block)
        with_peaks = np.flatnonzero(block.npeaks > 0)
        overlaps = _empty(OVERLAP_COLUMNS)
        if with_peaks.shape[0]:
            peak_ptr = np.zeros(block.n + 1, np.int64)
            np.cumsum(block.npeaks, out=peak_ptr[1:])
            points = block.first + with_peaks
            per_peak = np.repeat(np.arange(block.n), block.npeaks)
            values = {}
            for m in self._motors:
                v = block.motors.get(m)
                values[m] = (np.asarray(v, np.float64)[per_peak] if v is not None else
                             np.full(per_peak.shape[0], np.nan))
            self._forest.append(offset, block.first + per_peak, point_close[per_peak],
                                [block.peaks[name] for name in _ACC],
                                (block.first + per_peak).astype(np.float64),
                                self._factors(values), peak_h if self._split else None)
            self._npeaks += int(peak_ptr[-1])
            frames = self._frames(block, points, runs, run_ptr, ints, int_ptr, npx, peak_key,
                                  peak_h, peak_ptr, point_close, offset)
            overlaps = self._link(frames, self._frame_pairs(block, frames, points))
            self._keep_frontier(frames, points, last)
        self._next_point = last + 1
        self._drop_frontier(last)
        cliques, members = self._emit(last, True)
        return LinkResult(last, offset, overlaps, cliques, members)

    def finish(self) -> LinkResult:
        """Close every clique still open (end of scan)."""
        if self.trajectory is None or self._finished:
            raise ValueError("linker: finish() needs setup() and may be called once per scan")
        self._finished = True
        cliques, members = self._emit(_NEVER, False)
        self._frontier.clear()
        return LinkResult(-1, self._npeaks, _empty(OVERLAP_COLUMNS), cliques, members)

    # ------------------------------------------------------------ checkpoint

    STATE_VERSION: ClassVar[int] = 1

    def params(self) -> dict[str, Any]:
        """The parameters that decide the output (part of `state()`)."""
        return {"criterion": ",".join(self.rule.names), "fraction": self.rule.fraction,
                "distance": self.rule.distance, "split": self.split,
                "prominence": self.prominence, "prominence_sigma": self.prominence_sigma}

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
        frames = [self._frontier[p] for p in sorted(self._frontier)]
        frontier: dict[str, Any] = {
            "point_id": np.array([f.point_id for f in frames], np.int64),
            "peak_offset": np.array([f.peak_offset for f in frames], np.int64),
            "close_at": np.array([f.close_at for f in frames], np.int64)}
        for ptr, names in _FRONTIER_PARTS.items():
            frontier[ptr] = np.cumsum([0, *(getattr(f, names[0]).shape[0] for f in frames)],
                                      dtype=np.int64)
            for name in names:
                parts = [getattr(f, name) for f in frames]
                empty = _FRONTIER_EMPTY[name]
                frontier[name] = (np.concatenate(parts).astype(empty.dtype, copy=False)
                                  if parts else empty.copy())
        shape = self._shape if self._shape is not None else (-1, -1)
        return {"kind": self.kind, "version": self.STATE_VERSION, "params": self.params(),
                "motors": json.dumps(self._motors), "period": dict(self._period),
                "next_point": self._next_point, "npeaks": self._npeaks,
                "nclosed": self._nclosed, "finished": self._finished,
                "shape0": int(shape[0]), "shape1": int(shape[1]),
                "frontier": frontier, "forest": self._forest.state()}

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
        theirs = {k: _plain(v) for k, v in dict(state["params"]).items()}
        differ = [f"{k}: state {theirs.get(k)!r}, linker {v!r}" for k, v in mine.items()
                  if theirs.get(k) != v]
        differ += [f"{k}: state {v!r}, linker has none" for k, v in theirs.items()
                   if k not in mine]
        if differ:
            raise ValueError("linker state was taken with other parameters ("
                             + "; ".join(differ) + ")")
        motors = json.loads(_plain(state["motors"]))
        period = {k: float(v) for k, v in dict(state["period"]).items()}
        if motors != self._motors or period != self._period:
            raise ValueError(f"linker state is for motors {motors} (periods {period}), this "
                             f"scan has {self._motors} (periods {self._period})")
        forest = Forest.from_state(state["forest"])
        if forest.nacc != self._forest.nacc:
            raise ValueError(f"linker state: {forest.nacc} accumulator columns, expected "
                             f"{self._forest.nacc}")
        shape = (int(state["shape0"]), int(state["shape1"]))
        self._frontier = _frontier_from(state["frontier"], self._split)
        if self._frontier and shape[0] < 0:
            raise ValueError("linker state: frontier frames without a frame shape")
        self._forest = forest
        self._shape = None if shape[0] < 0 else shape
        self._next_point = int(state["next_point"])
        self._npeaks = int(state["npeaks"])
        self._nclosed = int(state["nclosed"])
        self._finished = bool(state["finished"])

    # --------------------------------------------------------- introspection

    def frontier_points(self) -> list[int]:
        """Points whose sparse frames are still kept."""
        return sorted(self._frontier)

    def open_peaks(self) -> int:
        """2D peaks in open cliques held in memory."""
        return self._forest.nlive

    # -------------------------------------------------------------- helpers

    def _check_order(self, point_id: int) -> None:
        if self.trajectory is None:
            raise ValueError("linker: call setup(scan) before add_point()")
        if self._finished:
            raise ValueError(f"linker: point {point_id} after finish()")
        if point_id != self._next_point:
            raise ValueError(f"linker: expected point {self._next_point}, got {point_id} "
                             "(points must come once each, in order, from 0)")

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
            if self._shape is not None and shape != self._shape:
                raise ValueError(f"linker: point {block.first} frame shape {shape} differs "
                                 f"from the scan's {self._shape}")
            self._shape = shape
        intensity = _NO_INT
        if self._split:
            if block.intensity is None and block.row.shape[0]:
                raise ValueError("linker: split needs the pixels' intensities "
                                 "(PeakBlock.intensity)")
            if block.intensity is not None:
                intensity = np.asarray(block.intensity, np.float32)
        pixel_ptr = np.zeros(block.n + 1, np.int64)
        np.cumsum(block.nnz, out=pixel_ptr[1:])
        runs, run_ptr, npx, status, ints, int_ptr, peak_key, peak_h = frame_runs(
            block.row, block.col, block.label, intensity, pixel_ptr, npeaks,
            self._shape[1] if self._shape else 1)
        for k in np.flatnonzero(status)[:1]:
            what = ("pixels are not raster-sorted" if status[k] == 1 else
                    f"has labels above npeaks={npeaks[k]}")
            raise ValueError(f"linker: point {block.first + k}: {what}")
        if block.close_at is not None:
            point_close = np.asarray(block.close_at, np.int64)
        else:
            point_close = np.full(block.n, -1, np.int64)
            traj = self.trajectory
            for k in np.flatnonzero(npeaks > 0).tolist():
                p = block.first + k
                point_close[k] = max(int(traj.last_neighbour(p)), p)
        return runs, run_ptr, npx, ints, int_ptr, peak_key, peak_h, point_close

    def _factors(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Per motor column, what s_I multiplies: the motor's value x, or cos and sin
        of 2 pi x / P for a periodic one (values: per peak, or one for all)."""
        k = next(iter(values.values())).shape[0] if values else 1
        factors = np.empty((k, self._forest.nacc - len(_ACC) - 1), np.float64)
        for name in self._motors:
            c = self._motor_col[name] - len(_ACC) - 1
            period = self._period.get(name)
            if period is None:
                factors[:, c] = values[name]
            else:
                angle = (2 * np.pi / period) * values[name]
                factors[:, c] = np.cos(angle)
                factors[:, c + 1] = np.sin(angle)
        return factors

    def _frames(self, block, points, runs, run_ptr, ints, int_ptr, npx, peak_key, peak_h,
                peak_ptr, point_close, offset) -> dict[str, Any]:
        """Frame slots: the frontier frames, then the block's points with peaks (a point
        without peaks has no runs), their runs and per-peak arrays concatenated."""
        old = [self._frontier[p] for p in sorted(self._frontier)]
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
            if self._split:
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
            traj = self.trajectory
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
        pair, la, lb, npixels, saddle = overlaps_block(
            frames["runs"], frames["run_ptr"], frames["intensity"], frames["int_ptr"],
            frames["npeaks"], frames["peak_ptr"], frames["peak_key"], frames["peak_h"],
            self._shape[1], self._split, fa, fb)
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
            saddle = np.full(ia.shape[0], np.inf)
        self._union({"npixels": npixels, "npx_a": npx[ia], "npx_b": npx[ib],
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
        split = self._split  # without a copy
        for n, p in enumerate(points.tolist()):
            s = nold + n
            close_at = int(frames["close_at"][s])
            if close_at <= last:
                continue
            pp = slice(int(frames["peak_ptr"][s]) - p0, int(frames["peak_ptr"][s + 1]) - p0)
            rp = slice(int(frames["run_ptr"][s]) - r0, int(frames["run_ptr"][s + 1]) - r0)
            ip = slice(int(frames["int_ptr"][s]) - i0, int(frames["int_ptr"][s + 1]) - i0)
            self._frontier[p] = FrontierFrame(
                p, _part(new["runs"], rp), int(frames["gid0"][s]), _part(new["npx"], pp),
                _part(new["s_raw"], pp), _part(new["f_raw"], pp), close_at,
                _part(new["intensity"], ip) if split else _NO_INT,
                _part(new["peak_key"], pp) if split else _NO_KEY,
                _part(new["peak_h"], pp) if split else _NO_H)

    def _emit(self, step: int, by_close_at: bool):
        """The cliques that close by `step` (kernels.unionfind.close_step), as tables."""
        n2d, table, npx, first, last, member_gid, member_clique, sums = self._forest.close(
            step, by_close_at, self._table_cols,
            (self.prominence, self.prominence_sigma) if self._split else None)
        nc = n2d.shape[0]
        if not nc:
            return ({k: np.empty(0, dt) for k, dt in self._clique_dtypes.items()},
                    _empty(MEMBER_COLUMNS))
        cliques = {"clique_id": np.arange(self._nclosed, self._nclosed + nc, dtype=np.int64),
                   "n2d": n2d, "npx": npx, "sum_intensity": table[0],
                   "s_raw": table[_NCOPY], "f_raw": table[_NCOPY + 1]}
        for k, name in enumerate(MOMENT_COLUMNS):
            cliques[name] = table[1 + k]
        cliques["first_point"] = first
        cliques["last_point"] = last
        cliques["point"] = table[_NCOPY + 2]
        for k, name in enumerate(self._motors):
            row = self._motor_row[k]
            if row >= 0:
                cliques[name] = table[row]
            else:
                c = self._motor_col[name]
                cliques[name] = circular_centroid(sums[:, c], sums[:, c + 1],
                                                  self._period[name])
        members = {"peak_id": member_gid, "clique_id": member_clique + self._nclosed}
        self._nclosed += nc
        return cliques, members


# the frontier's arrays in Linker.state(), by the pointer that cuts them into frames
_FRONTIER_PARTS = {"run_ptr": ("runs",), "int_ptr": ("intensity",),
                   "peak_ptr": ("npx", "s_raw", "f_raw", "peak_key", "peak_h")}
_FRONTIER_EMPTY = {"runs": _NO_RUNS, "intensity": _NO_INT, "npx": np.empty(0, np.int64),
                   "s_raw": _NO_H, "f_raw": _NO_H, "peak_key": _NO_KEY, "peak_h": _NO_H}


def _plain(value: Any) -> Any:
    """A scalar read back from HDF5 or msgpack as a Python value (bytes as str)."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _frontier_from(state: dict[str, Any], split: bool) -> dict[int, FrontierFrame]:
    """The frontier frames of Linker.state()'s "frontier" dict (copies)."""
    ints = {k: np.asarray(state[k], np.int64) for k in
            ("point_id", "peak_offset", "close_at", *_FRONTIER_PARTS)}
    arrays = {k: np.asarray(state[k]).astype(e.dtype, copy=False)
              for k, e in _FRONTIER_EMPTY.items()}
    n = ints["point_id"].shape[0]
    for k in ("peak_offset", "close_at"):
        if ints[k].shape != (n,):
            raise ValueError(f"linker state: frontier {k} has {ints[k].shape[0]} entries "
                             f"for {n} frames")
    used = {"run_ptr": ("runs",), "int_ptr": ("intensity",) if split else (),
            "peak_ptr": ("npx", "s_raw", "f_raw", *(("peak_key", "peak_h") if split else ()))}
    for ptr, names in used.items():
        p = ints[ptr]
        if p.shape != (n + 1,) or p[0] != 0 or (np.diff(p) < 0).any() or any(
                arrays[k].shape[0] != p[-1] or arrays[k].shape[1:] != _FRONTIER_EMPTY[k].shape[1:]
                for k in names):
            raise ValueError(f"linker state: frontier {ptr} does not fit its arrays")
    out = {}
    for i, p in enumerate(ints["point_id"].tolist()):
        part = {}
        for ptr, names in used.items():
            s = slice(int(ints[ptr][i]), int(ints[ptr][i + 1]))
            part.update({k: arrays[k][s].copy() for k in names})
        out[p] = FrontierFrame(p, part["runs"], int(ints["peak_offset"][i]), part["npx"],
                               part["s_raw"], part["f_raw"], int(ints["close_at"][i]),
                               part.get("intensity", _NO_INT), part.get("peak_key", _NO_KEY),
                               part.get("peak_h", _NO_H))
    return out


def _joined_frames(olds: list[FrontierFrame]) -> tuple[np.ndarray, ...]:
    """The frames' arrays one after the other, with pointers, as link_frames takes them."""
    if len(olds) == 1:
        o = olds[0]
        return (o.runs, np.array([0, o.runs.shape[0]]), o.intensity,
                np.array([0, o.intensity.shape[0]]), o.peak_key, o.peak_h, o.npx, o.s_raw,
                o.f_raw, np.array([0, o.npx.shape[0]]), np.array([o.peak_offset]))
    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(o, name) for o in olds])

    def ptr(name: str) -> np.ndarray:
        return np.cumsum([0, *(getattr(o, name).shape[0] for o in olds)], dtype=np.int64)

    return (joined("runs"), ptr("runs"), joined("intensity"), ptr("intensity"),
            joined("peak_key"), joined("peak_h"), joined("npx"), joined("s_raw"),
            joined("f_raw"), ptr("npx"), np.array([o.peak_offset for o in olds], np.int64))


def _clique_dtypes(motors: list[str]) -> dict[str, Any]:
    """Columns of the cliques table, in order."""
    cols: dict[str, Any] = {"clique_id": np.int64, "n2d": np.int32, "npx": np.int64,
                            "sum_intensity": np.float64, "s_raw": np.float64,
                            "f_raw": np.float64}
    cols.update({name: np.float64 for name in MOMENT_COLUMNS})
    cols.update({"first_point": np.int64, "last_point": np.int64, "point": np.float64})
    cols.update({name: np.float64 for name in motors})
    return cols


def _part(a: np.ndarray, s: slice) -> np.ndarray:
    """a[s], copied unless it is all of a (so a kept frame does not pin a whole block)."""
    return a if s.start == 0 and s.stop == a.shape[0] else a[s].copy()


def _empty(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.empty(0, dt) for k, dt in columns.items()}
