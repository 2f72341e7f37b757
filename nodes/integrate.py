"""Radial (1D) integration and 2D caking of a frame, with pyFAI's results and conventions.

`Integrate` matches pyFAI's `integrate1d` / `integrate2d` (the `_ng` engines)
with method ("no", "csr") or ("bbox", "csr"): the same bins (range from the
unmasked pixels, or `radial_range` / `azimuth_range`), the same pixel
weights, intensity = sum(c * v) / sum(c * norm) with norm = solid angle *
polarisation, and error_model "poisson": error = sqrt(sum(c^2 max(1, v))) /
sum(c * norm), where v is the value of the frame this node sees. Invalid
pixels (NaN, or `dummy` within `delta_dummy`, compared with that same value)
count in no bin; a bin without a valid pixel holds `empty` (pyFAI's 0). The
matrix is built once per geometry in `setup`; per frame it is one sequential
pass (`kernels.csr`). Radial ranges are in `unit`; azimuths are chi in
degrees (pyFAI's, in (-180, 180]), `azimuth_range` going up from its first
value to its second, which may cross 180 degrees (pyFAI drops the part past
180; here pixels are taken modulo 360 around the range).

Outputs per point: `<name>` (intensity, float32 (npt,) or (npt_azim, npt))
and `<name>_error`; `scan_outputs()` gives the axes, written once per scan.
After a `frame` node the geometry follows its pixel map (`frame_geometry`).

`FusedIntegrate` (built by `nodes.fuse`) applies a preceding correct /
normalise inside the same pass, on the raw frame, with the very same float32
arithmetic (so the same results as integrating the corrected frame); the
item's frame is left raw for the fused dense pass after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from nodes import decode
from nodes.geometry import Geometry, radial_unit
from nodes.kernels import csr
from nodes.threshold import native_frame
from stream.core.encoded import EncodedFrame
from stream.core.item import Item
from stream.core.scan import Scan

EPS32 = 1.0 + float(np.finfo(np.float32).eps)
SPLITS = ("no", "bbox")
ERROR_MODELS = ("poisson", "none")
NO_MAP = np.zeros(0, np.float32)
PLAIN = (np.float32(0), NO_MAP, np.float32(1), NO_MAP, np.float32(1))  # no corrections


def upper_bound(value: float) -> float:
    """pyFAI's calc_upper_bound: just above the largest position, so it falls in the last bin."""
    return value * EPS32 if value > 0 else value / EPS32


def azimuth_rad(azimuth_range: tuple[float, float]) -> tuple[float, float]:
    """pyFAI's normalize_azimuth_range: degrees to rad in [-pi, pi), upper end above the lower."""
    def rad(deg: float) -> float:
        turn = (deg / 180.0) % 2.0
        return (turn - 2.0 if turn >= 1.0 else turn) * math.pi
    lo, hi = rad(azimuth_range[0]), rad(azimuth_range[1])
    return (lo, hi + 2.0 * math.pi) if hi <= lo else (lo, hi)


def check_range(name: str, value: Any, ordered: bool = True) -> tuple[float, float] | None:
    """None or (lo, hi) from a 2-list of finite numbers with lo < hi (if `ordered`)."""
    if value is None:
        return None
    ok = (isinstance(value, list | tuple) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))
    if not ok or not all(math.isfinite(v) for v in value) or (ordered and value[0] >= value[1]):
        raise ValueError(f"{name} must be [low, high]{' with low < high' if ordered else ''}, "
                         f"got {value!r}")
    return float(value[0]), float(value[1])


