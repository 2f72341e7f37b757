"""Radial (1D) integration and 2D caking of a frame, with pyFAI's results and conventions.

`Integrate` matches pyFAI's `integrate1d` / `integrate2d` (the `_ng` engines)
with method ("no", "csr") or ("bbox", "csr"): the same bins (range from the
unmasked pixels, or `radial_range` / `azimuth_range`), the same pixel
weights, intensity = sum(c * v) / sum(c * norm) with norm = solid angle *
polarisation, and error_model "poisson": error = sqrt(sum(c^2 s max(s, v))) /
sum(c * norm), where v is the value of the frame this node sees and s what a
normalise node before it scaled the counts by (`Item.scale`; 1 without one): the
variance of the counts, max(1, counts), scaled as the values were, which is
pyFAI's integrate1d of the counts with normalization_factor = 1 / s (the counts
after a correct node are raw - dark: the dark's own variance is not added, as
pyFAI given raw - dark; after a flat the counts are (raw - dark) / flat). Invalid pixels
(NaN, or `dummy` within `delta_dummy`, compared with that same value) count in
no bin (with a `poni`, the mask and dummy of the detector it names are the
defaults, `stream.config.detector`), and so, with `markers` (the default, as
the threshold's), do the pixels of an unsigned raw frame at its dtype's largest
value (EIGER / Lima module gaps and bad pixels, `nodes.correct.marker_of`:
counted, each would add billions to its bin); a bin without a valid pixel holds
`empty` (pyFAI's 0). The matrix is built once per geometry in `setup`; per
frame it is one sequential pass (`kernels.csr`). Radial ranges are in `unit`;
azimuths are chi in degrees (pyFAI's, in (-180, 180]), `azimuth_range` going up from its first
value to its second, which may cross 180 degrees (pyFAI drops the part past
180; here pixels are taken modulo 360 around the range).

Outputs per point: `<name>` (intensity, float32 (npt,) or (npt_azim, npt))
and `<name>_error`; `scan_outputs()` gives the axes, written once per scan.
After a `frame` node the geometry follows its pixel map (`frame_geometry`).

`FusedIntegrate` (built by `nodes.fuse`) applies a preceding correct /
normalise inside the same pass, on the raw frame, with the very same float32
arithmetic (so the same results as integrating the corrected frame); the
item's frame is left raw for the fused dense pass after it. It leaves the
markers out whatever `markers` says, as `correct` and `normalise` make them NaN.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np

from nodes import decode
from nodes.correct import marker_of, shown
from nodes.geometry import Geometry, radial_unit
from nodes.integrate_plan import (
    ERROR_MODELS,
    NO_MAP,
    PLAIN,
    SPLITS,
    Plan,
    build_plan,
    check_range,
    warmup,
)
from nodes.kernels import csr
from nodes.threshold import native_frame
from stream.core.encoded import EncodedFrame
from stream.core.item import Item
from stream.core.scan import Scan


def frame_geometry(geometry: Geometry, scan: Scan) -> Geometry:
    """The geometry of the frames this node receives (after a `frame` node, if any)."""
    from nodes.frame import frame_map_of

    pixel_map, detector_shape = frame_map_of(scan)
    if pixel_map is None:
        return geometry
    return geometry.transformed(pixel_map, detector_shape)


def check_shape_of(kind: str, detector_shape: tuple[int, int] | None, scan: Scan) -> None:
    """ValueError if the geometry was made for another detector shape (a PONI file's
    max_shape) than this scan's detector (before any `frame` node's crop or rebin)."""
    if detector_shape is None:
        return
    from nodes.frame import frame_map_of

    detector, info = scan.detector()
    shape = frame_map_of(scan)[1] or tuple(int(n) for n in info.shape)
    if tuple(shape) != tuple(detector_shape):
        raise ValueError(f"{kind}: the geometry (a PONI file's max_shape) is for a "
                         f"{detector_shape[0]} x {detector_shape[1]} detector but detector "
                         f"{detector!r} has {shape[0]} x {shape[1]} frames: use the PONI "
                         f"file made for this detector")


def detector_shape_of(kind: str, value: list[int] | None) -> tuple[int, int] | None:
    """A geometry node's `detector_shape` (rows, columns), checked."""
    if value is None:
        return None
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)):
        raise ValueError(f"{kind}: detector_shape must be 2 ints >= 1, got {value!r}")
    return int(value[0]), int(value[1])


