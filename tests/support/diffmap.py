"""Files for diffmap tests: a 64 x 80 detector with a powder ring at a known angle,
its PONI, and EDF frames of it (tests/maps/test_diffmap.py, the compile notice)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fabio
import numpy as np

SHAPE = (64, 80)
TTH0 = 3.0  # degrees: the ring of the synthetic frames (the detector reaches 5.8)
GEOMETRY = dict(dist=0.05, poni1=0.0032, poni2=0.004, rot1=0.0, rot2=0.0, rot3=0.0,
                wavelength=1e-10)
PONI = f"""# a 64 x 80 detector of 100 um pixels, beam at its centre
poni_version: 2.1
Detector: Detector
Detector_config: {{"pixel1": 0.0001, "pixel2": 0.0001, "orientation": 3, "max_shape": [64, 80]}}
Distance: {GEOMETRY['dist']}
Poni1: {GEOMETRY['poni1']}
Poni2: {GEOMETRY['poni2']}
Rot1: 0
Rot2: 0
Rot3: 0
Wavelength: {GEOMETRY['wavelength']}
"""


@cache
def two_theta() -> np.ndarray:
    """2theta (deg) of each pixel centre for the PONI above (pyFAI's convention, orientation
    3: pixel (i, j) at ((i + 0.5) p1, (j + 0.5) p2))."""
    i, j = np.indices(SHAPE, dtype=np.float64)
    d1 = (i + 0.5) * 1e-4 - GEOMETRY["poni1"]
    d2 = (j + 0.5) * 1e-4 - GEOMETRY["poni2"]
    return np.degrees(np.arctan2(np.hypot(d1, d2), GEOMETRY["dist"]))


def frame(k: int) -> np.ndarray:
    """A flat background of 5 and a Gaussian powder ring at TTH0 of height 100 + 10 k."""
    return (5.0 + (100.0 + 10 * k) * np.exp(-0.5 * ((two_theta() - TTH0) / 0.4) ** 2)
            ).astype(np.float32)


def scan_files(tmp_path: Path, n: int) -> list[str]:
    (tmp_path / "geo.poni").write_text(PONI)
    names = []
    for k in range(n):  # numbered so that text order and number order differ
        name = tmp_path / f"scan_{k}.edf"
        fabio.edfimage.EdfImage(data=frame(k)).write(str(name))
        names.append(str(name))
    return names
