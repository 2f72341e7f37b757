"""Dark, flat and static-mask correction of a detector frame."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stream.core.item import Item
from stream.core.scan import Scan


def marker_of(dtype: np.dtype) -> float | None:
    """The raw value that marks a gap or a bad pixel in frames of `dtype`: the largest of
    an unsigned integer dtype (EIGER, Lima: 65535, 2**32 - 1), or None (signed and float
    frames: their markers, -1 or NaN, are never above a cut)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else None


def shown(value: object) -> str:
    """A value for an error message: an array by its shape and dtype (its repr would be
    its numbers, a kilobyte of them for a calibration map), anything else by repr."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    return repr(value)


def nan_markers(raw: np.ndarray, frame: np.ndarray) -> None:
    """NaN in the float `frame` where the raw frame holds its dtype's marker value (a
    corrected or scaled marker would be a number with no meaning)."""
    marker = marker_of(raw.dtype)
    if marker is not None:
        np.copyto(frame, np.nan, where=raw == raw.dtype.type(marker))


def check_shape(kind: str, name: str, array: np.ndarray | None, scan: Scan) -> None:
    """Raise ValueError if a per-pixel `array` does not match the scan's detector (its
    frames after a `frame` node: the message says so when it fits those before)."""
    if array is None:
        return
    from nodes.frame import FRAME_META

    detector, info = scan.detector()
    shape, frames = tuple(array.shape), tuple(info.shape)
    if shape == frames:
        return
    before = (scan.start.meta.get(FRAME_META) or {}).get("detector_shape")
    if before is not None and tuple(before) == shape:
        raise ValueError(f"{kind}: {name} has shape {shape}, detector {detector!r}'s before "
                         f"the frame node, whose crop, rotation or rebin makes its frames "
                         f"{frames}: give {name} cropped, rotated and rebinned alike")
    raise ValueError(f"{kind}: {name} has shape {shape} but detector {detector!r} frames "
                     f"have shape {frames}")


def _as_map(name: str, value: np.ndarray | float | None) -> np.ndarray | float | None:
    if value is None:
        return value
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return np.ascontiguousarray(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return float(value)
    if isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"correct: {name} must be a 2D array or a number, got {shown(value)}")


def _dark32(dark: np.ndarray | float | None) -> tuple[np.ndarray | np.float32 | None,
                                                       np.ndarray | None]:
    """float32 dark, and where it is finite (for a map)."""
    if dark is None:
        return None, None
    if isinstance(dark, float):
        if not np.isfinite(dark):
            raise ValueError(f"correct: dark must be a finite number, got {dark!r}")
        return np.float32(dark), None
    dark32 = np.array(dark, dtype=np.float32)
    return dark32, np.isfinite(dark32)


def _invflat32(flat: np.ndarray | float | None) -> tuple[np.ndarray | np.float32 | None,
                                                         np.ndarray | None]:
    """float32(1 / flat), and where flat is positive and finite with a usable inverse."""
    if flat is None:
        return None, None
    flat64 = np.asarray(flat, np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        invflat = (1.0 / flat64).astype(np.float32)
    ok = (flat64 > 0) & np.isfinite(flat64) & np.isfinite(invflat) & (invflat > 0)
    if isinstance(flat, float):
        if not ok:
            raise ValueError(f"correct: flat must be a positive finite number, got {flat!r}")
        return np.float32(invflat), None
    return invflat, ok


class Correct:
    """corrected = (float32(raw) - dark) * float32(1 / flat); masked pixels NaN, and so
    are the pixels of an unsigned raw frame at its dtype's largest value (`marker_of`).

    With no flat (or no mask) of its own, `setup(scan)` takes the detector's:
    the start message's `flatfield` (DECTRIS: a multiplicative factor, so it
    is used as 1 / flat, corrected = (raw - dark) * flatfield) and
    `pixel_mask` (nonzero = bad pixel). Its own arrays always win; a scan
    without detector maps gets the node's own arrays back.
    """

    kind: ClassVar[str] = "correct"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, dark: np.ndarray | float | None = None,
                 flat: np.ndarray | float | None = None,
                 mask: np.ndarray | None = None) -> None:
        dark = _as_map("dark", dark)
        flat = _as_map("flat", flat)
        if mask is not None and (not isinstance(mask, np.ndarray) or mask.ndim != 2):
            raise ValueError(f"correct: mask must be a 2D array, got {shown(mask)}")
        mask = None if mask is None else np.ascontiguousarray(mask)
        shapes = {k: v.shape for k, v in (("dark", dark), ("flat", flat), ("mask", mask))
                  if isinstance(v, np.ndarray)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"correct: dark, flat and mask differ in shape: {shapes}")
        self._own = (dark, flat, mask)
        self.detector_maps: tuple[str, ...] = ()  # which of the detector's maps are in use
        self._use(dark, flat, mask)

    def _use(self, dark, flat, mask, flatfield: np.ndarray | None = None) -> None:
        """What the unfused and the fused paths both use: float32 dark and 1 / flat
        (the detector's `flatfield` itself when given), and `mask` (nonzero =
        excluded) extended by the pixels where flat is not positive and finite or
        dark is not finite. Excluded pixels hold dark 0 and invflat 1, so no inf or
        NaN comes out of them before they are masked."""
        self.dark, self.flat, self.flatfield = dark, flat, flatfield
        self.dark32, dark_ok = _dark32(dark)
        if flatfield is not None:
            gain = np.asarray(flatfield, np.float64)
            self.invflat32 = gain.astype(np.float32)
            flat_ok = (gain > 0) & np.isfinite(gain) & np.isfinite(self.invflat32)
        else:
            self.invflat32, flat_ok = _invflat32(flat)
        excluded = [m for m in (None if mask is None else mask != 0,
                                None if dark_ok is None else ~dark_ok,
                                None if flat_ok is None else ~flat_ok) if m is not None]
        self.mask: np.ndarray | None = np.logical_or.reduce(excluded) if excluded else None
        if self.mask is not None and mask is None and not self.mask.any():
            self.mask = None
        if self.mask is not None:
            for array, neutral in ((self.dark32, 0), (self.invflat32, 1)):
                if isinstance(array, np.ndarray):
                    array[self.mask] = neutral

    def setup(self, scan: Scan) -> None:
        dark, flat, mask = self._own
        _, info = scan.detector()
        flatfield = getattr(info, "flatfield", None) if flat is None else None
        pixel_mask = getattr(info, "pixel_mask", None) if mask is None else None
        used = tuple(k for k, v in (("flatfield", flatfield), ("pixel_mask", pixel_mask))
                     if v is not None)
        if used or self.detector_maps:  # the detector's maps, or back to our own
            check_shape(self.kind, "dark", dark if isinstance(dark, np.ndarray) else None, scan)
            self._use(dark, flat, mask if pixel_mask is None else pixel_mask, flatfield)
            self.detector_maps = used
        for name in ("dark", "flat", "flatfield", "mask"):
            value = getattr(self, name)
            check_shape(self.kind, name, value if isinstance(value, np.ndarray) else None, scan)

    def scan_warnings(self, scan: Scan) -> list[str]:
        """Most of the detector excluded: a mask of the other convention (1 = a good
        pixel; ours is nonzero = bad, NaN included), or a flat of zeros. The scan runs,
        but keeps few pixels or none, each frame without a word otherwise."""
        if self.mask is None or self.mask.size == 0:
            return []
        share = float(np.count_nonzero(self.mask)) / self.mask.size
        if share <= 0.5:
            return []
        return [f"correct: {share:.0%} of the pixels are excluded (mask nonzero, NaN "
                f"included, = bad; flat not positive and finite; dark not finite): is the "
                f"mask one of 1 = good pixels?"]

    def check_frame(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError if a frame's shape does not match the per-pixel arrays."""
        for name in ("dark", "flat", "flatfield", "mask"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.shape != tuple(shape):
                raise ValueError(f"correct: {name} has shape {value.shape} but the frame "
                                 f"has shape {tuple(shape)}")

    def process(self, item: Item) -> Item:
        if item.frame is None:  # a sparse frame: its masked pixels go (nodes.sparse)
            if item.sparse is not None and self.mask is not None:
                self.check_frame(item.sparse.shape)
                sparse = item.sparse
                item.sparse = sparse.take(~self.mask[sparse.row, sparse.col])
            return item
        self.check_frame(item.frame.shape)
        raw = item.frame
        frame = np.array(raw, dtype=np.float32)
        if self.dark32 is not None:
            np.subtract(frame, self.dark32, out=frame)
        if self.invflat32 is not None:
            np.multiply(frame, self.invflat32, out=frame)
        if self.mask is not None:
            frame[self.mask] = np.nan
        nan_markers(np.asarray(raw), frame)
        item.frame = frame
        return item
