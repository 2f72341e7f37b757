"""Correct, normalise and threshold a frame in one dense pass (what `fuse` builds).

A compressed frame (bslz4, lz4) is decoded here: straight to the kept pixels
when `nodes.decode.goes_sparse` says so (bslz4, unsigned), otherwise decoded
into a reused buffer and then the dense pass; the result is the same, bit
for bit, as for the same frame sent raw.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from nodes import decode
from nodes.correct import Correct, marker_of
from nodes.kernels import readonly
from nodes.kernels.dense import correct_threshold
from nodes.normalise import Normalise
from nodes.threshold import (
    NO_HIST,
    NO_MAP,
    MarkerTest,
    Threshold,
    native_frame,
    precut_as,
)
from stream.core.encoded import EncodedFrame
from stream.core.item import Item
from stream.core.scan import Scan

NO_MASK = np.zeros((0, 0), np.bool_)
PRECUT_MARGIN = 1e-4  # relative slack of the raw-unit pre-cut over float32 rounding
MARKER_SLACK = 1e-5  # relative: a corrected value traced back this close to the marker


def _map_or_scalar(value, neutral: float) -> tuple[np.float32, np.ndarray]:
    if isinstance(value, np.ndarray):
        return np.float32(neutral), value
    return np.float32(neutral if value is None else value), NO_MAP


class DensePass:
    """Bit-identical to correct -> normalise -> threshold, from the raw frame in one pass."""

    kind: ClassVar[str] = "dense"
    settable: ClassVar[tuple[str, ...]] = ("cut",)
    # the bounds of its threshold's cut: [0, 1e9], at start-up and while running alike
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"cut": (0.0, 1e9)}

    def __init__(self, *, correct: Correct | None = None, normalise: Normalise | None = None,
                 threshold: Threshold) -> None:
        self.correct = correct
        self.normalise = normalise
        self.threshold = threshold
        self.nodes = [n for n in (correct, normalise, threshold) if n is not None]
        self.straight_to_sparse = True  # bslz4 frames: decode to the kept pixels when it can
        self._prepare()

    @property
    def cut(self) -> float:
        return self.threshold.cut

    @cut.setter
    def cut(self, value: float) -> None:
        self.threshold.cut = value

    def _prepare(self) -> None:
        """Kernel arguments and the bounds the raw-unit pre-cut needs (valid pixels only)."""
        c = self.correct
        self._dark0, self._dark_map = _map_or_scalar(c.dark32 if c else None, 0.0)
        self._invflat0, self._invflat_map = _map_or_scalar(c.invflat32 if c else None, 1.0)
        self._mask = NO_MASK if c is None or c.mask is None else c.mask

        def over_valid(scalar, array):
            if not array.size:
                return np.array([scalar])
            return array.ravel() if self._mask is NO_MASK else array[~self._mask]

        dark = over_valid(self._dark0, self._dark_map)
        invflat = over_valid(self._invflat0, self._invflat_map)
        self._valid = decode.valid_bits(self._mask)
        self._all_excluded = dark.size == 0 or invflat.size == 0
        if not self._all_excluded:
            self._dark_min = float(dark.min())
            self._dark_max = float(dark.max())
            self._dark_abs = float(np.abs(dark).max())
            self._invflat_min = float(invflat.min())
            self._invflat_max = float(invflat.max())

    def setup(self, scan: Scan) -> None:
        for node in self.nodes:
            if node is self.threshold:
                node.prepare(scan)
            else:
                node.setup(scan)
        self._prepare()  # the correct node may have taken the detector's own flat / mask
        self.warmup(scan.detector()[1].dtype)

    def warmup(self, dtype: str = "uint16") -> None:
        """Compile the fused kernel for `dtype` (read-only frames) and the decoders."""
        raw = readonly(np.zeros((2, 3), dtype))
        rows, cols, vals = (np.empty(6, t) for t in (np.uint16, np.uint16, np.float32))
        cut_map = NO_MAP if self.threshold.cut_map is None else np.zeros((2, 3), np.float32)
        correct_threshold(raw, raw.dtype.type(0), True, NO_MASK, np.float32(0), NO_MAP,
                          np.float32(1), NO_MAP, np.float32(1), 0.0, cut_map, 0.0,
                          rows, cols, vals, NO_HIST, 0.0, 0.0, 0.0)
        straight = np.dtype(dtype).kind == "u"
        decode.warmup(dtype, straight)
        if straight and decode.warms("bslz4"):  # the straight kernel, on a frame too short
            empty = EncodedFrame("bslz4", (2, 3), np.dtype(dtype), memoryview(bytes(16)), 8)
            try:
                self._sparse(empty, np.float32(1), self._cuts(), rows, cols, vals)
            except ValueError:
                pass

    def precut(self, cut_min: float, scale: np.float32) -> float:
        """A raw value at or below this cannot pass, for any valid pixel.

        v > t needs raw > dark + t / (invflat * scale) >= dark_min + c / invflat_max
        (c = t_min / scale >= 0; invflat_min if c < 0), less a margin for rounding.
        """
        if self._all_excluded:
            return math.inf
        c = cut_min / float(scale)
        if not math.isfinite(c):
            return -math.inf
        reach = c / self._invflat_max if c >= 0 else c / self._invflat_min
        bound = self._dark_min + reach
        margin = PRECUT_MARGIN * (self._dark_abs + abs(c) / self._invflat_min + abs(bound) + 1)
        return bound - margin

    def _cuts(self) -> tuple[float, np.ndarray, float]:
        """(cut, cut_map, cut_min) for one frame (read once: set_param may change them)."""
        th = self.threshold
        cut_map = NO_MAP if th.cut_map is None else th.cut_map
        return th.cut, cut_map, th.cut if th.cut_map is None else th.cut_min()

    def _dense(self, raw, scale, cuts, rows, cols, vals) -> int:
        cut, cut_map, cut_min = cuts
        precut, use = precut_as(raw.dtype, self.precut(cut_min, scale))
        return correct_threshold(readonly(raw), precut, use, self._mask, self._dark0,
                                 self._dark_map, self._invflat0, self._invflat_map, scale, cut,
                                 cut_map, 0.0, rows, cols, vals, NO_HIST, 0.0, 0.0, 0.0)[0]

    def _sparse(self, frame: EncodedFrame, scale, cuts, rows, cols, vals) -> int | None:
        """The pass straight from a bslz4 frame, or None if decoding first is faster."""
        cut, cut_map, cut_min = cuts
        precut, use = precut_as(frame.dtype, self.precut(cut_min, scale))
        if not (self.straight_to_sparse and decode.goes_sparse(frame, use)):
            return None
        return decode.sparse_pass(frame, self._valid, precut, use, self._mask, self._dark0,
                                  self._dark_map, self._invflat0, self._invflat_map, scale, cut,
                                  cut_map, 0.0, rows, cols, vals, NO_HIST, 0.0, 0.0, 0.0)[0]

    def process(self, item: Item) -> Item:
        if item.frame is None:  # sparse replay: each node's sparse path
            for node in self.nodes:
                item = node.process(item)
            return item
        frame = item.frame
        encoded = isinstance(frame, EncodedFrame)
        if not encoded:
            frame = native_frame(frame)
        self.threshold.check_frame(frame.shape)
        if self.correct is not None:
            self.correct.check_frame(frame.shape)
        scale = self.normalise.scale_for(item) if self.normalise else np.float32(1)
        cuts = self._cuts()
        decoded: list[np.ndarray] = [] if encoded else [frame]

        def run(rows, cols, vals):
            if encoded:
                out = self._sparse(frame, scale, cuts, rows, cols, vals)
                if out is not None:
                    return out
                if not decoded:  # once, into this thread's buffer
                    decoded.append(decode.dense(frame, reuse=True))
            return self._dense(decoded[0], scale, cuts, rows, cols, vals)

        return self.threshold.keep(item, frame.shape, run, cuts[:2],
                                   markers=self._markers(frame.dtype, scale),
                                   always=self.correct is not None or self.normalise is not None)

    def _markers(self, dtype: np.dtype, scale: np.float32) -> MarkerTest | None:
        """Kept pixels whose raw value was the detector's marker (`nodes.threshold`):
        each kept value traced back to raw units through its pixel's dark and flat."""
        marker = marker_of(dtype)
        if marker is None or self._all_excluded:
            return None
        floor = marker * (1 - MARKER_SLACK)
        gate = (floor - self._dark_max) * self._invflat_min * float(scale) * (1 - MARKER_SLACK)
        if not (gate > 0 and math.isfinite(gate)):
            gate = -math.inf  # every kept pixel is traced back

        def test(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
            dark = self._dark_map[rows, cols] if self._dark_map.size else self._dark0
            invflat = self._invflat_map[rows, cols] if self._invflat_map.size else self._invflat0
            with np.errstate(divide="ignore", invalid="ignore"):
                scale64 = np.asarray(invflat, np.float64) * float(scale)
                raw = vals.astype(np.float64) / scale64 + dark
            return raw >= floor

        return gate, test
