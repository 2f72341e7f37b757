"""The pixel -> bin matrix of `nodes.integrate` (pyFAI's bins, weights and ranges),
built once per geometry and shape (`build_plan`) and run once per frame
(`Plan.run`, `kernels.csr`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nodes.geometry import Geometry, radial_unit
from nodes.kernels import csr

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
            delta_dummy: float, poisson: bool, marker: float | None = None,
            floor: float = 1.0) -> tuple:
        """(signal, variance, bad norm, bad entries) per bin of one flattened frame; pixels
        whose raw value is `marker` (if given) count in no bin, as masked ones. The
        variance of a pixel of value v is max(`floor`, v)."""
        check = dummy is not None
        tail = (corrected, check, np.float32(dummy if check else 0.0), np.float32(delta_dummy),
                self.norm, poisson, np.float32(floor), marker is not None,
                np.float64(0.0 if marker is None else marker))
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
