"""PONI files (versions 1, 2, 2.1, 3) read into node values, checked against pyFAI's reader."""

import pytest

from nodes import Integrate
from stream.config.poni import GEOMETRY_KEYS, PoniError, geometry_values, parse_poni, read_poni

HEADER = ("# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis\n"
          "# Calibration done on Sun Nov 22 02:19:45 2026\n")
BODY = ("Distance: 0.1234\nPoni1: 0.0812\nPoni2: 0.0756\nRot1: 0.011\nRot2: -0.021\n"
        "Rot3: 0.031\nWavelength: 1.0332e-10\n")
# as pyFAI writes them (PoniFile.write), and an older unversioned version 1 file
FILES = {
    "v1_old": (HEADER + "PixelSize1: 7.5e-05\nPixelSize2: 7.2e-05\n" + BODY
               + "SplineFile: None\n"),
    "v1": HEADER + "poni_version: 1\nDetector: Detector\nPixelSize1: 7.5e-05\n"
          "PixelSize2: 7.2e-05\n" + BODY,
    "v2": HEADER + 'poni_version: 2\nDetector: Detector\nDetector_config: {"pixel1": 7.5e-05, '
          '"pixel2": 7.2e-05, "max_shape": null}\n' + BODY,
    "v2.1": HEADER + 'poni_version: 2.1\nDetector: Detector\nDetector_config: {"pixel1": 7.5e-05,'
            ' "pixel2": 7.2e-05, "max_shape": [2162, 2068], "orientation": 2}\n' + BODY,
    "v3": HEADER + 'poni_version: 3\nDetector: Detector\nDetector_config: {"pixel1": 7.5e-05, '
          '"pixel2": 7.2e-05, "max_shape": null, "orientation": 3}\n' + BODY
          + "Parallax: False\n",
}
ORIENTATION = {"v2.1": 2}


@pytest.mark.parametrize("name", list(FILES))
def test_values(tmp_path, name):
    path = tmp_path / f"{name}.poni"
    path.write_text(FILES[name])
    poni = read_poni(path)
    assert poni["dist"] == 0.1234 and poni["poni1"] == 0.0812 and poni["poni2"] == 0.0756
    assert (poni["rot1"], poni["rot2"], poni["rot3"]) == (0.011, -0.021, 0.031)
    assert poni["wavelength"] == 1.0332e-10
    assert (poni["pixel1"], poni["pixel2"]) == (7.5e-05, 7.2e-05)
    assert poni["orientation"] == ORIENTATION.get(name, 3)
    values = geometry_values(poni)
    assert tuple(values)[:len(GEOMETRY_KEYS)] == GEOMETRY_KEYS
    assert values.get("detector_shape") == ([2162, 2068] if name == "v2.1" else None)
    node = Integrate(**values, npt=10)  # the values build a node as they are
    assert node.geometry.dist == 0.1234 and node.geometry.orientation == poni["orientation"]


@pytest.mark.parametrize("name", list(FILES))
def test_same_as_pyfai(tmp_path, name):
    pyFAI = pytest.importorskip("pyFAI")
    path = tmp_path / f"{name}.poni"
    path.write_text(FILES[name])
    ai = pyFAI.load(str(path))
    poni = read_poni(path)
    for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
        assert poni[key] == getattr(ai, key), key
    assert (poni["pixel1"], poni["pixel2"]) == (ai.detector.pixel1, ai.detector.pixel2)
    assert poni["orientation"] == int(ai.detector.orientation or 3)


def test_file_written_by_pyfai(tmp_path):
    """A file pyFAI itself writes (its current version), for a detector it knows by name."""
    pytest.importorskip("pyFAI")
    from pyFAI.detectors import detector_factory
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ai = AzimuthalIntegrator(dist=0.2, poni1=0.08, poni2=0.077, rot1=0.01, rot2=0.02, rot3=0.0,
                             wavelength=3.1e-11, detector=detector_factory("Eiger2_4M"))
    path = tmp_path / "eiger.poni"
    ai.save(str(path))
    poni = read_poni(path)
    assert poni["detector"] == "Eiger2_4M" and poni["pixel1"] == poni["pixel2"] == 75e-6
    assert poni["dist"] == 0.2 and poni["wavelength"] == 3.1e-11


def test_named_detector_without_pixels():
    text = HEADER + "poni_version: 1\nDetector: Eiger2_4M\n" + BODY
    poni = parse_poni(text)
    assert poni["pixel1"] == poni["pixel2"] == 75e-6


def test_last_value_wins_and_case():
    poni = parse_poni(FILES["v1"] + "DISTANCE: 0.5\n")
    assert poni["dist"] == 0.5


@pytest.mark.parametrize("text, match", [
    (HEADER + "PixelSize1: 1e-4\nPixelSize2: 1e-4\nPoni1: 0.1\nPoni2: 0.1\n", "no distance"),
    (FILES["v2"].replace('{"pixel1"', '{pixel1'), "not JSON"),
    (HEADER + "poni_version: 2\nDetector: Detector\n" + BODY, "without Detector_config"),
    (FILES["v1_old"].replace("SplineFile: None", "SplineFile: /data/distortion.spline"),
     "spline"),
    (FILES["v3"].replace("Parallax: False", "Parallax: True"), "Parallax"),
    (FILES["v1"].replace("poni_version: 1", "poni_version: 7"), "not supported"),
    (FILES["v1"].replace("Distance: 0.1234", "Distance: abc"), "not a number"),
    (HEADER + "Detector: NoSuchDetector\n" + BODY, "no pixel sizes"),
    (FILES["v1"].replace("PixelSize1: 7.5e-05", "PixelSize1: -1"), "pixel sizes must be"),
])
def test_bad_files(text, match):
    with pytest.raises(PoniError, match=match):
        parse_poni(text, "test.poni")


def test_unreadable_file(tmp_path):
    with pytest.raises(PoniError, match="cannot read"):
        read_poni(tmp_path / "missing.poni")
