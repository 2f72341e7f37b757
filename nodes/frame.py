"""Frame geometry: ROI crop (fixed, around a centre, or auto-centred), orientation, rebin.

One `frame` node does, in this order, each step optional:

1. crop: `roi = [row0, row1, col0, col1]` (numpy's frame[row0:row1, col0:col1]),
   or `size = [h, w]` around `centre = [row, col]` (rows from round(row) - h // 2,
   h of them, rounding half up; columns likewise; shifted to fit inside the
   frame), or around
   each frame's own centre of mass (`auto_centre`, pixels above `auto_cut`;
   the frame's middle if none): the crop's origin is then a per-point output
   `frame_origin` = [row0, col0];
2. orientation: `flip_rows` (np.flip axis 0), `flip_cols` (axis 1),
   `transpose`, then `rot90` quarter turns (np.rot90, counter-clockwise);
3. rebin: sums of `rebin` x `rebin` blocks; rows and columns that do not fill
   a block (bottom, right) are dropped. Integer sums widen (uint8/16 ->
   uint32, other integers -> int64), floats keep their type.

Output coordinates: with pixel (i, j) the square [i, i + 1) x [j, j + 1)
("edge" coordinates), a point (y, x) of the output frame is the point
A @ (y, x, 1) of the detector, A the 3x3 affine matrix `coordinates()`
returns (for an auto-centred crop, of a given origin). An output pixel's
centre (i + 0.5, j + 0.5) maps to the centre of the detector pixel (or of the
rebin block) it came from; `to_detector` does this for arrays of indices.

The node must come first. Nodes after it see frames of the output shape:
`output_scan(scan)` is the scan they are set up with (shape, dtype, and the
map in `start.meta[FRAME_META]`, which the geometry nodes read so a PONI
geometry of the detector still applies); per-pixel arrays of later nodes
(dark, flat, mask) must be given in the output geometry (`transform` converts
one from the detector's, for a fixed crop).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from nodes import decode
from nodes.kernels.rebin import centre_of_mass, rebin_sum
from stream.core.encoded import EncodedFrame
from stream.core.item import Item
from stream.core.messages import DetectorInfo
from stream.core.scan import Scan

FRAME_META = "peakstream_frame"  # start.meta key: {"map": [6], "detector_shape": [2], ...}


def _translate(r: float, c: float) -> np.ndarray:
    return np.array([[1.0, 0.0, r], [0.0, 1.0, c], [0.0, 0.0, 1.0]])


def frame_map_of(scan: Scan) -> tuple[tuple[float, ...] | None, tuple[int, int] | None]:
    """(pixel map for `Geometry`, detector shape) set by a frame node, or (None, None).

    ValueError if the map changes from frame to frame (auto-centred crop).
    """
    meta = scan.start.meta.get(FRAME_META)
    if not meta:
        return None, None
    if meta.get("per_point"):
        raise ValueError("the frame node crops around each frame's centre (auto_centre): a "
                         "fixed geometry cannot follow it")
    return tuple(float(v) for v in meta["map"]), tuple(meta["detector_shape"])


class Frame:
    """Crop, orient and rebin each frame (documented coordinates: `coordinates()`)."""

    kind: ClassVar[str] = "frame"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, roi: list[int] | None = None, centre: list[float] | None = None,
                 size: list[int] | None = None, auto_centre: bool = False,
                 auto_cut: float = 0.0, flip_rows: bool = False, flip_cols: bool = False,
                 transpose: bool = False, rot90: int = 0, rebin: int = 1) -> None:
        def ints(name, value, n, low):
            if value is None:
                return None
            if (not isinstance(value, list | tuple) or len(value) != n
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                               for v in value)):
                raise ValueError(f"frame: {name} must be {n} ints >= {low}, got {value!r}")
            return tuple(value)
        self.roi = ints("roi", roi, 4, 0)
        self.size = ints("size", size, 2, 1)
        if centre is not None and (not isinstance(centre, list | tuple) or len(centre) != 2 or
                                   not all(isinstance(v, int | float) and math.isfinite(v)
                                           for v in centre)):
            raise ValueError(f"frame: centre must be [row, col], got {centre!r}")
        self.centre = None if centre is None else (float(centre[0]), float(centre[1]))
        if self.roi is not None and (self.roi[1] <= self.roi[0] or self.roi[3] <= self.roi[2]):
            raise ValueError(f"frame: roi [row0, row1, col0, col1] must have row0 < row1 and "
                             f"col0 < col1, got {roi!r}")
        if self.roi is not None and (self.centre is not None or auto_centre or size):
            raise ValueError("frame: give roi, or size with centre or auto_centre, not both")
        if (self.centre is not None or auto_centre) and self.size is None:
            raise ValueError("frame: centre and auto_centre need size = [rows, cols]")
        if self.size is not None and self.centre is None and not auto_centre:
            raise ValueError("frame: size needs centre = [row, col] or auto_centre = true")
        if self.centre is not None and auto_centre:
            raise ValueError("frame: give centre or auto_centre, not both")
        if isinstance(rot90, bool) or not isinstance(rot90, int):
            raise ValueError(f"frame: rot90 must be an int, got {rot90!r}")
        if isinstance(rebin, bool) or not isinstance(rebin, int) or rebin < 1:
            raise ValueError(f"frame: rebin must be an int >= 1, got {rebin!r}")
        if not math.isfinite(auto_cut):
            raise ValueError(f"frame: auto_cut must be finite, got {auto_cut!r}")
        self.auto_centre, self.auto_cut = bool(auto_centre), float(auto_cut)
        self.flip_rows, self.flip_cols, self.transpose = flip_rows, flip_cols, transpose
        self.rot90, self.rebin = rot90 % 4, rebin
        self.in_shape: tuple[int, int] | None = None
        self.out_shape: tuple[int, int] | None = None
        self.origin: tuple[int, int] = (0, 0)  # fixed crops
        self._orient = np.eye(3)  # crop-output coordinates -> output coordinates, inverse

    # ------------------------------------------------------------ shapes and maps

    @property
    def min_shape(self) -> tuple[int, int]:
        """The smallest detector frame the crop fits in."""
        if self.roi is not None:
            return self.roi[1], self.roi[3]
        return self.size if self.size is not None else (1, 1)

    def setup(self, scan: Scan) -> None:
        _, info = scan.detector()
        self.prepare(tuple(int(n) for n in info.shape))
        decode.warmup(info.dtype)
        tiny = np.zeros((4, 4), info.dtype)  # compile the kernels before the first point
        if self.rebin > 1:
            rebin_sum(tiny[::-1], 2, 2, np.empty((2, 2), self.out_dtype(info.dtype)))
            rebin_sum(tiny, 2, 2, np.empty((2, 2), self.out_dtype(info.dtype)))
        if self.auto_centre:
            centre_of_mass(tiny, self.auto_cut)

    def prepare(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Set the input shape; return the output shape (ValueError if the crop does not fit)."""
        h, w = shape
        if self.roi is not None:
            r0, r1, c0, c1 = self.roi
            if r1 > h or c1 > w:
                raise ValueError(f"frame: roi {list(self.roi)} does not fit frames of shape "
                                 f"{shape}")
            self.origin, crop = (r0, c0), (r1 - r0, c1 - c0)
        elif self.size is not None:
            if self.size[0] > h or self.size[1] > w:
                raise ValueError(f"frame: size {list(self.size)} larger than frames of shape "
                                 f"{shape}")
            crop = self.size
            if self.centre is not None:
                self.origin = self._origin_at(self.centre, shape)
        else:
            self.origin, crop = (0, 0), (h, w)
        # orientation: out -> crop coordinates, step by step on the current shape
        m, (ch, cw) = np.eye(3), crop
        if self.flip_rows:
            m = m @ np.array([[-1.0, 0, ch], [0, 1, 0], [0, 0, 1]])
        if self.flip_cols:
            m = m @ np.array([[1.0, 0, 0], [0, -1, cw], [0, 0, 1]])
        if self.transpose:
            m = m @ np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
            ch, cw = cw, ch
        for _ in range(self.rot90):
            m = m @ np.array([[0.0, 1, 0], [-1, 0, cw], [0, 0, 1]])
            ch, cw = cw, ch
        f = self.rebin
        out = (ch // f, cw // f)
        if 0 in out:
            raise ValueError(f"frame: rebin {f} leaves nothing of a {ch} x {cw} crop")
        self._orient = m @ np.diag([float(f), float(f), 1.0])
        self.in_shape, self.out_shape = (h, w), out
        return out

    def _origin_at(self, centre: tuple[float, float], shape: tuple[int, int]) -> tuple[int, int]:
        h, w = self.size
        r0 = min(max(math.floor(centre[0] + 0.5) - h // 2, 0), shape[0] - h)
        c0 = min(max(math.floor(centre[1] + 0.5) - w // 2, 0), shape[1] - w)
        return r0, c0

    def coordinates(self, origin: tuple[int, int] | None = None) -> np.ndarray:
        """A (3x3): output edge coordinates (y, x, 1) -> detector edge coordinates."""
        r0, c0 = self.origin if origin is None else origin
        return _translate(r0, c0) @ self._orient

    def to_detector(self, rows: np.ndarray, cols: np.ndarray,
                    origin: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Detector edge coordinates (Y, X) of the centres of output pixels (rows, cols)."""
        a = self.coordinates(origin)
        y, x = np.asarray(rows, np.float64) + 0.5, np.asarray(cols, np.float64) + 0.5
        return a[0, 0] * y + a[0, 1] * x + a[0, 2], a[1, 0] * y + a[1, 1] * x + a[1, 2]

    def out_dtype(self, dtype: Any) -> np.dtype:
        dtype = np.dtype(dtype)
        if self.rebin == 1:
            return dtype
        if dtype.kind == "f":
            return np.dtype(np.float64 if dtype.itemsize > 4 else np.float32)
        if dtype.kind in "ub" and dtype.itemsize <= 2:
            return np.dtype(np.uint32)
        return np.dtype(np.int64)

    def output_scan(self, scan: Scan) -> Scan:
        """The scan as the next nodes see it: output shape and dtype, and the pixel map."""
        name, info = scan.detector()
        self.prepare(tuple(int(n) for n in info.shape))
        prev = scan.start.meta.get(FRAME_META) or {}
        a = self.coordinates()
        if prev:
            p = prev["map"]
            a = np.array([[p[0], p[1], p[2]], [p[3], p[4], p[5]], [0, 0, 1]]) @ a
        meta = dict(scan.start.meta)
        meta[FRAME_META] = {"map": [float(v) for v in a[:2].ravel()],
                            "detector_shape": list(prev.get("detector_shape", self.in_shape)),
                            "per_point": bool(prev.get("per_point")) or self.auto_centre}
        out = DetectorInfo(self.out_shape, str(self.out_dtype(info.dtype)))
        if dataclasses.is_dataclass(info):  # keep the detector's own maps, in our geometry
            maps = {}
            for key in ("flatfield", "pixel_mask"):
                value = getattr(info, key, None)
                if isinstance(value, np.ndarray) and value.shape == self.in_shape:
                    maps[key] = None if self.auto_centre else self._map(key, value)
            out = dataclasses.replace(info, shape=self.out_shape,
                                      dtype=str(self.out_dtype(info.dtype)), **maps)
        detectors = {**scan.start.detectors, name: out}
        start = dataclasses.replace(scan.start, detectors=detectors, meta=meta)
        return dataclasses.replace(scan, start=start)

    def scan_outputs(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        """The coordinate map, written once per scan (per point `frame_origin` if auto-centred)."""
        attrs = {"description": "output edge coordinates (y, x, 1) -> detector (Y, X, 1)",
                 "input_shape": str(list(self.in_shape or ())),
                 "output_shape": str(list(self.out_shape or ()))}
        if self.auto_centre:
            attrs["origin"] = "per point: frame_origin [row0, col0] replaces the translation"
        return {"frame_map": (self.coordinates(), attrs)}

    # ------------------------------------------------------------ frames

    def apply(self, frame: np.ndarray, origin: tuple[int, int] | None = None) -> np.ndarray:
        """The output frame of one input frame (the crop at `origin` if given)."""
        r0, c0 = self.origin if origin is None else origin
        if self.roi is not None:
            h, w = self.roi[1] - self.roi[0], self.roi[3] - self.roi[2]
        elif self.size is not None:
            h, w = self.size
        else:
            h, w = frame.shape
        out = frame[r0:r0 + h, c0:c0 + w]
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        if self.transpose:
            out = out.T
        if self.rot90:
            out = np.rot90(out, self.rot90)
        if self.rebin > 1:
            f = self.rebin
            dest = np.empty((out.shape[0] // f, out.shape[1] // f), self.out_dtype(frame.dtype))
            return rebin_sum(out, f, f, dest)
        return np.ascontiguousarray(out)

    def _map(self, key: str, value: np.ndarray) -> np.ndarray:
        """A detector map in our geometry: a rebinned mask excludes a block with any bad
        pixel, a rebinned flatfield (a gain) is the block's mean."""
        if key == "pixel_mask":
            return (self.apply(np.asarray(value != 0, np.uint8)) != 0).astype(np.uint8)
        out = self.apply(np.asarray(value, np.float64))
        return out / float(self.rebin * self.rebin)

    def transform(self, array: np.ndarray) -> np.ndarray:
        """A per-pixel array (dark, flat, mask) of the detector in the output geometry.

        Rebinned arrays are sums; only fixed crops (not auto_centre).
        """
        if self.auto_centre:
            raise ValueError("frame: per-pixel arrays cannot follow an auto-centred crop")
        if self.in_shape is None:
            self.prepare(array.shape)
        return self.apply(array)

    def process(self, item: Item) -> Item:
        frame = item.frame
        if frame is None:
            raise ValueError("frame: no dense frame (sparse frames cannot be cropped here)")
        if isinstance(frame, EncodedFrame):
            frame = decode.dense(frame)
        if self.in_shape is None:
            self.prepare(frame.shape)
        if tuple(frame.shape) != self.in_shape:
            raise ValueError(f"frame: frame has shape {tuple(frame.shape)} but the node was set "
                             f"up for {self.in_shape}")
        origin = None
        if self.auto_centre:
            r, c, weight = centre_of_mass(frame, self.auto_cut)
            centre = (r, c) if weight > 0 else ((frame.shape[0] - 1) / 2, (frame.shape[1] - 1) / 2)
            origin = self._origin_at(centre, frame.shape)
            item.outputs["frame_origin"] = np.array(origin, np.int32)
        item.frame = self.apply(frame, origin)
        return item
