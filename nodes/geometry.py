"""Detector geometry with pyFAI conventions: pixel -> 2theta, q, r, chi; solid angle, polarisation.

Conventions (pyFAI's, PONI files, `pyFAI.geometry.core`):

* `dist`, `poni1`, `poni2` in m: the sample-detector distance along the
  normal and the point of normal incidence (PONI) on the detector, from its
  first pixel's outer corner, along dim 1 (rows, "y") and dim 2 (cols, "x");
* `rot1`, `rot2`, `rot3` in rad, applied as pyFAI's rotation matrix
  R = R3 . R2 . R1 (R1 and R2 left-handed, R3 right-handed);
* pixel (i, j) is the square [i, i + 1) x [j, j + 1) in edge units; its centre
  is at ((i + 0.5) * pixel1, (j + 0.5) * pixel2) m. `orientation` 1, 2, 4 flip
  the index axes as pyFAI's detectors do (3, the default, and 0 flip nothing);
* 2theta = atan2(sqrt(t1^2 + t2^2), t3), chi = atan2(t1, t2) in (-pi, pi],
  q = 4 pi sin(2theta / 2) / lambda (nm^-1 internally), r = sqrt(t1^2 + t2^2);
* solid angle relative to the PONI's: cos(incidence)^3 with
  cos(incidence) = dist / sqrt(dist^2 + p1^2 + p2^2) (p from the PONI, in the
  detector plane); polarisation (divide by it) for a factor f in [-1, 1] and
  an axis offset: 0.5 * (1 + cos^2 2th - f cos(2 (chi + offset)) (1 - cos^2 2th)).

`pixel_map` (from the `frame` node: crop, orientation, rebin) maps a frame's
edge coordinates (y, x) to the detector's: (Y, X) = A (y, x) + b, given as
(a00, a01, b0, a10, a11, b1). Internal radial units are pyFAI's: 2theta in
rad, q in nm^-1, r in m; `RADIAL_UNITS` gives each unit's scale from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# unit -> (space, scale from the internal value)
RADIAL_UNITS: dict[str, tuple[str, float]] = {
    "2th_deg": ("2th", 180.0 / math.pi),
    "2th_rad": ("2th", 1.0),
    "q_nm^-1": ("q", 1.0),
    "q_A^-1": ("q", 0.1),
    "r_mm": ("r", 1000.0),
}
ORIENTATIONS = (0, 1, 2, 3, 4)


def radial_unit(unit: str) -> tuple[str, float]:
    """(space, scale) of a radial unit, or ValueError naming the known ones."""
    if unit not in RADIAL_UNITS:
        raise ValueError(f"unknown radial unit {unit!r}; known: {', '.join(RADIAL_UNITS)}")
    return RADIAL_UNITS[unit]


@dataclass(frozen=True)
class Geometry:
    """A PONI geometry (values, not a file) and the per-pixel maps it gives."""

    dist: float
    poni1: float
    poni2: float
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    pixel1: float = 75e-6
    pixel2: float = 75e-6
    wavelength: float = 0.0  # m; needed for q only
    orientation: int = 3
    detector_shape: tuple[int, int] | None = None  # the detector's, for orientations 1, 2, 4
    pixel_map: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"geometry: {name} must be finite, got {getattr(self, name)!r}")
        for name in ("dist", "pixel1", "pixel2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"geometry: {name} must be > 0, got {getattr(self, name)!r}")
        if self.wavelength < 0:
            raise ValueError(f"geometry: wavelength must be >= 0 m, got {self.wavelength!r}")
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"geometry: orientation must be one of {ORIENTATIONS}, "
                             f"got {self.orientation!r}")
        if self.pixel_map is not None and len(self.pixel_map) != 6:
            raise ValueError(f"geometry: pixel_map needs 6 numbers, got {self.pixel_map!r}")

    # ------------------------------------------------------------ coordinates

    def _detector_coords(self, y: np.ndarray, x: np.ndarray, shape: tuple[int, int]
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Frame edge coordinates -> the detector's, after pixel_map and orientation."""
        if self.pixel_map is not None:
            a00, a01, b0, a10, a11, b1 = self.pixel_map
            y, x = a00 * y + a01 * x + b0, a10 * y + a11 * x + b1
        if self.orientation in (1, 2, 4):
            m1, m2 = self.detector_shape or shape
            if self.orientation in (1, 2):
                y = m1 - y
            if self.orientation in (1, 4):
                x = m2 - x
        return y, x

    def _grid(self, shape: tuple[int, int], corners: bool) -> tuple[np.ndarray, np.ndarray]:
        """Edge coordinates of pixel centres, or of the (n+1) x (m+1) corners."""
        n, m = shape
        if corners:
            y = np.arange(n + 1, dtype=np.float64)[:, None]
            x = np.arange(m + 1, dtype=np.float64)[None, :]
        else:
            y = np.arange(n, dtype=np.float64)[:, None] + 0.5
            x = np.arange(m, dtype=np.float64)[None, :] + 0.5
        return self._detector_coords(y, x, shape)

    def positions(self, shape: tuple[int, int], corners: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(p1, p2): positions in m from the PONI in the detector plane (pyFAI's p1, p2)."""
        y, x = self._grid(shape, corners)
        return y * self.pixel1 - self.poni1, x * self.pixel2 - self.poni2

    def lab(self, shape: tuple[int, int], corners: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t1, t2, t3): pyFAI's sample-frame coordinates (m) of each pixel centre or corner."""
        p1, p2 = self.positions(shape, corners)
        c1, c2, c3 = math.cos(self.rot1), math.cos(self.rot2), math.cos(self.rot3)
        s1, s2, s3 = math.sin(self.rot1), math.sin(self.rot2), math.sin(self.rot3)
        L = self.dist
        t1 = p1 * (c2 * c3) + p2 * (c3 * s1 * s2 - c1 * s3) - L * (c1 * c3 * s2 + s1 * s3)
        t2 = p1 * (c2 * s3) + p2 * (c1 * c3 + s1 * s2 * s3) - L * (-(c3 * s1) + c1 * s2 * s3)
        t3 = p1 * s2 - p2 * (c2 * s1) + L * (c1 * c2)
        return np.broadcast_arrays(t1, t2, t3)  # type: ignore[return-value]

    # ------------------------------------------------------------ maps

    def tth(self, shape: tuple[int, int], corners: bool = False) -> np.ndarray:
        """2theta in rad."""
        t1, t2, t3 = self.lab(shape, corners)
        return np.arctan2(np.sqrt(t1 * t1 + t2 * t2), t3)

    def chi(self, shape: tuple[int, int], corners: bool = False) -> np.ndarray:
        """Azimuth chi in rad, in (-pi, pi] (pyFAI's discontinuity at pi)."""
        t1, t2, _ = self.lab(shape, corners)
        return np.arctan2(t1, t2)

    def q(self, shape: tuple[int, int], corners: bool = False) -> np.ndarray:
        """Scattering vector modulus in nm^-1."""
        if not self.wavelength > 0:
            raise ValueError("geometry: q needs a wavelength (m) > 0")
        return 4.0e-9 * math.pi * np.sin(self.tth(shape, corners) / 2.0) / self.wavelength

    def r(self, shape: tuple[int, int], corners: bool = False) -> np.ndarray:
        """Distance to the direct beam in m (pyFAI's r, in the rotated frame)."""
        t1, t2, _ = self.lab(shape, corners)
        return np.sqrt(t1 * t1 + t2 * t2)

    def radial(self, shape: tuple[int, int], unit: str, corners: bool = False) -> np.ndarray:
        """The radial position in the internal unit of `unit`'s space (rad, nm^-1, m)."""
        space, _ = radial_unit(unit)
        return {"2th": self.tth, "q": self.q, "r": self.r}[space](shape, corners)

    def delta(self, shape: tuple[int, int], unit: str | None) -> np.ndarray:
        """Half-width of each pixel's bounding box: max |corner - centre| over its 4 corners.

        In the radial unit's internal values, or chi (rad, the shorter way round)
        for unit None. Corner values are rounded to float32 first, as pyFAI does.
        """
        if unit is None:
            centre, corner = self.chi(shape), self.chi(shape, corners=True)
        else:
            centre, corner = self.radial(shape, unit), self.radial(shape, unit, corners=True)
        corner = corner.astype(np.float32).astype(np.float64)
        out = np.zeros(shape, np.float64)
        for di in (0, 1):
            for dj in (0, 1):
                d = np.abs(corner[di:di + shape[0], dj:dj + shape[1]] - centre)
                if unit is None:
                    np.minimum(d, 2.0 * math.pi - d, out=d)
                np.maximum(out, d, out=out)
        return out

    def solid_angle(self, shape: tuple[int, int]) -> np.ndarray:
        """cos(incidence)^3, 1 at the PONI (float32, pyFAI's solidAngleArray)."""
        p1, p2 = self.positions(shape)
        cosa = self.dist / np.sqrt(self.dist * self.dist + (p1 * p1 + p2 * p2))
        return np.broadcast_to(cosa ** 3, shape).astype(np.float32)

    def polarization(self, shape: tuple[int, int], factor: float,
                     axis_offset: float = 0.0) -> np.ndarray:
        """pyFAI's polarisation factor (divide by it), float32; `factor` in [-1, 1]."""
        if not -1.0 <= factor <= 1.0:
            raise ValueError(f"geometry: polarisation factor must be in [-1, 1], got {factor!r}")
        t1, t2, t3 = self.lab(shape)
        tth = np.arctan2(np.sqrt(t1 * t1 + t2 * t2), t3)
        chi = np.arctan2(t1, t2)
        cos2 = np.cos(tth) ** 2
        pol = 0.5 * (1.0 + cos2 - factor * np.cos(2.0 * (chi + axis_offset)) * (1.0 - cos2))
        return pol.astype(np.float32)

    def transformed(self, pixel_map: tuple[float, ...] | None,
                    detector_shape: tuple[int, int] | None) -> Geometry:
        """The same geometry seen through a frame node's pixel map."""
        from dataclasses import replace

        return replace(self, pixel_map=pixel_map,
                       detector_shape=detector_shape or self.detector_shape)
