"""The PONI's named detector gives the integrate node (and diffmap) its mask and dummy, as
pyFAI: a Pilatus frame with -1 in its module gaps and -2 bad pixels integrates as pyFAI's."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from nodes.threshold import CUT_MAP
from stream.config.schema import Config
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan
from stream.maps.diffmap import Settings, run_diffmap

pyFAI = pytest.importorskip("pyFAI")
fabio = pytest.importorskip("fabio")
PEAKS = "[[node]]\nkind = 'label'\n[[node]]\nkind = 'properties'\n"
METHOD = ("no", "csr", "cython")


def pilatus(tmp_path, n=2):
    """A Pilatus300k PONI written by pyFAI and `n` frames as the detector writes them."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    det = pyFAI.detector_factory("Pilatus300k")
    AzimuthalIntegrator(dist=0.2, poni1=0.02, poni2=0.03, rot1=0.01, detector=det,
                        wavelength=1e-10).write(str(tmp_path / "pilatus.poni"))
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        fr = rng.poisson(100, det.shape).astype(np.int32)
        fr[det.mask.astype(bool)] = -1  # module gaps
        fr[5, 5] = fr[300, 200] = -2  # bad pixels
        frames.append(fr)
    return det, frames


def integrate(node, frame):
    node.setup(Scan.from_start(Start("s", {"d": DetectorInfo(frame.shape, "int32")})))
    return node.process(Item(0, "d", frame=frame)).outputs


