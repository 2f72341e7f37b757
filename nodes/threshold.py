"""Keep the pixels above a global cut or a per-pixel cut map, as a sparse frame.

A compressed frame is decoded here (`nodes.decode`): uint8 / uint16 bslz4
frames straight to the kept pixels (float32 holds their values exactly, so
the fused kernel with nothing to correct keeps the same pixels and values),
others decoded into a reused buffer first.

Pixels whose raw value is the largest of an unsigned detector dtype (65535,
2**32 - 1) are not kept (`markers`, on by default): EIGER and Lima write it
into module gaps and dead or hot pixels, and kept, the gaps form one huge
peak on every frame that the linker joins into one clique across the scan.
They are taken out of the few kept pixels after the dense pass (the pass
itself is unchanged), and logged once per scan with their count. A chain that
corrects or normalises first never keeps them (`correct` and `normalise` make
them NaN, the fused pass drops them), whatever `markers` says.

A frame with more than `max_pixels` above the cut is run again into buffers
that hold them all; markers dropped, the cut is raised for that frame over
those left (`raised_cut`: exact, from their values) and the point is flagged.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from nodes import decode
from nodes.correct import check_shape, marker_of, shown
from nodes.kernels import readonly
from nodes.kernels.dense import threshold_frame
from stream.core.encoded import EncodedFrame
from stream.core.item import Item, SparseFrame
from stream.core.scan import Scan

log = logging.getLogger(__name__)

MARKER_SLACK = 1e-6  # relative: a raw value this close to the dtype's largest is a marker
_logged_scans: set[str] = set()  # scans whose markers were logged (by any thread's node)
_logged_lock = threading.Lock()
NO_HIST = np.zeros(0, np.int64)
NO_MAP = np.zeros((0, 0), np.float32)
NO_MASK = np.zeros((0, 0), np.bool_)
# A per-frame cut map an earlier node of the chain (background) hands over in
# item.outputs under CUT_MAP (float32, the frame's shape; +inf: never kept), with
# its smallest value under CUT_MIN (a 0-d array; computed here if absent). This
# node takes both out of the outputs (they are never stored) and uses the map
# for that frame instead of `cut` / `cut_map`.
CUT_MAP = "threshold.cut_map"
CUT_MIN = "threshold.cut_min"

# run(rows, cols, vals) -> n: one dense pass at the cut into these buffers (the first
# of the n pixels above it that fit; see kernels/dense.py)
DensePassFn = Callable[[np.ndarray, np.ndarray, np.ndarray], int]
# (gate, test): kept values below the gate cannot come from a marker raw value; the test
# takes the kept (rows, cols, values) and says which did
MarkerTest = tuple[float, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]


def precut_as(dtype: np.dtype, bound: float) -> tuple[np.generic, bool]:
    """`bound` in `dtype`, rounded down, and whether it can skip anything.

    A value of that dtype that is not above the result is not above `bound`.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if not bound >= info.min:  # also NaN
            return dtype.type(info.min), False
        return dtype.type(min(math.floor(bound), info.max) if bound < math.inf else info.max), True
    if not bound > -math.inf:
        return dtype.type(-math.inf), False
    with np.errstate(over="ignore"):
        typed = dtype.type(bound)
    if float(typed) > bound:  # (a numpy scalar would compare in its own dtype)
        typed = np.nextafter(typed, dtype.type(-math.inf))
    return typed, True


def native_frame(frame: np.ndarray) -> np.ndarray:
    """The frame as a C-contiguous, native byte order array (no copy if it already is)."""
    return np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("="))