class Integrate:
    """Radial integration (or 2D caking) of the frame into `npt` bins, as pyFAI's integrate1d."""

    kind: ClassVar[str] = "integrate"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, dist: float, poni1: float, poni2: float, pixel1: float, pixel2: float,
                 rot1: float = 0.0, rot2: float = 0.0, rot3: float = 0.0,
                 wavelength: float = 0.0, orientation: int = 3, npt: int = 1000,
                 unit: str = "2th_deg", npt_azim: int = 0, split: str = "no",
                 radial_range: list[float] | None = None,
                 azimuth_range: list[float] | None = None, mask: np.ndarray | None = None,
                 dummy: float | None = None, delta_dummy: float = 0.0,
                 correct_solid_angle: bool = True, polarization_factor: float | None = None,
                 polarization_offset: float = 0.0, error_model: str = "poisson",
                 empty: float = 0.0, name: str = "", markers: bool = True,
                 detector_shape: list[int] | None = None, detector: str = "") -> None:
        self.detector_shape = detector_shape_of("integrate", detector_shape)
        self.geometry = Geometry(dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2,
                                 wavelength, orientation)
        space, _ = radial_unit(unit)
        if space == "q" and not wavelength > 0:
            raise ValueError(f"integrate: unit {unit!r} needs a wavelength (m) > 0")
        for key, value, low in (("npt", npt, 1), ("npt_azim", npt_azim, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"integrate: {key} must be an int >= {low}, got {value!r}")
        if split not in SPLITS:
            raise ValueError(f"integrate: split must be one of {', '.join(SPLITS)}, got {split!r}")
        if error_model not in ERROR_MODELS:
            raise ValueError(f"integrate: error_model must be one of {', '.join(ERROR_MODELS)}, "
                             f"got {error_model!r}")
        if mask is not None and (not isinstance(mask, np.ndarray) or mask.ndim != 2):
            raise ValueError(f"integrate: mask must be a 2D array, got {shown(mask)}")
        if polarization_factor is not None and not -1.0 <= polarization_factor <= 1.0:
            raise ValueError("integrate: polarization_factor must be in [-1, 1], "
                             f"got {polarization_factor!r}")
        for key, value in (("delta_dummy", delta_dummy), ("polarization_offset",
                                                          polarization_offset)):
            if not math.isfinite(value) or (key == "delta_dummy" and value < 0):
                raise ValueError(f"integrate: {key} must be finite (and >= 0), got {value!r}")
        if not isinstance(markers, bool):
            raise ValueError(f"integrate: markers must be true or false, got {markers!r}")
        self.markers = markers  # leave out raw pixels at the dtype's largest value
        self.detector = detector  # what mask / dummy the PONI's detector gave (provenance)
        self.radial_range = check_range("integrate: radial_range", radial_range)
        self.azimuth_range = check_range("integrate: azimuth_range", azimuth_range, False)
        self.npt, self.unit, self.npt_azim, self.split = npt, unit, npt_azim, split
        self.mask = None if mask is None else np.ascontiguousarray(mask)
        self.dummy, self.delta_dummy = dummy, float(delta_dummy)
        self.correct_solid_angle = correct_solid_angle
        self.polarization_factor = polarization_factor
        self.polarization_offset = float(polarization_offset)
        self.error_model, self.empty = error_model, float(empty)
        self.name = name or ("integrate2d" if npt_azim else "integrate1d")
        self.plan: Plan | None = None
        self._plan_key: tuple | None = None

    def build(self, scan: Scan, exclude: np.ndarray | None = None) -> Plan:
        """The plan for this scan's frames (kept while the shape and geometry stay)."""
        _, info = scan.detector()
        shape = tuple(int(n) for n in info.shape)
        check_shape_of("integrate", self.detector_shape, scan)
        geometry = frame_geometry(self.geometry, scan)
        if self.mask is not None and self.mask.shape != shape:
            whose = (f" (of the PONI's detector {self.detector.split(':')[0]})"
                     if self.detector else "")
            raise ValueError(f"integrate: mask{whose} has shape {self.mask.shape} but frames "
                             f"have shape {shape}")
        key = (shape, geometry, None if exclude is None else exclude.tobytes())
        if self.plan is None or key != self._plan_key:
            self.plan = build_plan(
                geometry, shape, npt=self.npt, unit=self.unit, npt_azim=self.npt_azim,
                split=self.split, radial_range=self.radial_range,
                azimuth_range=self.azimuth_range, mask=self.mask, exclude=exclude,
                solid_angle=self.correct_solid_angle,
                polarization_factor=self.polarization_factor,
                polarization_offset=self.polarization_offset)
            self._plan_key = key
        return self.plan

    def setup(self, scan: Scan) -> None:
        self.build(scan)
        self.warmup(scan.detector()[1].dtype)

    def warmup(self, dtype: str = "float32") -> None:
        """Compile the per-frame kernels for `dtype` and float32 (plain and corrected)."""
        warmup(dtype)

    def radial(self) -> np.ndarray:
        """Bin centres in `unit` (after setup)."""
        return self._plan().radial * radial_unit(self.unit)[1]

    def azimuthal(self) -> np.ndarray | None:
        """Azimuthal bin centres in degrees (2D), or None."""
        az = self._plan().azimuthal
        return None if az is None else np.degrees(az)

    def scan_outputs(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        """Arrays written once per scan: the axes, with their units, and this node's config."""
        out = {f"{self.name}_radial": (self.radial(), {"units": self.unit})}
        if self.npt_azim:
            out[f"{self.name}_azimuthal"] = (self.azimuthal(), {"units": "chi_deg"})
        config = json.dumps(self.config())
        out[f"{self.name}_config"] = (np.array(config.encode()), {"format": "json"})
        return out

    def config(self) -> dict[str, Any]:
        """The integration settings, pyFAI's names where they exist (provenance)."""
        g = self.geometry
        return {"dist": g.dist, "poni1": g.poni1, "poni2": g.poni2, "rot1": g.rot1,
                "rot2": g.rot2, "rot3": g.rot3, "pixel1": g.pixel1, "pixel2": g.pixel2,
                "wavelength": g.wavelength, "orientation": g.orientation, "npt": self.npt,
                "npt_azim": self.npt_azim, "unit": self.unit, "method": [self.split, "csr"],
                "radial_range": self.radial_range, "azimuth_range": self.azimuth_range,
                "dummy": self.dummy, "delta_dummy": self.delta_dummy,
                "correctSolidAngle": self.correct_solid_angle,
                "polarization_factor": self.polarization_factor,
                "polarization_offset": self.polarization_offset,
                "error_model": self.error_model, "empty": self.empty,
                "has_mask": self.mask is not None, "markers": self.markers,
                "detector": self.detector or None}

    def _plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("integrate: setup(scan) first")
        return self.plan

    def dense(self, item: Item) -> np.ndarray:
        """The item's frame as a flat native array (decoded if it came compressed)."""
        if item.frame is None:
            raise ValueError("integrate: no dense frame (sparse frames cannot be integrated)")
        if isinstance(item.frame, EncodedFrame):
            item.frame = decode.dense(item.frame)
        frame = native_frame(item.frame)
        if frame.shape != self._plan().shape:
            raise ValueError(f"integrate: frame has shape {frame.shape} but the geometry was "
                             f"set up for {self._plan().shape}")
        return frame.reshape(-1)

    def integrate(self, item: Item, raw: np.ndarray, corrections: tuple = (),
                  ) -> Item:
        """Run the pass (with `corrections` if given) and put the results in item.outputs.
        Marker pixels count in no bin with `markers`, and always when corrected (the
        unfused `correct` / `normalise` would have made them NaN)."""
        plan = self._plan()
        poisson = self.error_model == "poisson"
        corrected = bool(corrections)
        marker = marker_of(raw.dtype) if self.markers or corrected else None
        # the values are counts times s (a normalise before, fused or not): the Poisson
        # variance is that of the counts, s^2 max(1, v / s) = s max(s, v) (pyFAI's, given
        # normalization_factor = 1 / s)
        s = float(item.scale) * (float(corrections[4]) if corrected else 1.0)
        sig, var, bad, nbad = plan.run(raw, corrections or PLAIN, corrected, self.dummy,
                                       self.delta_dummy, poisson, marker, floor=s)
        if poisson and s != 1.0:
            var = var * s
        intensity, error = csr.finish(sig, var, bad, nbad, plan.norm_total, plan.entries,
                                      np.float32(self.empty), poisson)
        if plan.bins1 > 1:
            intensity = intensity.reshape(plan.bins0, plan.bins1).T.copy()
            error = error.reshape(plan.bins0, plan.bins1).T.copy()
        item.outputs[self.name] = intensity
        if poisson:
            item.outputs[f"{self.name}_error"] = error
        return item

    def process(self, item: Item) -> Item:
        return self.integrate(item, self.dense(item))


class FusedIntegrate:
    """Integrate with a preceding correct / normalise applied inside its pass (see `fuse`)."""

    kind: ClassVar[str] = "integrate"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, integrate: Integrate, correct: Any = None, normalise: Any = None,
                 flag: bool = True) -> None:
        self.integrate, self.correct, self.normalise = integrate, correct, normalise
        self.flag = flag  # False: a later fused pass flags a missing counter (once)

    def setup(self, scan: Scan) -> None:
        for node in (self.correct, self.normalise):
            if node is not None:
                node.setup(scan)
        mask = None if self.correct is None else self.correct.mask
        self.integrate.build(scan, exclude=mask)
        self.integrate.warmup(scan.detector()[1].dtype)

    def corrections(self, item: Item) -> tuple:
        """(dark0, dark_map, invflat0, invflat_map, scale) as the kernels take them."""
        c = self.correct
        dark, invflat = (None, None) if c is None else (c.dark32, c.invflat32)
        dark0, dark_map = ((np.float32(0), NO_MAP) if not isinstance(dark, np.ndarray) else
                           (np.float32(0), dark.reshape(-1)))
        if dark is not None and not isinstance(dark, np.ndarray):
            dark0 = np.float32(dark)
        invflat0, invflat_map = ((np.float32(1), NO_MAP) if not isinstance(invflat, np.ndarray)
                                 else (np.float32(1), invflat.reshape(-1)))
        if invflat is not None and not isinstance(invflat, np.ndarray):
            invflat0 = np.float32(invflat)
        scale = np.float32(1)
        if self.normalise is not None:
            scale = self.normalise.scale_for(item if self.flag else Item(item.point_id,
                                                                         item.detector,
                                                                         counters=item.counters))
        return dark0, dark_map, invflat0, invflat_map, scale

    def process(self, item: Item) -> Item:
        raw = self.integrate.dense(item)
        if self.correct is not None:
            self.correct.check_frame(item.frame.shape)
        return self.integrate.integrate(item, raw, self.corrections(item))