@dataclass
class Plan:
    """The pixel -> bin matrix of one geometry and shape, and its per-bin constants."""

    shape: tuple[int, int]
    bins0: int
    bins1: int  # 1 for 1D
    pbin: np.ndarray  # int32 per pixel (no split), else empty
    sbin: np.ndarray  # int32 per pixel (bbox slots), else empty
    sw: np.ndarray  # float32 (npix, 1 or 2): the slots' weight shares (bbox)
    overflow: tuple  # (opix, ocount, oebin, oecoef): pixels spanning more bins
    norm: np.ndarray  # float32 per pixel: solid angle * polarisation
    norm_total: np.ndarray  # float64 per bin
    entries: np.ndarray  # int64 per bin
    radial: np.ndarray  # bin centres, internal unit
    azimuthal: np.ndarray | None  # bin centres, rad (2D)

    @property
    def nbins(self) -> int:
        return self.bins0 * self.bins1

    def run(self, raw: np.ndarray, corrections: tuple, corrected: bool, dummy: float | None,
            delta_dummy: float, poisson: bool) -> tuple:
        """(signal, variance, bad norm, bad entries) per bin of one flattened frame."""
        check = dummy is not None
        tail = (corrected, check, np.float32(dummy if check else 0.0), np.float32(delta_dummy),
                self.norm, poisson)
        if self.pbin.size:
            return csr.integrate_nosplit(raw, self.pbin, self.nbins, *corrections, *tail)
        out = csr.integrate_slots(raw, self.sbin, self.sw, self.bins1, self.nbins,
                                  *corrections, *tail)
        if self.overflow[0].size:
            csr.add_overflow(raw, *self.overflow, *corrections, *tail, *out)
        return out


def build_plan(geometry: Geometry, shape: tuple[int, int], *, npt: int, unit: str,
               npt_azim: int = 0, split: str = "no",
               radial_range: tuple[float, float] | None = None,
               azimuth_range: tuple[float, float] | None = None,
               mask: np.ndarray | None = None, exclude: np.ndarray | None = None,
               solid_angle: bool = True, polarization_factor: float | None = None,
               polarization_offset: float = 0.0) -> Plan:
    """Bins as pyFAI chooses them; `mask` (nonzero: excluded) also bounds the data range,
    `exclude` (the correct node's mask, when fused) only drops pixels from the sums."""
    _, scale = radial_unit(unit)
    bbox = split == "bbox"
    n = shape[0] * shape[1]
    valid = np.ones(n, np.bool_) if mask is None else (np.asarray(mask).ravel() == 0)
    pos0 = geometry.radial(shape, unit).ravel()
    dpos0 = geometry.delta(shape, unit).ravel() if bbox else np.zeros(0)
    need_chi = npt_azim > 0 or azimuth_range is not None
    pos1 = geometry.chi(shape).ravel() if need_chi else np.zeros(0)
    dpos1 = geometry.delta(shape, None).ravel() if need_chi and bbox else np.zeros(0)
    if not valid.any():
        raise ValueError("integrate: every pixel is masked")
    d0 = dpos0[valid] if bbox else 0.0
    lo0, hi0 = max(0.0, float((pos0[valid] - d0).min())), max(0.0, float((pos0[valid] + d0).max()))
    if radial_range is not None:
        lo0, hi0 = radial_range[0] / scale, radial_range[1] / scale
    hi0 = upper_bound(hi0)
    delta0 = (hi0 - lo0) / npt
    lo1 = hi1 = delta1 = 0.0
    if azimuth_range is not None:
        lo1, hi1 = azimuth_rad(azimuth_range)
        mid = 0.5 * (lo1 + hi1)  # chi modulo 2 pi around the range
        pos1 = np.mod(pos1 - (mid - math.pi), 2.0 * math.pi) + (mid - math.pi)
    elif npt_azim > 0:
        d1 = dpos1[valid] if bbox else 0.0
        lo1 = max(float((pos1[valid] - d1).min()), -math.pi)
        hi1 = min(float((pos1[valid] + d1).max()), math.pi)
    azim_hi_in = hi1
    azimuthal = None
    if npt_azim > 0:
        hi1 = upper_bound(hi1)
        delta1 = (hi1 - lo1) / npt_azim
        azimuthal = np.linspace(lo1 + 0.5 * delta1, hi1 - 0.5 * delta1, npt_azim)
    radial = np.linspace(lo0 + 0.5 * delta0, hi0 - 0.5 * delta0, npt)

    norm = np.ones(shape, np.float32)
    if polarization_factor is not None:
        norm = geometry.polarization(shape, polarization_factor, polarization_offset)
    if solid_angle:
        norm = norm * geometry.solid_angle(shape)
    norm = norm.ravel()
    keep = valid & np.isfinite(norm) & (norm > 0)
    if exclude is not None:
        keep &= np.asarray(exclude).ravel() == 0
    bins1 = max(npt_azim, 1)
    args = (keep, lo0, delta0, npt, lo1, delta1, bins1, lo1, azim_hi_in, azimuth_range is not None)
    empty_i32 = np.zeros(0, np.int32)
    nbins = npt * bins1
    if bbox:
        count, ebin, ecoef = csr.build_bbox(pos0, dpos0, pos1, dpos1, *args)
        sbin, sw, *overflow = csr.to_slots(count, ebin, ecoef, bins1, npt_azim > 0)
        del count, ebin, ecoef
        total, entries = csr.slot_sums(sbin, sw, bins1, *overflow, norm, nbins)
        pbin = empty_i32
    else:
        pbin = csr.build_nosplit(pos0, pos1, *args)
        total, entries = csr.bin_sums(pbin, norm, nbins)
        sbin, sw = empty_i32, np.zeros((0, 1), np.float32)
        overflow = [empty_i32, np.zeros(0, np.uint16), empty_i32, np.zeros(0, np.float32)]
    return Plan(shape, npt, bins1, pbin, sbin, sw, tuple(overflow), norm, total, entries, radial,
                azimuthal)