class SparseBuffers:
    """Per-thread output buffers of a dense pass, allocated once and reused."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bufs = getattr(self._local, "bufs", None)
        if bufs is None or bufs[0].size < size:
            bufs = (np.empty(size, np.uint16), np.empty(size, np.uint16),
                    np.empty(size, np.float32))
            self._local.bufs = bufs
        return bufs[0][:size], bufs[1][:size], bufs[2][:size]


def raised_cut(excess: np.ndarray, maxn: int) -> tuple[np.ndarray, float, bool]:
    """Which of the pixels above the cut (their float64 excess over it, more than `maxn`)
    the raised cut keeps: those above the excess of the (n - maxn)-th lowest, so at most
    `maxn` (fewer when pixels tie at it). Returns (keep, delta, truncated): delta is the
    excess the kept pixels needed; truncated when more than `maxn` are infinitely above
    (no cut separates them): the first `maxn` of those, in raster order, are kept."""
    n = excess.size
    delta = float(np.partition(excess, n - maxn - 1)[n - maxn - 1])
    if delta < math.inf:
        return excess > delta, delta, False
    finite = excess[excess < math.inf]
    keep = np.zeros(n, np.bool_)
    keep[np.flatnonzero(excess == math.inf)[:maxn]] = True
    return keep, float(finite.max()) if finite.size else 0.0, True


def raw_markers(dtype: np.dtype) -> MarkerTest | None:
    """The marker test for kept values that are the raw values (nothing corrected)."""
    marker = marker_of(dtype)
    if marker is None:
        return None
    gate = float(np.float32(marker)) * (1 - MARKER_SLACK)  # float32 rounds 2**32 - 1 up
    return gate, lambda rows, cols, vals: vals >= gate


class Threshold:
    """Keep pixels with value > cut (or > cut_map[pixel]) as a raster-sorted sparse frame."""

    kind: ClassVar[str] = "threshold"
    settable: ClassVar[tuple[str, ...]] = ("cut",)
    # 0 keeps every pixel above 0; below 0 the background too (refused at start-up
    # and while running alike); above 1e9 nothing: refused
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"cut": (0.0, 1e9)}

    def __init__(self, *, cut: float = 0.0, cut_map: np.ndarray | None = None,
                 max_pixels: int = 0, markers: bool = True) -> None:
        if not math.isfinite(cut):
            raise ValueError(f"threshold: cut must be finite, got {cut!r}")
        if cut < 0:
            raise ValueError(f"threshold: cut must be >= 0, got {cut!r} (below 0 it keeps the "
                             f"background too, >= 0 raw and around 0 once corrected: every "
                             f"frame would have its cut raised to max_pixels and be flagged)")
        if cut_map is not None:
            if not isinstance(cut_map, np.ndarray) or cut_map.ndim != 2:
                raise ValueError(f"threshold: cut_map must be a 2D array, got {shown(cut_map)}")
            cut_map = np.array(cut_map, dtype=np.float32, order="C")
            if np.isnan(cut_map).any():
                raise ValueError("threshold: cut_map contains NaN (use +inf to exclude a pixel)")
            if cut_map.size and cut_map.min() < 0:
                where = np.unravel_index(int(np.argmin(cut_map)), cut_map.shape)
                raise ValueError(f"threshold: cut_map must be >= 0 everywhere, as cut must: "
                                 f"{int((cut_map < 0).sum())} pixels are below 0 (the lowest "
                                 f"{float(cut_map[where]):g} at row {where[0]}, column "
                                 f"{where[1]}); below 0 it keeps those pixels' background")
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0:
            raise ValueError(f"threshold: max_pixels must be an int >= 0, got {max_pixels!r}")
        if not isinstance(markers, bool):
            raise ValueError(f"threshold: markers must be true or false, got {markers!r}")
        self.markers = markers  # drop pixels at the dtype's largest value (module docstring)
        self._scan_id = ""
        self.cut = float(cut)
        self.cut_map = cut_map
        self.max_pixels = max_pixels
        self.buffers = SparseBuffers()
        self.spill = SparseBuffers()  # a frame's pixels above the cut, when more than maxn
        self._cut_map_min = float(cut_map.min()) if cut_map is not None and cut_map.size else 0.0

    def setup(self, scan: Scan) -> None:
        self.prepare(scan)
        self.warmup(scan.detector()[1].dtype)

    def prepare(self, scan: Scan) -> None:
        """setup() without compiling: `DensePass` runs its own kernel, not this node's."""
        check_shape(self.kind, "cut_map", self.cut_map, scan)
        self._scan_id = scan.scan_id
        self.buffers.get(self.maxn(tuple(scan.detector()[1].shape)))

    def warmup(self, dtype: str = "float32") -> None:
        """Compile the threshold kernel for `dtype` (read-only frames; float32 ones from
        a node before are compiled by the warm-up scan, `stream.run.warmup`, if any)."""
        cut_map = np.zeros((2, 3), np.float32) if self.cut_map is not None else NO_MAP
        rows, cols, vals = (np.empty(6, t) for t in (np.uint16, np.uint16, np.float32))
        dt = np.dtype(dtype)
        threshold_frame(readonly(np.zeros((2, 3), dt)), dt.type(0), True, 0.0, cut_map, 0.0,
                        rows, cols, vals, NO_HIST, 0.0, 0.0, 0.0)
        straight = np.dtype(dtype) in (np.uint8, np.uint16)
        decode.warmup(dtype, straight)
        if straight and decode.warms("bslz4"):  # straight to sparse, on a too short frame
            empty = EncodedFrame("bslz4", (2, 3), np.dtype(dtype), memoryview(bytes(16)), 8)
            try:
                self._sparse(empty, self.cut, cut_map, self.cut_min(), rows, cols, vals)
            except ValueError:
                pass

    def unused(self, chain: list) -> dict[str, str]:
        """The settable parameters this node does not read in `chain` (which holds it), with
        why: a `set` of them would be recorded but change nothing."""
        if self.cut_map is not None:
            return {"cut": "this threshold has a cut_map, whose per-pixel values are the cut "
                           "(cut is not read); change the map in the config"}
        before = chain[:next((i for i, n in enumerate(chain) if n is self), len(chain))]
        if any(n.kind == "background" for n in before):
            return {"cut": "this threshold takes each frame's cut map from the background "
                           "node before it (cut is not read); set background nsigma or "
                           "min_excess instead"}
        return {}

    def maxn(self, shape: tuple[int, ...]) -> int:
        """The most pixels a frame of this shape may keep."""
        return self.max_pixels or math.prod(shape) // 4

    def cut_min(self) -> float:
        """The lowest threshold over the frame."""
        return self._cut_map_min if self.cut_map is not None else self.cut

    def check_frame(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2:
            raise ValueError(f"threshold: frames must be 2D, got shape {tuple(shape)}")
        if self.cut_map is not None and self.cut_map.shape != tuple(shape):
            raise ValueError(f"threshold: cut_map has shape {self.cut_map.shape} but the frame "
                             f"has shape {tuple(shape)}")

    def keep(self, item: Item, shape: tuple[int, int], run: DensePassFn,
             cuts: tuple[float, np.ndarray], markers: MarkerTest | None = None,
             always: bool = False) -> Item:
        """Run a dense pass and set item.sparse from it. `cuts` (cut, cut_map) are the
        ones the pass used (cut_map empty: cut). `markers` (gate, test): kept values at
        or above the gate are tested, and those the test says came from a marker raw
        value are dropped (unless this node's `markers` is false and not `always`: a
        fused pass that corrects drops them as the unfused `correct` / `normalise` do).
        More than max_pixels left: the cut is raised for this frame (`raised_cut`) over
        the pixels left, so markers never count in it, and the point is flagged."""
        maxn = self.maxn(shape)
        rows, cols, vals = self.buffers.get(maxn)
        n = run(rows, cols, vals)
        if n > maxn:  # all of them, into buffers that hold them
            rows, cols, vals = self.spill.get(n)
            n = run(rows, cols, vals)
        rows, cols, vals = rows[:n], cols[:n], vals[:n]
        if markers is not None and (self.markers or always) and n and vals.max() >= markers[0]:
            good = ~markers[1](rows, cols, vals)
            if not good.all():
                self._log_markers(item, n - int(good.sum()))
                rows, cols, vals = rows[good], cols[good], vals[good]
        if rows.size > maxn:
            cut, cut_map = cuts
            threshold = cut_map[rows, cols].astype(np.float64) if cut_map.size else cut
            kept, delta, truncated = raised_cut(vals.astype(np.float64) - threshold, maxn)
            self._flag(item, rows.size, maxn, delta, truncated, cut_map.size > 0)
            rows, cols, vals = rows[kept], cols[kept], vals[kept]
        item.sparse = SparseFrame(shape, rows.copy(), cols.copy(), vals.copy())
        item.frame = None
        return item

    def _log_markers(self, item: Item, count: int) -> None:
        with _logged_lock:  # once a scan, whichever worker thread's chain sees them first
            if self._scan_id in _logged_scans:
                return
            if len(_logged_scans) >= 256:
                _logged_scans.clear()
            _logged_scans.add(self._scan_id)
        log.warning("threshold: scan %s point %d: %d pixels at the detector's marker value "
                    "(the largest of its dtype: module gaps, bad pixels) are not kept; a mask in "
                    "`correct` names them, `markers = false` keeps them (logged once a scan)",
                    self._scan_id, item.point_id, count)

    def _flag(self, item: Item, n_above: int, maxn: int, delta: float,
              truncated: bool, per_pixel: bool | None = None) -> None:
        per_pixel = self.cut_map is not None if per_pixel is None else per_pixel
        what = "cut_map" if per_pixel else f"cut {self.cut:g}"
        msg = f"threshold: {n_above} pixels above {what} > max_pixels {maxn}; "
        if per_pixel:
            msg += f"cut_map raised by {delta:.6g} for this frame"
        else:
            msg += f"cut raised to {self.cut + delta:.6g} for this frame"
        if truncated:
            msg += f"; still too many, kept the first {maxn} in raster order"
        item.flags.append(msg)

    def _sparse(self, frame: EncodedFrame, cut: float, cut_map: np.ndarray, cut_min: float,
                rows, cols, vals) -> int | None:
        """The pass straight from a uint8 / uint16 bslz4 frame, or None."""
        precut, use = precut_as(frame.dtype, cut_min)
        if frame.dtype not in (np.uint8, np.uint16) or not decode.goes_sparse(frame, use):
            return None
        return decode.sparse_pass(frame, decode.NO_VALID, precut, use, NO_MASK, np.float32(0),
                                  NO_MAP, np.float32(1), NO_MAP, np.float32(1), cut, cut_map,
                                  0.0, rows, cols, vals, NO_HIST, 0.0, 0.0, 0.0)[0]

    def frame_cut_map(self, item: Item) -> tuple[np.ndarray | None, float]:
        """Take a per-frame cut map (and its minimum) out of item.outputs, if there is one."""
        cut_map = item.outputs.pop(CUT_MAP, None)
        cut_min = item.outputs.pop(CUT_MIN, None)
        if cut_map is None:
            return None, 0.0
        cut_map = np.ascontiguousarray(cut_map, dtype=np.float32)
        if cut_map.shape != item.shape:
            raise ValueError(f"threshold: the frame's cut map has shape {cut_map.shape} but the "
                             f"frame has shape {tuple(item.shape)}")
        lowest = float(np.min(cut_map)) if cut_min is None else float(cut_min)
        return cut_map, lowest

    def process(self, item: Item) -> Item:
        frame_map, frame_min = self.frame_cut_map(item)
        if item.frame is None:
            if item.sparse is None:
                raise ValueError(f"threshold: point {item.point_id} has no frame")
            return self._process_sparse(item, frame_map)
        frame = item.frame
        encoded = isinstance(frame, EncodedFrame)
        if not encoded:
            frame = native_frame(frame)
        self.check_frame(frame.shape)
        cut_map = NO_MAP if self.cut_map is None else self.cut_map
        cut = self.cut
        cut_min = cut if self.cut_map is None else self.cut_min()
        if frame_map is not None:
            cut_map, cut_min = frame_map, frame_min
        decoded: list[np.ndarray] = [] if encoded else [frame]

        def run(rows, cols, vals):
            if encoded:
                out = self._sparse(frame, cut, cut_map, cut_min, rows, cols, vals)
                if out is not None:
                    return out
                if not decoded:  # once, into this thread's buffer
                    decoded.append(decode.dense(frame, reuse=True))
            raw = decoded[0]
            precut, use = precut_as(raw.dtype, cut_min)  # not above it: not above any threshold
            return threshold_frame(readonly(raw), precut, use, cut, cut_map, 0.0, rows, cols,
                                   vals, NO_HIST, 0.0, 0.0, 0.0)[0]

        return self.keep(item, frame.shape, run, (cut, cut_map), markers=raw_markers(frame.dtype))

    def _process_sparse(self, item: Item, frame_map: np.ndarray | None = None) -> Item:
        sparse = item.sparse
        if frame_map is not None:
            cut = frame_map[sparse.row, sparse.col].astype(np.float64)
        elif self.cut_map is not None:
            self.check_frame(sparse.shape)
            cut = self.cut_map[sparse.row, sparse.col].astype(np.float64)
        else:
            cut = self.cut
        excess = sparse.intensity.astype(np.float64) - cut
        keep = excess > 0
        n, maxn = int(keep.sum()), self.maxn(sparse.shape)
        if n > maxn:
            above = np.flatnonzero(keep)
            raised, delta, truncated = raised_cut(excess[above], maxn)
            keep[above[~raised]] = False
            self._flag(item, n, maxn, delta, truncated, True if frame_map is not None else None)
        kept = sparse.take(keep)
        kept.label, kept.npeaks = None, 0
        item.sparse = kept
        return item