def test_integrate_node_uses_the_poni_detector_mask_and_dummy(tmp_path):
    det, (frame, _) = pilatus(tmp_path)
    (tmp_path / "c.toml").write_text('[[node]]\nkind = "integrate"\nponi = "pilatus.poni"\n'
                                     'npt = 300\n' + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    assert np.array_equal(node.mask, det.mask.astype(bool))
    assert (node.dummy, node.delta_dummy) == (-2.0, 1.5)
    out = integrate(node, frame)
    ref = pyFAI.load(str(tmp_path / "pilatus.poni")).integrate1d(
        frame, 300, unit="2th_deg", method=METHOD, error_model="poisson")
    np.testing.assert_allclose(node.radial(), ref.radial, rtol=1e-9)
    np.testing.assert_allclose(out["integrate1d"], ref.intensity, rtol=1e-5)
    np.testing.assert_allclose(out["integrate1d_error"], ref.sigma, rtol=1e-5)
    c = node.config()
    assert c["has_mask"] and c["dummy"] == -2.0
    assert c["detector"] == "Pilatus 300k: mask, dummy, delta_dummy"


def test_the_config_mask_or_dummy_replaces_the_detector_one(tmp_path):
    det, (frame, _) = pilatus(tmp_path)
    np.save(tmp_path / "none.npy", np.zeros(det.shape, bool))
    (tmp_path / "c.toml").write_text('[[node]]\nkind = "integrate"\nponi = "pilatus.poni"\n'
                                     'npt = 300\nmask = "none.npy"\n' + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    assert not node.mask.any() and node.dummy == -2.0
    assert node.config()["detector"] == "Pilatus 300k: dummy, delta_dummy"
    ai = pyFAI.load(str(tmp_path / "pilatus.poni"))
    ref = ai.integrate1d(frame, 300, unit="2th_deg", method=METHOD,
                         mask=np.zeros(det.shape, bool))
    np.testing.assert_allclose(integrate(node, frame)["integrate1d"], ref.intensity, rtol=1e-5)
    (tmp_path / "c.toml").write_text('[[node]]\nkind = "integrate"\nponi = "pilatus.poni"\n'
                                     'npt = 300\ndummy = -1.0\n' + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    assert node.mask.any() and (node.dummy, node.delta_dummy) == (-1.0, 0.0)
    assert node.config()["detector"] == "Pilatus 300k: mask"


def test_a_plain_detector_gives_no_mask(tmp_path):
    (tmp_path / "det.poni").write_text(
        "poni_version: 2.1\nDetector: Detector\n"
        'Detector_config: {"pixel1": 7.5e-05, "pixel2": 7.5e-05, "orientation": 3}\n'
        "Distance: 0.25\nPoni1: 0.081\nPoni2: 0.077\nWavelength: 3.1e-11\n")
    (tmp_path / "c.toml").write_text('[[node]]\nkind = "integrate"\nponi = "det.poni"\n'
                                     + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    assert node.mask is None and node.dummy is None and node.config()["detector"] is None


def test_diffmap_default_engine_drops_the_detector_gaps_as_pyfai(tmp_path):
    _, frames = pilatus(tmp_path)
    names = []
    for k, fr in enumerate(frames):
        names.append(str(tmp_path / f"p_{k:04d}.cbf"))
        fabio.cbfimage.CbfImage(data=fr).write(names[-1])
    poni = str(tmp_path / "pilatus.poni")
    maps = {}
    # the PONI file (-p), or its values as pyFAI's dict (a --config's "poni")
    for how, geometry in (("file", {"poni_file": poni}),
                          ("dict", {"poni": pyFAI.load(poni).get_config()})):
        for engine in ("peakstream", "pyfai"):
            out = str(tmp_path / f"{how}-{engine}.h5")
            run_diffmap(Settings(inputs=names, output=out, nfast=2, nslow=1, npt=300,
                                 method=list(METHOD), engine=engine, **geometry))
            with h5py.File(out) as f:
                maps[how, engine] = f["entry_0000/pyFAI/result/intensity"][()]
                config = json.loads(f["entry_0000/pyFAI/configuration/data"].asstr()[()])
            if engine == "peakstream":
                assert config["detector_masking"] == "Pilatus 300k: mask, dummy, delta_dummy"
    ref = pyFAI.load(poni).integrate1d(frames[0], 300, unit="2th_deg", method=METHOD)
    np.testing.assert_allclose(maps["file", "pyfai"][0, 0], ref.intensity, rtol=1e-6)
    for key, found in maps.items():
        np.testing.assert_allclose(found, maps["file", "pyfai"], rtol=1e-5, err_msg=key)


def test_frames_of_another_shape_name_the_ponis_detector(tmp_path):
    """A PONI naming a Pilatus300k on 256 x 256 frames: the mask (the detector's, not one
    the user gave) is what does not fit, and the reason says whose it is."""
    pilatus(tmp_path, n=0)
    (tmp_path / "c.toml").write_text('[[node]]\nkind = "integrate"\nponi = "pilatus.poni"\n'
                                     'npt = 300\n' + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    with pytest.raises(ValueError, match=r"mask \(of the PONI's detector Pilatus 300k\) has "
                                         r"shape \(619, 487\) but frames have shape"):
        integrate(node, np.zeros((256, 256), np.int32))


def test_background_node_uses_the_poni_detector_mask_and_dummy(tmp_path):
    """Each radial bin's level is the mean of its valid pixels (max_iter 0: no clipping),
    numpy's and pyFAI's integrate1d's on the same bins; gaps and bad pixels never kept."""
    det, (frame, _) = pilatus(tmp_path)
    (tmp_path / "c.toml").write_text('[[node]]\nkind = "background"\nponi = "pilatus.poni"\n'
                                     'npt = 300\nmax_iter = 0\n[[node]]\nkind = "threshold"\n'
                                     + PEAKS)
    node = Config.load(tmp_path / "c.toml").build_nodes()[0]
    assert np.array_equal(node.mask, det.mask.astype(bool))
    assert (node.dummy, node.delta_dummy) == (-2.0, 1.5)
    node.setup(Scan.from_start(Start("s", {"d": DetectorInfo(frame.shape, "int32")})))
    out = node.process(Item(0, "d", frame=frame)).outputs
    valid = ~det.mask.astype(bool) & (frame >= 0)
    v, pbin = frame.ravel().astype(np.float64), node.pbin
    count = np.bincount(pbin[valid.ravel()], minlength=300)
    mean = np.bincount(pbin[valid.ravel()], v[valid.ravel()], 300) / np.maximum(count, 1)
    std = [v[valid.ravel() & (pbin == k)].std() for k in range(300)]
    full = count > 0
    assert full.sum() > 250
    np.testing.assert_allclose(out["background"][full], mean[full], rtol=1e-5)
    np.testing.assert_allclose(out["background_sigma"][full], np.array(std)[full], rtol=1e-4)
    ref = pyFAI.load(str(tmp_path / "pilatus.poni")).integrate1d(
        frame, 300, unit="2th_deg", method=METHOD, correctSolidAngle=False)
    radial = node.scan_outputs()["background_radial"][0]
    np.testing.assert_allclose(radial, ref.radial, rtol=1e-9)
    np.testing.assert_allclose(out["background"][full], ref.intensity[full], rtol=1e-5)
    assert np.all(np.isinf(out[CUT_MAP][~valid])) and np.isfinite(out[CUT_MAP][valid]).all()
    config = json.loads(node.scan_outputs()["background_config"][0][()])
    assert config["has_mask"] and config["dummy"] == -2.0
    assert config["detector"] == "Pilatus 300k: mask, dummy, delta_dummy"
