"""Per-frame background and a per-pixel threshold map for the threshold node.

Radial mode (a PONI geometry given): the frame's pixels are binned by their
centre's radial position (`npt` bins of `unit`, no splitting, pyFAI's bins)
and each bin gets a background level and spread (`kernels.background`):
`method` "sigma_clip" (pyFAI's sigma_clip_ng idea: mean and spread of the
pixels within `clip` spreads, iterated up to `max_iter` times) or "median"
(median and 1.4826 * MAD). With `correct_solid_angle` / `polarization_factor`
the statistics are of v / norm and the maps are scaled back by norm. Bins
with no valid pixel take the values interpolated from their neighbours.

The per-pixel background is the level of the pixel's bin, or (`interpolate`,
the default) linearly interpolated in the radial position between the
centres of the two nearest bins (constant beyond the first and last centre).
The threshold map is background + max(nsigma * spread, min_excess); a pixel
in no bin (masked, outside `radial_range`, NaN) gets +inf, so it is never
kept. With `subtract`, the frame becomes frame - background (NaN in no bin)
and the map is max(nsigma * spread, min_excess) alone.

Fixed mode (`image` given, e.g. a median over frames from stats): that image
is the background, the spread is `sigma_image` or sqrt(max(image, 1)).

Invalid pixels are masked: out of the statistics, +inf in the map, NaN in a
subtracted frame. They are those of `mask` (in both modes), those equal to
`dummy` within `delta_dummy` (compared with the value this node sees, as
integrate does; with a `poni`, the mask and dummy of the detector it names
are the defaults, `stream.config.detector`: a Pilatus's -1 gaps and -2 bad
pixels), NaN ones, and with `markers` (the default, as the threshold's) the
pixels of an unsigned raw frame at its dtype's largest value (EIGER / Lima
module gaps and bad pixels, `nodes.correct.marker_of`).

The map goes to the next threshold node through the item
(`item.outputs[threshold.CUT_MAP]`, taken out there, never stored); the
level and spread per bin are outputs `<name>` and `<name>_sigma`; the node's
settings (what the detector gave among them) go once per scan to `<name>_config`.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any, ClassVar

import numpy as np

from nodes.correct import marker_of, shown
from nodes.geometry import Geometry, radial_unit
from nodes.integrate import check_shape_of, detector_shape_of, frame_geometry
from nodes.integrate_plan import build_plan, check_range
from nodes.kernels.background import median_mad, pixel_maps, scatter, sigma_clip
from nodes.threshold import CUT_MAP, CUT_MIN, native_frame
from stream.core.item import Item
from stream.core.scan import Scan

METHODS = ("sigma_clip", "median")
NO_NORM = np.zeros(0, np.float32)


def fill_empty(values: np.ndarray) -> np.ndarray:
    """NaN bins interpolated from the valid ones (constant beyond the ends); all NaN: 0."""
    ok = np.isfinite(values)
    if ok.all():
        return values
    if not ok.any():
        return np.zeros_like(values)
    idx = np.arange(values.size)
    return np.interp(idx, idx[ok], values[ok])


class Background:
    """Background level per radial bin (or a fixed image) and the threshold map it gives."""

    kind: ClassVar[str] = "background"
    settable: ClassVar[tuple[str, ...]] = ("nsigma", "min_excess")
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"nsigma": (0.0, 1e3),
                                                        "min_excess": (0.0, 1e9)}

    def __init__(self, *, dist: float | None = None, poni1: float | None = None,
                 poni2: float | None = None, pixel1: float | None = None,
                 pixel2: float | None = None, rot1: float = 0.0, rot2: float = 0.0,
                 rot3: float = 0.0, wavelength: float = 0.0, orientation: int = 3,
                 npt: int = 500, unit: str = "2th_deg", method: str = "sigma_clip",
                 clip: float = 3.0, max_iter: int = 5, nsigma: float = 5.0,
                 min_excess: float = 0.0, interpolate: bool = True, subtract: bool = False,
                 radial_range: list[float] | None = None, mask: np.ndarray | None = None,
                 correct_solid_angle: bool = False, polarization_factor: float | None = None,
                 polarization_offset: float = 0.0, image: np.ndarray | None = None,
                 sigma_image: np.ndarray | None = None, name: str = "background",
                 markers: bool = True, detector_shape: list[int] | None = None,
                 dummy: float | None = None, delta_dummy: float = 0.0,
                 detector: str = "") -> None:
        self.detector_shape = detector_shape_of("background", detector_shape)
        geometry = (dist, poni1, poni2, pixel1, pixel2)
        self.geometry: Geometry | None = None
        if image is None:
            if any(v is None for v in geometry):
                raise ValueError("background: give a geometry (dist, poni1, poni2, pixel1, "
                                 "pixel2) or a fixed background image")
            self.geometry = Geometry(dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2,
                                     wavelength, orientation)
            if radial_unit(unit)[0] == "q" and not wavelength > 0:
                raise ValueError(f"background: unit {unit!r} needs a wavelength (m) > 0")
        for key, value in (("image", image), ("sigma_image", sigma_image), ("mask", mask)):
            if value is not None and (not isinstance(value, np.ndarray) or value.ndim != 2):
                raise ValueError(f"background: {key} must be a 2D array, got {shown(value)}")
        if sigma_image is not None and (image is None or sigma_image.shape != image.shape):
            raise ValueError("background: sigma_image needs an image of the same shape")
        if method not in METHODS:
            raise ValueError(f"background: method must be one of {', '.join(METHODS)}, "
                             f"got {method!r}")
        for key, value, low in (("npt", npt, 1), ("max_iter", max_iter, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"background: {key} must be an int >= {low}, got {value!r}")
        for key, value in (("clip", clip), ("nsigma", nsigma), ("min_excess", min_excess)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"background: {key} must be a finite number >= 0, got {value!r}")
        if not isinstance(markers, bool):
            raise ValueError(f"background: markers must be true or false, got {markers!r}")
        if dummy is not None and not math.isfinite(dummy):
            raise ValueError(f"background: dummy must be finite, got {dummy!r}")
        if not (math.isfinite(delta_dummy) and delta_dummy >= 0):
            raise ValueError(f"background: delta_dummy must be finite and >= 0, "
                             f"got {delta_dummy!r}")
        self.markers = markers  # raw pixels at the dtype's largest value are masked
        self.dummy, self.delta_dummy = dummy, float(delta_dummy)
        self.detector = detector  # what mask / dummy the PONI's detector gave (provenance)
        self.npt, self.unit, self.method = npt, unit, method
        self.clip, self.max_iter = float(clip), max_iter
        self.nsigma, self.min_excess = float(nsigma), float(min_excess)
        self.interpolate, self.subtract, self.name = interpolate, subtract, name
        self.radial_range = check_range("background: radial_range", radial_range)
        self.mask = None if mask is None else np.ascontiguousarray(mask)
        self.correct_solid_angle = correct_solid_angle
        self.polarization_factor, self.polarization_offset = (polarization_factor,
                                                              float(polarization_offset))
        self.image = None if image is None else np.ascontiguousarray(image, np.float32)
        self.sigma_image = (None if sigma_image is None else
                            np.ascontiguousarray(sigma_image, np.float32))
        self.to_threshold = True  # hand the cut map on (`fuse` clears it: no threshold after)
        self._local = threading.local()
        self.shape: tuple[int, int] | None = None
        self._fixed: tuple[float, float, np.ndarray, float] | None = None

    # ------------------------------------------------------------ setup

    def setup(self, scan: Scan) -> None:
        _, info = scan.detector()
        shape = tuple(int(n) for n in info.shape)
        for key in ("image", "sigma_image", "mask"):
            value = getattr(self, key)
            if value is not None and value.shape != shape:
                whose = (f" (of the PONI's detector {self.detector.split(':')[0]})"
                         if key == "mask" and "mask" in self.detector else "")
                raise ValueError(f"background: {key}{whose} has shape {value.shape} but frames "
                                 f"have shape {shape}")
        self.shape = shape
        check_shape_of("background", self.detector_shape, scan)
        if self.geometry is not None:
            self._prepare(frame_geometry(self.geometry, scan), shape)
        self.warmup(info.dtype)

    def _prepare(self, geometry: Geometry, shape: tuple[int, int]) -> None:
        """Bins of each pixel, and its interpolation between bin centres."""
        use_norm = self.correct_solid_angle or self.polarization_factor is not None
        plan = build_plan(geometry, shape, npt=self.npt, unit=self.unit,
                          radial_range=self.radial_range, mask=self.mask,
                          solid_angle=self.correct_solid_angle,
                          polarization_factor=self.polarization_factor,
                          polarization_offset=self.polarization_offset)
        self.pbin = plan.pbin
        self.norm = plan.norm if use_norm else NO_NORM
        self.radial = plan.radial
        # where each pixel goes in bin order (each bin's pixels in raster order)
        counts = np.bincount(self.pbin[self.pbin >= 0], minlength=self.npt)
        self.start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        order = np.argsort(self.pbin, kind="stable")[self.pbin.size - int(counts.sum()):]
        dest = np.full(self.pbin.size, -1, np.int32)
        dest[order] = np.arange(order.size, dtype=np.int32)
        self.dest = dest
        # interpolation: lower bin lo and weight w of lo + 1 (the arrays hold npt + 1 bins)
        lo = self.pbin.copy()
        w = np.zeros(lo.size, np.float32)
        if self.interpolate and self.npt > 1:
            pos = geometry.radial(shape, self.unit).ravel()
            delta = plan.radial[1] - plan.radial[0]
            f = (pos - plan.radial[0]) / delta
            base = np.clip(np.floor(f), 0, self.npt - 2)
            inside = lo >= 0
            lo[inside] = base[inside].astype(np.int32)
            w[inside] = np.clip(f - base, 0.0, 1.0)[inside].astype(np.float32)
        self.lo, self.w = lo, w

    def warmup(self, dtype: Any = "float32") -> None:
        """Compile the kernels for `dtype` and float32 on a tiny frame."""
        pbin, one = np.zeros(6, np.int32), np.ones(6, np.float32)
        start, vals, keep = np.array([0, 6]), np.zeros(6, np.float32), np.zeros(6, np.bool_)
        for dt in {np.dtype(dtype), np.dtype(np.float32)}:
            raw = np.zeros(6, dt)
            masked = self.masked(dt)
            for norm in (NO_NORM, one):
                norms = np.ones(norm.size, np.float32)
                scatter(raw, pbin, norm, vals, norms, *masked)
                sigma_clip(vals, norms, start, 3.0, 1, keep)
                median_mad(vals, norms, start, np.zeros(6))
                pixel_maps(raw, pbin, one, norm, np.zeros(2), np.zeros(2), 1.0, 0.0, True,
                           np.empty(6, np.float32), np.empty(6, np.float32), *masked)

    # ------------------------------------------------------------ per frame

    def masked(self, dtype: np.dtype) -> tuple[bool, float, bool, np.float32, np.float32]:
        """What the kernels leave out for frames of `dtype`: (check, value) of the marker,
        then (check, dummy, delta_dummy) as integrate's kernels take them."""
        marker = marker_of(dtype) if self.markers else None
        check = self.dummy is not None
        return (marker is not None, 0.0 if marker is None else marker, check,
                np.float32(self.dummy if check else 0.0), np.float32(self.delta_dummy))

    def invalid(self, frame: np.ndarray) -> np.ndarray | None:
        """Where a frame's pixels are markers or the dummy (fixed mode; None: nowhere)."""
        check, marker, check_dummy, dummy, delta = self.masked(frame.dtype)
        bad = frame == frame.dtype.type(marker) if check else None
        if check_dummy:
            near = frame == dummy if delta == 0 else np.abs(frame - dummy) <= delta
            bad = near if bad is None else bad | near
        return bad

    def levels(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(level, spread) per bin of one flattened frame (empty bins filled in)."""
        n = int(self.start[-1])
        vals, norms, keep = self._buffers(n, self.norm.size > 0)
        scatter(raw, self.dest, self.norm, vals, norms, *self.masked(raw.dtype))
        if self.method == "median":
            work = np.empty(int(np.diff(self.start).max(initial=1)))
            level, spread, _ = median_mad(vals, norms, self.start, work)
        else:
            level, spread, _ = sigma_clip(vals, norms, self.start, self.clip, self.max_iter,
                                          keep)
        return fill_empty(level), fill_empty(spread)

    def _buffers(self, n: int, with_norm: bool) -> tuple[np.ndarray, ...]:
        """This thread's bin-ordered buffers (values, norms, keep flags), reused."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None or bufs[0].size != n or (bufs[1].size > 0) != with_norm:
            bufs = (np.empty(n, np.float32), np.empty(n if with_norm else 0, np.float32),
                    np.empty(n, np.bool_))
            self._local.bufs = bufs
        return bufs

    def _fixed_map(self) -> tuple[np.ndarray, float]:
        """The threshold map of a fixed image (recomputed when nsigma or min_excess change)."""
        key = (self.nsigma, self.min_excess, self.subtract)
        if self._fixed is None or self._fixed[:3] != key:
            image = self.image.astype(np.float64)
            spread = (np.sqrt(np.maximum(image, 1.0)) if self.sigma_image is None
                      else self.sigma_image.astype(np.float64))
            excess = np.maximum(self.nsigma * spread, self.min_excess)
            cut = (excess if self.subtract else image + excess).astype(np.float32)
            if self.mask is not None:
                cut[self.mask.astype(bool)] = np.inf
            self._fixed = (*key, cut, float(cut.min()))
        return self._fixed[3], self._fixed[4]

    def process(self, item: Item) -> Item:
        if item.frame is None:
            raise ValueError("background: no dense frame (put it before the threshold)")
        frame = native_frame(np.asarray(item.frame))
        if self.shape is not None and frame.shape != self.shape:
            raise ValueError(f"background: frame has shape {frame.shape} but the node was set "
                             f"up for {self.shape}")
        if self.image is not None:
            gaps = self.invalid(frame)
            if self.subtract:
                item.frame = (frame.astype(np.float32) - self.image).astype(np.float32)
                for bad in (gaps, self.mask):
                    if bad is not None:
                        np.copyto(item.frame, np.nan, where=bad.astype(bool))
            if self.to_threshold:
                cut, lowest = self._fixed_map()
                if gaps is not None and gaps.any():  # masked in this frame: never kept
                    cut = np.where(gaps, np.float32(np.inf), cut)  # (lowest: still a bound)
                self._hand_on(item, cut, lowest)
            return item
        raw = frame.reshape(-1)
        level, spread = self.levels(raw)
        item.outputs[self.name] = level.astype(np.float32)
        item.outputs[f"{self.name}_sigma"] = spread.astype(np.float32)
        if not (self.to_threshold or self.subtract):
            return item
        pad = np.append(level, level[-1]), np.append(spread, spread[-1])
        cut = np.empty(frame.shape, np.float32)
        out = np.empty(frame.shape, np.float32) if self.subtract else cut
        lowest = pixel_maps(raw, self.lo, self.w, self.norm, pad[0], pad[1], self.nsigma,
                            self.min_excess, self.subtract, cut.reshape(-1), out.reshape(-1),
                            *self.masked(raw.dtype))
        if self.subtract:
            item.frame = out
        if self.to_threshold:
            self._hand_on(item, cut, lowest)
        return item

    @staticmethod
    def _hand_on(item: Item, cut: np.ndarray, lowest: float) -> None:
        """The cut map for the threshold node after this one (taken out there)."""
        item.outputs[CUT_MAP] = cut
        item.outputs[CUT_MIN] = np.array(lowest, np.float64)

    def unused(self, chain: list) -> dict[str, str]:
        """The settable parameters this node does not read in `chain` (which holds it),
        with why: nsigma and min_excess make only the cut map, which no node takes
        without a threshold after this one (a `set` would be recorded, change nothing)."""
        after = chain[next((i for i, n in enumerate(chain) if n is self), len(chain)) + 1:]
        if any(n.kind == "threshold" for n in after):
            return {}
        why = ("they make only the cut map of a threshold after this background node, and "
               "the chain has none (no cut map is made); the level, the spread and a "
               "subtracted frame do not depend on them")
        return {"nsigma": why, "min_excess": why}

    def config(self) -> dict[str, Any]:
        """The node's settings at the scan's start (provenance), pyFAI's names for the
        geometry and the invalid pixels, as integrate's."""
        g = self.geometry
        geometry = {} if g is None else {
            "dist": g.dist, "poni1": g.poni1, "poni2": g.poni2, "rot1": g.rot1,
            "rot2": g.rot2, "rot3": g.rot3, "pixel1": g.pixel1, "pixel2": g.pixel2,
            "wavelength": g.wavelength, "orientation": g.orientation, "npt": self.npt,
            "unit": self.unit, "radial_range": self.radial_range,
            "correctSolidAngle": self.correct_solid_angle,
            "polarization_factor": self.polarization_factor,
            "polarization_offset": self.polarization_offset, "method": self.method,
            "clip": self.clip, "max_iter": self.max_iter, "interpolate": self.interpolate}
        return {"mode": "fixed" if g is None else "radial", **geometry,
                "nsigma": self.nsigma, "min_excess": self.min_excess,
                "subtract": self.subtract, "dummy": self.dummy,
                "delta_dummy": self.delta_dummy, "has_mask": self.mask is not None,
                "markers": self.markers, "detector": self.detector or None}

    def scan_outputs(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        """Written once per scan: the node's settings and (radial mode) the radial axis of
        the per-bin outputs."""
        out = {f"{self.name}_config": (np.array(json.dumps(self.config()).encode()),
                                       {"format": "json"})}
        if self.geometry is not None and self.shape is not None:
            out[f"{self.name}_radial"] = (self.radial * radial_unit(self.unit)[1],
                                          {"units": self.unit})
        return out
