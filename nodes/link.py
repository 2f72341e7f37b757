"""The incremental linker: joins 2D peaks on neighbouring points into cliques.

Points arrive in `point_id` order, one at a time (`add_point`, live) or as a
block of consecutive points (`add_block`, replay of sparse files: the same
kernels and the same result, with far less Python per point). Each point is
overlapped with its neighbours before it that are still in the frontier
(merge-join of raster keys), the pairs that the criteria (`nodes.criteria`)
keep are unioned, and every clique that no point to come can reach is closed
and returned at once, in the order the point-by-point steps close them.
Memory holds only the frontier frames and the peaks of open cliques.

`split = "local_max"` splits each clique as it closes at its significant
maxima in 3D: its 2D peaks are nodes with their maximum intensity, its links
edges with their saddle (`kernels.overlap.overlap_saddles`: the highest
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

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from stream.item import MOMENT_COLUMNS, SparseFrame
from stream.scan import Scan
from stream.trajectory import circular_centroid

from .criteria import CRITERIA, Rule
from .forest import Forest
from .kernels.overlap import (
    labelled_keys_block,
    overlap_counts,
    overlap_saddles,
    overlaps_block,
    pairs_within,
    pairs_within_block,
    peak_pixels_block,
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
    # split only (else empty): float32 per labelled pixel; per peak its highest pixel's
    # raster key and value (kernels.overlap.peak_pixels)
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
        peaks = {k: one.astype(dt) for k, dt in PEAK_COLUMNS.items()}
        for criterion, split in (("any_pixel", "none"), ("distance", "none"),
                                 ("any_pixel", "local_max")):
            for block in (False, True):
                linker = Linker(criterion=criterion, split=split)
                linker.setup(Scan.from_start(Start(
                    "warmup", {"d": DetectorInfo((2, 2), "uint16")}, motors=["omega"],
                    npoints=2)))
                for i in range(2):
                    if block:
                        linker.add_block(PeakBlock.single(i, frame, peaks, {"omega": float(i)}))
                    else:
                        linker.add_point(i, frame, peaks, {"omega": float(i)})
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
        overlaps = _empty(OVERLAP_COLUMNS)
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
            keys, labels, ints, _, npx, status = labelled_keys_block(
                sparse.row, sparse.col, sparse.label,
                sparse.intensity if self._split else _NO_INT,
                np.array([0, sparse.nnz], np.int64), np.array([npeaks], np.int64), shape[1])
            if status[0]:
                what = ("pixels are not raster-sorted" if status[0] == 1 else
                        f"has labels above npeaks={npeaks}")
                raise ValueError(f"linker: point {point_id}: {what}")
            if npeaks:
                pk, ph = self._peak_pixels(keys, labels, ints, np.array([0, keys.shape[0]]),
                                           np.array([npeaks], np.int64))
                overlaps = self._add_frame(point_id, keys, labels, ints, npx, pk, ph, peaks,
                                           motors, offset)
        self._next_point = point_id + 1
        self._drop_frontier(point_id)
        cliques, members = self._emit(self._forest.closing_by(point_id), point_id, True)
        return LinkResult(point_id, offset, overlaps, cliques, members)

    def _peak_pixels(self, keys, labels, ints, key_ptr, npeaks):
        if not self._split:
            return _NO_KEY, _NO_H
        return peak_pixels_block(keys, labels, ints, key_ptr.astype(np.int64), npeaks)

    def _add_frame(self, p: int, keys, labels, ints, npx, peak_key, peak_h, peaks, motors,
                   offset: int) -> dict[str, np.ndarray]:
        """One point with peaks: append its peaks, link them to the frontier frames of
        its neighbours before it, keep the frame if a later point may link to it."""
        traj = self.trajectory
        npeaks = npx.shape[0]
        close_at = max(int(traj.last_neighbour(p)), p)
        values = {m: np.full(npeaks, motors.get(m, np.nan), np.float64) for m in self._motors}
        self._forest.append(offset, np.full(npeaks, p, np.int64),
                            np.full(npeaks, close_at, np.int64),
                            self._acc_rows(peaks, np.full(npeaks, float(p)), values),
                            peak_h if self._split else None)
        self._npeaks += npeaks
        s_raw = np.asarray(peaks["s_raw"], np.float64)
        f_raw = np.asarray(peaks["f_raw"], np.float64)
        olds = [self._frontier[j] for j in sorted(set(traj.neighbours_before(p)))
                if j in self._frontier]
        overlaps = _empty(OVERLAP_COLUMNS)
        if olds:
            parts = []
            for old in olds:
                if self._split:
                    la, lb, npixels, saddle = overlap_saddles(
                        old.keys, old.labels, old.npx.shape[0], keys, labels, old.intensity,
                        ints, old.peak_key, old.peak_h, peak_key, peak_h, self._shape[1])
                else:
                    la, lb, npixels = overlap_counts(old.keys, old.labels, old.npx.shape[0],
                                                     keys, labels)
                    saddle = _NO_H
                ia = la.astype(np.int64) - 1
                ib = lb.astype(np.int64) - 1
                part = {"peak_a": old.peak_offset + ia, "peak_b": offset + ib,
                        "npixels": npixels,
                        "score": (npixels / np.minimum(old.npx[ia], npx[ib])).astype(np.float32)}
                if self.rule.needs_overlap:
                    cand = {"npixels": npixels, "npx_a": old.npx[ia], "npx_b": npx[ib],
                            "s_a": old.s_raw[ia], "f_a": old.f_raw[ia], "s_b": s_raw[ib],
                            "f_b": f_raw[ib], "saddle": saddle}
                else:  # distance alone: pairs by centroid
                    ia, ib = pairs_within(old.s_raw, old.f_raw, s_raw, f_raw, self.rule.distance)
                    cand = {"npixels": np.zeros(ia.shape[0], np.int32), "npx_a": old.npx[ia],
                            "npx_b": npx[ib], "s_a": old.s_raw[ia], "f_a": old.f_raw[ia],
                            "s_b": s_raw[ib], "f_b": f_raw[ib],
                            "saddle": np.full(ia.shape[0], np.inf)}
                cand["gid_a"] = old.peak_offset + ia
                cand["gid_b"] = offset + ib
                parts.append((part, cand))
            if len(parts) == 1:
                overlaps, cand = parts[0]
            else:
                overlaps = {k: np.concatenate([pt[k] for pt, _ in parts]) for k in overlaps}
                cand = {k: np.concatenate([c[k] for _, c in parts]) for k in parts[0][1]}
            self._union(cand)
        if close_at > p:
            self._frontier[p] = FrontierFrame(p, self._shape, keys, labels, offset, npx, s_raw,
                                              f_raw, close_at, ints, peak_key, peak_h)
        return {k: np.asarray(v).astype(dt, copy=False) for (k, v), dt in
                zip(overlaps.items(), OVERLAP_COLUMNS.values(), strict=True)}

    def _union(self, cand: dict[str, np.ndarray]) -> None:
        """Union the candidate pairs the rule keeps (and keep them as edges to split)."""
        keep = self.rule.keep(cand)
        ga, gb = cand["gid_a"][keep], cand["gid_b"][keep]
        slots = self._forest.slots(np.concatenate([ga, gb]))
        half = slots.shape[0] // 2
        self._forest.union(slots[:half], slots[half:])
        if self._split and ga.shape[0]:
            self._forest.add_edges(ga, gb, cand["saddle"][keep])

    def _drop_frontier(self, last: int) -> None:
        for p in [p for p, f in self._frontier.items() if f.close_at <= last]:
            del self._frontier[p]

    def add_block(self, block: PeakBlock) -> LinkResult:
        """Link consecutive points at once: the same result as one add_point per point,
        with the cliques closed in the same order."""
        self._check_order(block.first)
        last = block.first + block.n - 1
        offset = self._npeaks
        keys, labels, ints, key_ptr, npx, point_close = self._check_block(block)
        peak_key, peak_h = self._peak_pixels(keys, labels, ints, key_ptr,
                                             np.asarray(block.npeaks, np.int64))
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
                                self._acc_rows(block.peaks, (block.first + per_peak)
                                               .astype(np.float64), values),
                                peak_h if self._split else None)
            self._npeaks += int(peak_ptr[-1])
            frames = self._frames(block, points, keys, labels, ints, key_ptr, npx, peak_key,
                                  peak_h, peak_ptr, point_close, offset)
            overlaps = self._link(frames, self._frame_pairs(block, frames, points))
            self._keep_frontier(frames, points, last)
        self._next_point = last + 1
        self._drop_frontier(last)
        cliques, members = self._emit(self._forest.closing_by(last), last, True)
        return LinkResult(last, offset, overlaps, cliques, members)

    def finish(self) -> LinkResult:
        """Close every clique still open (end of scan)."""
        if self.trajectory is None or self._finished:
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
        if self.trajectory is None:
            raise ValueError("linker: call setup(scan) before add_point()")
        if self._finished:
            raise ValueError(f"linker: point {point_id} after finish()")
        if point_id != self._next_point:
            raise ValueError(f"linker: expected point {self._next_point}, got {point_id} "
                             "(points must come once each, in order, from 0)")

    def _check_block(self, block: PeakBlock):
        """Raster keys of the labelled pixels (and their intensities, to split), pixels
        per peak, and each point's close step."""
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
        keys, labels, ints, key_ptr, npx, status = labelled_keys_block(
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
        return keys, labels, ints, key_ptr, npx, point_close

    def _acc_rows(self, peaks: dict[str, np.ndarray], point: np.ndarray,
                  values: dict[str, np.ndarray]) -> np.ndarray:
        """The additive columns of peaks on points `point` with motor `values` (per peak):
        _ACC, s_I * point, then per motor s_I * x, or s_I cos and s_I sin of 2 pi x / P."""
        acc = np.empty((point.shape[0], self._forest.nacc), np.float64)
        for k, name in enumerate(_ACC):
            acc[:, k] = peaks[name]
        s_i = acc[:, _S_I]
        acc[:, len(_ACC)] = s_i * point
        for name in self._motors:
            c = self._motor_col[name]
            period = self._period.get(name)
            if period is None:
                acc[:, c] = s_i * values[name]
            else:
                angle = (2 * np.pi / period) * values[name]
                acc[:, c] = s_i * np.cos(angle)
                acc[:, c + 1] = s_i * np.sin(angle)
        return acc

    def _frames(self, block, points, keys, labels, ints, key_ptr, npx, peak_key, peak_h,
                peak_ptr, point_close, offset) -> dict[str, Any]:
        """Frame slots: the frontier frames (their pixels in `old_*`), then the block's
        points with peaks (pixels in `new_*`, the block's own arrays, not copied)."""
        old = [self._frontier[p] for p in sorted(self._frontier)]
        k = points - block.first
        npeaks = block.npeaks[k]
        s_raw = np.asarray(block.peaks["s_raw"], np.float64)
        f_raw = np.asarray(block.peaks["f_raw"], np.float64)
        new = {"npx": npx, "s_raw": s_raw, "f_raw": f_raw, "peak_key": peak_key,
               "peak_h": peak_h}
        if old:
            npx = np.concatenate([*(f.npx for f in old), npx])
            s_raw = np.concatenate([*(f.s_raw for f in old), s_raw])
            f_raw = np.concatenate([*(f.f_raw for f in old), f_raw])
            if self._split:
                peak_key = np.concatenate([*(f.peak_key for f in old), peak_key])
                peak_h = np.concatenate([*(f.peak_h for f in old), peak_h])
        old_keys = _joined([f.keys for f in old], np.int64)
        old_labels = _joined([f.labels for f in old], np.int32)
        old_int = _joined([f.intensity for f in old], np.float32) if self._split else _NO_INT
        old_ptr = np.cumsum([0, *(f.keys.shape[0] for f in old)]).astype(np.int64)
        new_ptr = np.r_[key_ptr[k], keys.shape[0]].astype(np.int64)
        all_npeaks = np.array([*(f.npx.shape[0] for f in old), *npeaks], np.int64)
        peak_ptr_all = np.zeros(all_npeaks.shape[0] + 1, np.int64)
        np.cumsum(all_npeaks, out=peak_ptr_all[1:])
        gid0 = np.array([*(f.peak_offset for f in old), *(offset + peak_ptr[k])], np.int64)
        slot = {f.point_id: i for i, f in enumerate(old)}
        slot.update(zip(points.tolist(), range(len(old), len(old) + points.shape[0]),
                        strict=True))
        return {"old_keys": old_keys, "old_labels": old_labels, "old_int": old_int,
                "old_ptr": old_ptr, "new_keys": keys, "new_labels": labels, "new_int": ints,
                "new_ptr": new_ptr, "npeaks": all_npeaks, "peak_ptr": peak_ptr_all,
                "gid0": gid0, "npx": npx, "s_raw": s_raw, "f_raw": f_raw, "slot": slot,
                "peak_key": peak_key, "peak_h": peak_h,
                "nold": len(old), "new": new, "new_peak0": int(peak_ptr_all[len(old)]),
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
            frames["old_keys"], frames["old_labels"], frames["old_int"], frames["old_ptr"],
            frames["new_keys"], frames["new_labels"], frames["new_int"], frames["new_ptr"],
            frames["npeaks"], frames["peak_ptr"], frames["peak_key"], frames["peak_h"],
            self._shape[1], fa, fb)
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
            split = self._split
            self._frontier[p] = FrontierFrame(
                p, self._shape, keys, labels, int(frames["gid0"][s]), _part(new["npx"], pp),
                _part(new["s_raw"], pp), _part(new["f_raw"], pp), close_at,
                _part(frames["new_int"], kp) if split else _NO_INT,
                _part(new["peak_key"], pp) if split else _NO_KEY,
                _part(new["peak_h"], pp) if split else _NO_H)

    def _emit(self, candidates: np.ndarray, step: int, by_close_at: bool):
        if self._split:
            n2d, sums, first, last, member_gid, member_clique = self._forest.close_split(
                candidates, step, by_close_at, self.prominence, self.prominence_sigma)
        else:
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
            for name in self._motors:
                c = self._motor_col[name]
                period = self._period.get(name)
                if period is None:
                    cliques[name] = sums[:, c] / s_i
                else:
                    cliques[name] = circular_centroid(sums[:, c], sums[:, c + 1], period)
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
