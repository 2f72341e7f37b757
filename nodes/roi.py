"""ROI sums, annulus (circle) sums and ROI tiles of a frame, for maps (xrsmap's sum and
composite maps).

Coordinates are frame pixels, pixel (row, col) centred at (row, col):

* an ROI is `[row0, row1, col0, col1]`, half-open, as numpy slicing
  `frame[row0:row1, col0:col1]` (it must lie inside the frame);
* an annulus is `[row, col, radius, width]`: the pixels whose centre lies at a
  distance d from (row, col) with `radius - width / 2 <= d < radius + width / 2`
  (a disc: radius = width / 2);
* a tile is an ROI binned by an integer factor (sums of factor x factor pixels;
  rows and columns that do not fill a bin are dropped, as pyFAI's binning does).

NaN pixels (masked by `correct`) count as 0, and so, with `markers` (the
default, as the threshold's), do the pixels of an unsigned raw frame at its
dtype's largest value (EIGER / Lima module gaps and bad pixels,
`nodes.correct.marker_of`), which would otherwise add billions to a sum. On a
sparse frame (after the threshold) the sums are over the kept pixels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from nodes.correct import marker_of, nan_markers
from stream.core.item import Item, SparseFrame
from stream.core.scan import Scan

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_roi(roi: Sequence[int], shape: tuple[int, int] | None = None) -> tuple[int, ...]:
    """An ROI [row0, row1, col0, col1] as ints; ValueError if empty or outside `shape`."""
    if len(roi) != 4 or any(int(v) != v for v in roi):
        raise ValueError(f"ROI {list(roi)!r} must be 4 integers [row0, row1, col0, col1]")
    r0, r1, c0, c1 = (int(v) for v in roi)
    if not (0 <= r0 < r1 and 0 <= c0 < c1):
        raise ValueError(f"ROI {[r0, r1, c0, c1]} is empty or negative "
                         f"(row0 < row1, col0 < col1, half-open)")
    if shape is not None and (r1 > shape[0] or c1 > shape[1]):
        raise ValueError(f"ROI {[r0, r1, c0, c1]} lies outside the {shape[0]}x{shape[1]} frame")
    return r0, r1, c0, c1


def unmarked(part: np.ndarray, markers: bool = True) -> np.ndarray:
    """Part of a raw frame in float64 with NaN at its marker pixels (`markers` and an
    unsigned dtype), which the NaN-skipping sums then leave out; else `part` itself."""
    if not markers or marker_of(part.dtype) is None:
        return part
    values = part.astype(np.float64)
    nan_markers(part, values)
    return values


def roi_sum(frame: np.ndarray, roi: Sequence[int], markers: bool = True) -> float:
    """Sum of frame[row0:row1, col0:col1] (NaN and, with `markers`, markers as 0), float64."""
    r0, r1, c0, c1 = check_roi(roi, frame.shape)
    return float(np.nansum(unmarked(frame[r0:r1, c0:c1], markers), dtype=np.float64))


def annulus_mask(shape: tuple[int, int], centre: Sequence[float], radius: float,
                 width: float) -> np.ndarray:
    """Boolean image of the annulus (see the module docstring)."""
    rows = np.arange(shape[0], dtype=np.float64)[:, None] - centre[0]
    cols = np.arange(shape[1], dtype=np.float64)[None, :] - centre[1]
    d = np.sqrt(rows * rows + cols * cols)
    return (d >= radius - width / 2.0) & (d < radius + width / 2.0)


def annulus_index(shape: tuple[int, int], centre: Sequence[float], radius: float,
                  width: float) -> np.ndarray:
    """Flat indices (int64, ascending) of the annulus pixels, from its bounding box only."""
    if not width > 0 or not radius >= 0:
        raise ValueError(f"annulus radius {radius!r} must be >= 0 and width {width!r} > 0")
    outer = radius + width / 2.0
    r0 = max(0, int(np.floor(centre[0] - outer)))
    r1 = min(shape[0], int(np.ceil(centre[0] + outer)) + 1)
    c0 = max(0, int(np.floor(centre[1] - outer)))
    c1 = min(shape[1], int(np.ceil(centre[1] + outer)) + 1)
    if r0 >= r1 or c0 >= c1:
        return np.empty(0, np.int64)
    box = annulus_mask((r1 - r0, c1 - c0), (centre[0] - r0, centre[1] - c0), radius, width)
    rr, cc = np.nonzero(box)
    return (rr + r0).astype(np.int64) * shape[1] + (cc + c0)


def annulus_sum(frame: np.ndarray, centre: Sequence[float], radius: float, width: float,
                index: np.ndarray | None = None, markers: bool = True) -> float:
    """Sum of the annulus pixels (NaN and, with `markers`, markers as 0); `index` from
    annulus_index saves recomputing."""
    if index is None:
        index = annulus_index(frame.shape, centre, radius, width)
    return float(np.nansum(unmarked(np.ravel(frame).take(index), markers), dtype=np.float64))


def bin_sum(image: np.ndarray, factor: int) -> np.ndarray:
    """Sum of factor x factor blocks (float64, NaN as 0); the remainder rows/cols dropped."""
    if factor < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    ny, nx = image.shape[0] // factor, image.shape[1] // factor
    if ny == 0 or nx == 0:
        raise ValueError(f"a {image.shape[0]}x{image.shape[1]} ROI is smaller than the "
                         f"binning factor {factor}")
    blocks = image[:ny * factor, :nx * factor].reshape(ny, factor, nx, factor)
    return np.nansum(blocks, axis=(1, 3), dtype=np.float64)


def roi_tile(frame: np.ndarray, roi: Sequence[int], factor: int = 1,
             markers: bool = True) -> np.ndarray:
    """The ROI cropped and binned (float32): one tile of a composite map."""
    r0, r1, c0, c1 = check_roi(roi, frame.shape)
    return bin_sum(unmarked(frame[r0:r1, c0:c1], markers), factor).astype(np.float32)


def tile_shape(roi: Sequence[int], factor: int = 1) -> tuple[int, int]:
    r0, r1, c0, c1 = check_roi(roi)
    return (r1 - r0) // factor, (c1 - c0) // factor


# ---------------------------------------------------------------- sparse frames


def sparse_roi_sum(sparse: SparseFrame, roi: Sequence[int]) -> float:
    r0, r1, c0, c1 = check_roi(roi, sparse.shape)
    inside = (sparse.row >= r0) & (sparse.row < r1) & (sparse.col >= c0) & (sparse.col < c1)
    return float(np.nansum(sparse.intensity[inside], dtype=np.float64))


def sparse_annulus_sum(sparse: SparseFrame, centre: Sequence[float], radius: float,
                       width: float) -> float:
    dr = sparse.row.astype(np.float64) - centre[0]
    dc = sparse.col.astype(np.float64) - centre[1]
    d = np.sqrt(dr * dr + dc * dc)
    inside = (d >= radius - width / 2.0) & (d < radius + width / 2.0)
    return float(np.nansum(sparse.intensity[inside], dtype=np.float64))


def sparse_tile(sparse: SparseFrame, roi: Sequence[int], factor: int = 1) -> np.ndarray:
    r0, r1, c0, c1 = check_roi(roi, sparse.shape)
    ny, nx = (r1 - r0) // factor, (c1 - c0) // factor
    br = (sparse.row.astype(np.int64) - r0) // factor
    bc = (sparse.col.astype(np.int64) - c0) // factor
    inside = (sparse.row >= r0) & (sparse.col >= c0) & (br < ny) & (bc < nx)
    values = np.nan_to_num(sparse.intensity[inside].astype(np.float64), nan=0.0)
    tile = np.bincount(br[inside] * nx + bc[inside], values, minlength=ny * nx)
    return tile.reshape(ny, nx).astype(np.float32)


# ---------------------------------------------------------------- the node


def _names(prefix: str, given: Sequence[str] | None, n: int) -> list[str]:
    names = list(given) if given else [f"{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"roi_sums: {len(names)} {prefix}_names for {n} {prefix}s")
    for name in names:
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"roi_sums: {prefix} name {name!r} must be letters, digits, "
                             f"'_', '.' or '-'")
    if len(set(names)) != n:
        raise ValueError(f"roi_sums: {prefix}_names repeat a name: {names}")
    return names


class RoiSums:
    """Per point: `outputs["roi_<name>"]`, `outputs["annulus_<name>"]` (float64, shape ())
    and with `tiles`, `outputs["tile_<name>"]` (the ROI binned by `tile_bin`, float32)."""

    kind: ClassVar[str] = "roi_sums"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, rois: list[list[int]] | None = None,
                 roi_names: list[str] | None = None,
                 annuli: list[list[float]] | None = None,
                 annulus_names: list[str] | None = None,
                 tiles: bool = False, tile_bin: int = 1, markers: bool = True) -> None:
        self.rois = [check_roi(r) for r in (rois or [])]
        self.annuli = []
        for a in annuli or []:
            if len(a) != 4:
                raise ValueError(f"roi_sums: annulus {a!r} must be [row, col, radius, width]")
            row, col, radius, width = (float(v) for v in a)
            if not (width > 0 and radius >= 0):
                raise ValueError(f"roi_sums: annulus {a!r}: radius >= 0 and width > 0")
            self.annuli.append((row, col, radius, width))
        if not self.rois and not self.annuli:
            raise ValueError("roi_sums: give rois and/or annuli")
        if isinstance(tile_bin, bool) or tile_bin < 1:
            raise ValueError(f"roi_sums: tile_bin must be an integer >= 1, got {tile_bin!r}")
        if tiles and not self.rois:
            raise ValueError("roi_sums: tiles need rois")
        self.roi_names = _names("roi", roi_names, len(self.rois))
        self.annulus_names = _names("annulus", annulus_names, len(self.annuli))
        if not isinstance(markers, bool):
            raise ValueError(f"roi_sums: markers must be true or false, got {markers!r}")
        self.markers = markers  # raw pixels at the dtype's largest value count as 0
        self.tiles, self.tile_bin = bool(tiles), int(tile_bin)
        if self.tiles:
            for r in self.rois:
                if min(tile_shape(r, self.tile_bin)) < 1:
                    raise ValueError(f"roi_sums: ROI {list(r)} is smaller than tile_bin "
                                     f"{self.tile_bin}")
        self._shape: tuple[int, int] | None = None
        self._index: list[np.ndarray] = []

    @property
    def min_shape(self) -> tuple[int, int]:
        """The smallest frame the ROIs fit in (annuli are cut at the frame's edge)."""
        return (max((r[1] for r in self.rois), default=1),
                max((r[3] for r in self.rois), default=1))

    def setup(self, scan: Scan) -> None:
        _, info = scan.detector()
        self._prepare(tuple(info.shape))

    def _prepare(self, shape: tuple[int, int]) -> None:
        for r in self.rois:
            check_roi(r, shape)
        self._index = [annulus_index(shape, (a[0], a[1]), a[2], a[3]) for a in self.annuli]
        self._shape = shape

    def process(self, item: Item) -> Item:
        if item.frame is not None:
            frame = item.frame
            if not isinstance(frame, np.ndarray):  # still compressed (bslz4, lz4)
                from nodes.decode import dense

                frame = dense(frame)
            if frame.shape != self._shape:
                self._prepare(frame.shape)
            for name, roi in zip(self.roi_names, self.rois, strict=True):
                item.outputs[f"roi_{name}"] = np.array(roi_sum(frame, roi, self.markers))
                if self.tiles:
                    item.outputs[f"tile_{name}"] = roi_tile(frame, roi, self.tile_bin,
                                                            self.markers)
            for name, a, idx in zip(self.annulus_names, self.annuli, self._index, strict=True):
                item.outputs[f"annulus_{name}"] = np.array(
                    annulus_sum(frame, a[:2], a[2], a[3], idx, self.markers))
        elif item.sparse is not None:
            sp = item.sparse
            for name, roi in zip(self.roi_names, self.rois, strict=True):
                item.outputs[f"roi_{name}"] = np.array(sparse_roi_sum(sp, roi))
                if self.tiles:
                    item.outputs[f"tile_{name}"] = sparse_tile(sp, roi, self.tile_bin)
            for name, a in zip(self.annulus_names, self.annuli, strict=True):
                item.outputs[f"annulus_{name}"] = np.array(
                    sparse_annulus_sum(sp, a[:2], a[2], a[3]))
        return item