def warmup(dtype: Any = "float32") -> None:
    """Compile the per-frame kernels for `dtype` and float32, plain and corrected."""
    i32, one = np.zeros(6, np.int32), np.ones(6, np.float32)
    overflow = (np.zeros(1, np.int32), np.ones(1, np.uint16), np.zeros(1, np.int32),
                np.ones(1, np.float32))
    for dt in {np.dtype(dtype), np.dtype(np.float32)}:
        for corrections in (PLAIN, (np.float32(0), one, np.float32(1), one, np.float32(1))):
            plan = Plan((2, 3), 1, 1, i32, i32, np.ones((6, 1), np.float32), overflow, one,
                        np.ones(1), np.ones(1, np.int64), np.zeros(1), None)
            for corrected in (False, True):
                plan.run(np.zeros(6, dt), corrections, corrected, None, 0.0, True)
                plan.pbin = np.zeros(0, np.int32)
                plan.run(np.zeros(6, dt), corrections, corrected, None, 0.0, True)
                plan.pbin = i32


def frame_geometry(geometry: Geometry, scan: Scan) -> Geometry:
    """The geometry of the frames this node receives (after a `frame` node, if any)."""
    from nodes.frame import frame_map_of

    pixel_map, detector_shape = frame_map_of(scan)
    if pixel_map is None:
        return geometry
    return geometry.transformed(pixel_map, detector_shape)


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
                 empty: float = 0.0, name: str = "") -> None:
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
            raise ValueError(f"integrate: mask must be a 2D array, got {mask!r}")
        if polarization_factor is not None and not -1.0 <= polarization_factor <= 1.0:
            raise ValueError("integrate: polarization_factor must be in [-1, 1], "
                             f"got {polarization_factor!r}")
        for key, value in (("delta_dummy", delta_dummy), ("polarization_offset",
                                                          polarization_offset)):
            if not math.isfinite(value) or (key == "delta_dummy" and value < 0):
                raise ValueError(f"integrate: {key} must be finite (and >= 0), got {value!r}")
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
        geometry = frame_geometry(self.geometry, scan)
        if self.mask is not None and self.mask.shape != shape:
            raise ValueError(f"integrate: mask has shape {self.mask.shape} but frames have "
                             f"shape {shape}")
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
                "has_mask": self.mask is not None}

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
        """Run the pass (with `corrections` if given) and put the results in item.outputs."""
        plan = self._plan()
        poisson = self.error_model == "poisson"
        corrected = bool(corrections)
        sig, var, bad, nbad = plan.run(raw, corrections or PLAIN, corrected, self.dummy,
                                       self.delta_dummy, poisson)
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
