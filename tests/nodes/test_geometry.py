"""Geometry maps: known answers, and pyFAI's own maps on tilted, off-centre detectors."""

import math

import numpy as np
import pytest

from nodes.geometry import RADIAL_UNITS, Geometry, radial_unit

SHAPE = (60, 75)
GEOMETRIES = [
    dict(dist=0.1, poni1=0.004, poni2=0.006),  # untilted, PONI on the detector
    dict(dist=0.12, poni1=-0.002, poni2=0.013, rot1=0.1, rot2=-0.2, rot3=0.3),  # tilted, off
    dict(dist=0.08, poni1=0.003, poni2=0.0031, rot1=-0.05, rot2=0.07, rot3=-1.2),
]


def rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def test_untilted_known_answers():
    g = Geometry(dist=0.1, poni1=0.0, poni2=0.0, pixel1=1e-3, pixel2=1e-3, wavelength=1e-10)
    # pixel (i, j) centre at ((i + 0.5) mm, (j + 0.5) mm) from the PONI
    tth = g.tth(SHAPE)
    p1, p2 = (np.arange(SHAPE[0]) + 0.5) * 1e-3, (np.arange(SHAPE[1]) + 0.5) * 1e-3
    r = np.hypot(p1[:, None], p2[None, :])
    np.testing.assert_allclose(tth, np.arctan2(r, 0.1), rtol=1e-14)
    np.testing.assert_allclose(g.r(SHAPE), r, rtol=1e-14)
    np.testing.assert_allclose(g.chi(SHAPE), np.arctan2(p1[:, None], p2[None, :]), rtol=1e-14)
    q = 4e-9 * math.pi * np.sin(tth / 2) / 1e-10
    np.testing.assert_allclose(g.q(SHAPE), q, rtol=1e-14)
    np.testing.assert_allclose(g.solid_angle(SHAPE), (0.1 / np.hypot(r, 0.1)) ** 3, rtol=1e-7)
    # polarisation: 1 on the beam, and (1 + cos^2 2th) / 2 for an unpolarised beam
    np.testing.assert_allclose(g.polarization(SHAPE, 0.0), (1 + np.cos(tth) ** 2) / 2, rtol=1e-7)
    assert g.solid_angle(SHAPE).dtype == np.float32


def test_chi_quadrants_and_pixel_at_poni():
    g = Geometry(dist=0.1, poni1=0.0055, poni2=0.0055, pixel1=1e-3, pixel2=1e-3)
    tth, chi = g.tth((11, 11)), np.degrees(g.chi((11, 11)))
    assert tth[5, 5] == 0.0 and g.solid_angle((11, 11))[5, 5] == 1.0
    assert chi[10, 5] == pytest.approx(90.0)  # along +dim1 (rows)
    assert chi[5, 10] == pytest.approx(0.0)  # along +dim2 (cols)
    assert chi[5, 0] == pytest.approx(180.0) and chi[0, 5] == pytest.approx(-90.0)
    assert chi.max() <= 180.0 and chi.min() > -180.0


def test_units_and_validation():
    assert radial_unit("2th_deg") == ("2th", 180 / math.pi)
    assert RADIAL_UNITS["q_A^-1"] == ("q", 0.1)
    with pytest.raises(ValueError, match="unknown radial unit"):
        radial_unit("d_nm")
    with pytest.raises(ValueError, match="dist must be > 0"):
        Geometry(dist=0.0, poni1=0, poni2=0)
    with pytest.raises(ValueError, match="orientation"):
        Geometry(dist=0.1, poni1=0, poni2=0, orientation=5)
    with pytest.raises(ValueError, match="wavelength"):
        Geometry(dist=0.1, poni1=0, poni2=0).q(SHAPE)
    with pytest.raises(ValueError, match="polarisation factor"):
        Geometry(dist=0.1, poni1=0, poni2=0).polarization(SHAPE, 1.5)


def test_pixel_map_crop_is_a_subarray():
    g = Geometry(**GEOMETRIES[1], pixel1=1e-4, pixel2=8e-5, wavelength=1e-10)
    crop = g.transformed((1.0, 0.0, 7.0, 0.0, 1.0, 11.0), SHAPE)  # frame[7:37, 11:51]
    for full, part in ((g.tth(SHAPE), crop.tth((30, 40))), (g.chi(SHAPE), crop.chi((30, 40))),
                       (g.solid_angle(SHAPE), crop.solid_angle((30, 40)))):
        np.testing.assert_allclose(part, full[7:37, 11:51], rtol=1e-12)
    # a transposed frame: frame.T, map (y, x) -> (x, y)
    t = g.transformed((0.0, 1.0, 0.0, 1.0, 0.0, 0.0), SHAPE)
    np.testing.assert_allclose(t.tth(SHAPE[::-1]), g.tth(SHAPE).T, rtol=1e-12)


@pytest.mark.parametrize("orientation", [3, 1, 2, 4])
@pytest.mark.parametrize("params", GEOMETRIES)
def test_maps_match_pyfai(params, orientation):
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector

    det = Detector(pixel1=1e-4, pixel2=8e-5, max_shape=SHAPE, orientation=orientation)
    ai = pyFAI.load({"detector": det, "wavelength": 1e-10, **params})
    g = Geometry(**params, pixel1=1e-4, pixel2=8e-5, wavelength=1e-10, orientation=orientation)
    assert rel(g.tth(SHAPE), ai.center_array(SHAPE, "2th_rad", scale=False)) < 1e-6
    assert rel(g.q(SHAPE), ai.center_array(SHAPE, "q_nm^-1", scale=False)) < 1e-6
    assert rel(g.r(SHAPE), ai.center_array(SHAPE, "r_m", scale=False)) < 1e-6
    chi = ai.center_array(SHAPE, "chi_rad", scale=False)
    assert np.max(np.abs(g.chi(SHAPE) - chi)) < 1e-6 * math.pi
    assert rel(g.solid_angle(SHAPE), ai.solidAngleArray(SHAPE)) < 1e-6
    for factor, offset in ((0.95, 0.0), (-0.5, 0.3)):
        assert rel(g.polarization(SHAPE, factor, offset),
                   ai.polarization(SHAPE, factor, axis_offset=offset)) < 1e-6
    for unit in ("2th_rad", "q_nm^-1"):
        assert rel(g.delta(SHAPE, unit), ai.delta_array(SHAPE, unit)) < 1e-6
    assert np.max(np.abs(g.delta(SHAPE, None) - ai.delta_array(SHAPE, "chi_rad"))) < 1e-6
