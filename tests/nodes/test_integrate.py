"""Integrate node: a known powder ring, pyFAI's integrate1d / integrate2d, fused corrections."""

import json

import numpy as np
import pytest

from nodes import (
    Correct,
    DensePass,
    FusedIntegrate,
    Integrate,
    Label,
    Normalise,
    Properties,
    Threshold,
    fuse,
)
from nodes.decode import Decode
from stream.core.encoded import compress
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan
from stream.run.pipeline import Pipeline

SHAPE = (180, 210)
PIXEL = 1e-4
TILTED = dict(dist=0.1, poni1=0.008, poni2=0.0095, rot1=0.05, rot2=-0.03, rot3=0.2)


def scan_of(shape=SHAPE, dtype="float32"):
    return Scan.from_start(Start("s", {"d": DetectorInfo(shape, dtype)}))


def node(setup=True, dtype="float32", **kw):
    params = {**TILTED, "pixel1": PIXEL, "pixel2": PIXEL, "wavelength": 1e-10, "npt": 150, **kw}
    n = Integrate(**params)
    if setup:
        n.setup(scan_of(dtype=dtype))
    return n


def powder_frame(rng, geometry_node, tth0, width=0.05, shape=SHAPE):
    tth = np.degrees(geometry_node.geometry.tth(shape))
    ring = 500.0 * np.exp(-0.5 * ((tth - tth0) / width) ** 2)
    return (rng.poisson(20, shape) + ring).astype(np.float32)


def test_powder_ring_peaks_at_its_angle():
    rng = np.random.default_rng(1)
    for split in ("no", "bbox"):
        for tth0 in (5.0, 9.3):
            n = node(split=split, npt=300, radial_range=[2.0, 12.0])
            item = n.process(Item(0, "d", frame=powder_frame(rng, n, tth0)))
            radial = n.radial()
            peak = radial[np.argmax(item.outputs["integrate1d"])]
            assert abs(peak - tth0) <= radial[1] - radial[0]
            assert item.outputs["integrate1d"].dtype == np.float32
            assert item.outputs["integrate1d"].shape == (300,)


def test_flat_frame_integrates_to_its_value():
    """A frame equal to the solid angle integrates to 1 with the solid-angle correction."""
    n = node(npt=50)
    frame = n.geometry.solid_angle(SHAPE) * np.float32(7.0)
    out = n.process(Item(0, "d", frame=frame)).outputs
    np.testing.assert_allclose(out["integrate1d"], 7.0, rtol=1e-5)
    # Poisson error of a bin: sqrt(sum v) / sum(norm), v = 7 * norm
    plan = n.plan
    counts = np.bincount(plan.pbin[plan.pbin >= 0], minlength=50)
    assert np.all(counts > 0)
    expected = np.sqrt(np.bincount(plan.pbin[plan.pbin >= 0],
                                   weights=frame.ravel()[plan.pbin >= 0], minlength=50))
    np.testing.assert_allclose(out["integrate1d_error"], expected / plan.norm_total, rtol=1e-5)


OPTIONS = {
    "plain": {},
    "mask": {"mask": "mask"},
    "no_solid_angle": {"correctSolidAngle": False},
    "polarization": {"polarization_factor": 0.95},
    "radial_range": {"radial_range": (4.0, 11.0)},
    "azimuth_range": {"azimuth_range": (-120.0, 30.0)},
    "both_ranges": {"radial_range": (3.0, 9.0), "azimuth_range": (10.0, 170.0)},
    "dummy": {"dummy": 20.0, "delta_dummy": 0.5},
    "q_nm": {"unit": "q_nm^-1"},
    "q_A": {"unit": "q_A^-1", "radial_range": (0.3, 0.9)},
}


def pyfai_args(options, mask):
    kw = dict(options)
    if kw.get("mask") == "mask":
        kw["mask"] = mask
    unit = kw.pop("unit", "2th_deg")
    ours = {("correct_solid_angle" if k == "correctSolidAngle" else k):
            (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    return unit, kw, ours


def assert_matches(ours, ref, rtol=1e-3):
    ok = ref.count > 0 if ref.count is not None else np.ones(ref.intensity.shape, bool)
    assert ok.sum() > 0.3 * ok.size
    np.testing.assert_allclose(ours[0][ok], ref.intensity[ok], rtol=rtol)
    if ours[1] is not None:
        np.testing.assert_allclose(ours[1][ok], ref.sigma[ok], rtol=rtol)
    assert np.all(ours[0][~ok] == 0)  # pyFAI's empty value


@pytest.mark.parametrize("split", ["no", "bbox"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_matches_pyfai_integrate1d(split, option):
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector

    rng = np.random.default_rng(2)
    frame = rng.poisson(20, SHAPE).astype(np.float32) * np.linspace(0.5, 2, SHAPE[1])
    frame[3, 4] = np.nan
    frame[10:12, 30:40] = 20.0  # dummy values (within 0.5)
    mask = np.zeros(SHAPE, np.int8)
    mask[40:50, :] = 1
    mask[:, 100:104] = 1
    unit, kw, ours = pyfai_args(OPTIONS[option], mask)
    ai = pyFAI.load({"detector": Detector(PIXEL, PIXEL, max_shape=SHAPE), "wavelength": 1e-10,
                     **TILTED})
    ref = ai.integrate1d(frame, 150, unit=unit, method=(split, "csr", "cython"),
                         error_model="poisson", **kw)
    n = node(split=split, unit=unit, **ours)
    out = n.process(Item(0, "d", frame=frame)).outputs
    np.testing.assert_allclose(n.radial(), ref.radial, rtol=1e-9)
    assert_matches((out["integrate1d"], out["integrate1d_error"]), ref)


@pytest.mark.parametrize("npt, npt_azim", [(2000, 0), (300, 360)])
def test_pixels_over_many_bins_match_pyfai(npt, npt_azim):
    """Bins narrower than a pixel: pixels spanning 3+ bins take the overflow path."""
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector

    rng = np.random.default_rng(12)
    frame = rng.poisson(30, SHAPE).astype(np.float32)
    ai = pyFAI.load({"detector": Detector(PIXEL, PIXEL, max_shape=SHAPE), "wavelength": 1e-10,
                     **TILTED})
    n = node(split="bbox", npt=npt, npt_azim=npt_azim)
    assert n.plan.overflow[0].size > 100
    out = n.process(Item(0, "d", frame=frame)).outputs
    if npt_azim:
        ref = ai.integrate2d_ng(frame, npt, npt_azim, unit="2th_deg", error_model="poisson",
                                method=("bbox", "csr", "cython"))
        assert_matches((out["integrate2d"], out["integrate2d_error"]), ref)
    else:
        ref = ai.integrate1d(frame, npt, unit="2th_deg", error_model="poisson",
                             method=("bbox", "csr", "cython"))
        assert_matches((out["integrate1d"], out["integrate1d_error"]), ref)


@pytest.mark.parametrize("split", ["no", "bbox"])
@pytest.mark.parametrize("azimuth_range", [None, (-100.0, 20.0)])
def test_matches_pyfai_integrate2d(split, azimuth_range):
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector

    rng = np.random.default_rng(3)
    frame = rng.poisson(30, SHAPE).astype(np.float32)
    ai = pyFAI.load({"detector": Detector(PIXEL, PIXEL, max_shape=SHAPE), "wavelength": 1e-10,
                     **TILTED})
    ref = ai.integrate2d_ng(frame, 80, 36, unit="2th_deg", method=(split, "csr", "cython"),
                            error_model="poisson", azimuth_range=azimuth_range,
                            polarization_factor=0.9)
    n = node(split=split, npt=80, npt_azim=36, polarization_factor=0.9,
             azimuth_range=None if azimuth_range is None else list(azimuth_range))
    out = n.process(Item(0, "d", frame=frame)).outputs
    assert out["integrate2d"].shape == (36, 80) == ref.intensity.shape
    np.testing.assert_allclose(n.radial(), ref.radial, rtol=1e-9)
    np.testing.assert_allclose(n.azimuthal(), ref.azimuthal, atol=1e-4)
    assert_matches((out["integrate2d"], out["integrate2d_error"]), ref)


def test_azimuth_range_across_180_degrees():
    """(150, -150) is 60 degrees around 180: the pixels on both sides of the cut count."""
    rng = np.random.default_rng(4)
    n = node(poni1=0.009, poni2=0.0105, rot1=0.0, rot2=0.0, rot3=0.0, npt=40,
             azimuth_range=[150.0, -150.0], correct_solid_angle=False)
    chi = np.degrees(n.geometry.chi(SHAPE))
    frame = rng.poisson(10, SHAPE).astype(np.float32)
    frame[np.abs(chi) >= 150] += 100.0  # only the selected sector is raised
    out = n.process(Item(0, "d", frame=frame)).outputs["integrate1d"]
    filled = out[out != 0]
    assert filled.size > 20 and filled.min() > 90.0


def correct_chain(rng, shape=SHAPE):
    dark = rng.uniform(5, 10, shape).astype(np.float32)
    flat = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[20:30, 50:60] = 1
    flat[0, :5] = 0.0  # excluded by correct as well
    return Correct(dark=dark, flat=flat, mask=mask), Normalise(counter="monitor",
                                                               reference=1000.0)


@pytest.mark.parametrize("split", ["no", "bbox"])
def test_fused_corrections_equal_the_unfused_chain(split):
    rng = np.random.default_rng(5)
    correct, normalise = correct_chain(rng)
    raw = (rng.poisson(40, SHAPE) + 10).astype(np.uint16)
    counters = {"monitor": 1234.5}
    integrate = node(split=split, setup=False, dummy=None)
    fused = FusedIntegrate(integrate, correct=correct, normalise=normalise)
    fused.setup(scan_of(dtype="uint16"))
    a = fused.process(Item(0, "d", frame=raw, counters=dict(counters)))
    assert a.frame is raw  # left raw for the dense pass after it
    item = Item(0, "d", frame=raw, counters=dict(counters))
    plain = node(split=split)
    for step in (correct, normalise, plain):
        item = step.process(item)
    for key in ("integrate1d", "integrate1d_error"):
        np.testing.assert_allclose(a.outputs[key], item.outputs[key], rtol=2e-7)
    np.testing.assert_array_equal(plain.radial(), integrate.radial())


@pytest.mark.parametrize("split", ["no", "bbox"])
@pytest.mark.parametrize("reference", [1.0, 1e4])
@pytest.mark.parametrize("do_fuse", [True, False])
def test_errors_after_normalise_are_the_counts_poisson_errors(split, reference, do_fuse):
    """correct (dark) -> normalise -> integrate: the errors are pyFAI's integrate1d of the
    counts (raw - dark) with normalization_factor = monitor / reference; they were those
    of the normalised frame taken as counts, off by sqrt(monitor / reference)."""
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector

    rng = np.random.default_rng(9)
    dark = rng.uniform(5, 10, SHAPE).astype(np.float32)
    raw = (rng.poisson(40, SHAPE) + 10).astype(np.uint16)
    monitor = 10057.0
    pipe = Pipeline([Correct(dark=dark), Normalise(counter="monitor", reference=reference),
                     node(setup=False, split=split, dummy=None)], fuse=do_fuse)
    pipe.setup(scan_of(dtype="uint16"))
    out = pipe.process(Item(0, "d", frame=raw, counters={"monitor": monitor})).outputs
    ai = pyFAI.load({"detector": Detector(PIXEL, PIXEL, max_shape=SHAPE), "wavelength": 1e-10,
                     **TILTED})
    counts = raw.astype(np.float32) - dark
    ref = ai.integrate1d(counts, 150, unit="2th_deg", method=(split, "csr", "cython"),
                         error_model="poisson", normalization_factor=monitor / reference)
    assert_matches((out["integrate1d"], out["integrate1d_error"]), ref, rtol=1e-5)


def test_fuse_shapes():
    rng = np.random.default_rng(6)
    correct, normalise = correct_chain(rng)
    integ, thr = node(setup=False), Threshold(cut=50.0)
    chain = fuse([correct, normalise, integ, thr, Label(), Properties()])
    assert [type(n) for n in chain] == [Decode, FusedIntegrate, DensePass, Label, Properties]
    assert chain[1].integrate is integ and chain[2].threshold is thr
    assert [type(n) for n in fuse([correct, integ])] == [Decode, FusedIntegrate]
    # anything else after integrate: the corrections stay unfused
    label = Label()
    assert [type(n) for n in fuse([correct, integ, label])] == [Decode, Correct, Integrate, Label]


def spots_frame(rng, shape=SHAPE):
    frame = rng.poisson(15, shape).astype(np.float64)
    for _ in range(15):
        r, c = rng.integers(2, shape[0] - 3), rng.integers(2, shape[1] - 3)
        frame[r - 2:r + 3, c - 2:c + 3] += rng.uniform(200, 400)
    return frame.astype(np.uint16)


@pytest.mark.parametrize("split", ["no", "bbox"])
def test_pipeline_with_integrate_between_corrections_and_threshold(split):
    """The fused chain gives the same peaks as without integrate, and the unfused outputs."""
    rng = np.random.default_rng(7)
    frames = [spots_frame(rng) for _ in range(3)]
    results = {}
    for name, with_integrate, do_fuse in (("fused", True, True), ("unfused", True, False),
                                          ("peaks only", False, True)):
        rng2 = np.random.default_rng(8)
        correct, normalise = correct_chain(rng2)
        nodes = [correct, normalise]
        if with_integrate:
            nodes.append(node(setup=False, split=split))
        nodes += [Threshold(cut=100.0), Label(), Properties()]
        pipe = Pipeline(nodes, fuse=do_fuse)
        pipe.setup(scan_of(dtype="uint16"))
        results[name] = [pipe.process(Item(i, "d", frame=f, counters={"monitor": 900.0 + i}))
                         for i, f in enumerate(frames)]
    for a, b, c in zip(results["fused"], results["unfused"], results["peaks only"], strict=True):
        np.testing.assert_allclose(a.outputs["integrate1d"], b.outputs["integrate1d"], rtol=2e-7)
        for other in (b, c):
            np.testing.assert_array_equal(a.sparse.row, other.sparse.row)
            np.testing.assert_array_equal(a.sparse.intensity, other.sparse.intensity)
            np.testing.assert_array_equal(a.peaks["sum_intensity"], other.peaks["sum_intensity"])
        assert a.sparse.nnz > 0 and len(a.flags) == 0


def test_compressed_frame_is_decoded():
    rng = np.random.default_rng(9)
    raw = rng.poisson(30, SHAPE).astype(np.uint16)
    n = node(dtype="uint16")
    dense = n.process(Item(0, "d", frame=raw)).outputs["integrate1d"]
    enc = n.process(Item(1, "d", frame=compress(raw, "bslz4"))).outputs["integrate1d"]
    np.testing.assert_array_equal(dense, enc)


def test_bad_input_and_parameters():
    n = node()
    with pytest.raises(ValueError, match="shape"):
        n.process(Item(0, "d", frame=np.zeros((10, 10), np.float32)))
    with pytest.raises(ValueError, match="no dense frame"):
        n.process(Item(0, "d"))
    for kw, match in (({"split": "full"}, "split"), ({"npt": 0}, "npt"),
                      ({"unit": "q_nm^-1", "wavelength": 0.0}, "wavelength"),
                      ({"radial_range": [5.0, 1.0]}, "radial_range"),
                      ({"polarization_factor": 2.0}, "polarization_factor"),
                      ({"error_model": "azimuthal"}, "error_model"),
                      ({"unit": "chi_deg"}, "unknown radial unit")):
        with pytest.raises(ValueError, match=match):
            node(setup=False, **kw)
    with pytest.raises(ValueError, match="mask has shape"):
        node(mask=np.zeros((3, 3), np.uint8))
    with pytest.raises(RuntimeError, match="setup"):
        node(setup=False).radial()


def test_scan_outputs_and_no_error_model():
    n = node(npt=64, npt_azim=8, unit="q_A^-1", error_model="none", name="cake")
    out = n.scan_outputs()
    assert out["cake_radial"][1] == {"units": "q_A^-1"} and out["cake_radial"][0].shape == (64,)
    assert out["cake_azimuthal"][0].shape == (8,)
    assert -180 <= out["cake_azimuthal"][0].min() and out["cake_azimuthal"][0].max() <= 180
    config = json.loads(out["cake_config"][0].item().decode())
    assert config["unit"] == "q_A^-1" and config["method"] == ["no", "csr"]
    item = n.process(Item(0, "d", frame=np.ones(SHAPE, np.float32)))
    cake = item.outputs["cake"]
    assert set(item.outputs) == {"cake"} and cake.shape == (8, 64)
    filled = cake[cake != 0]  # ones / solid angle (<= 1, 1 at the PONI): at least 1
    assert filled.size > 100 and filled.min() >= 1.0 - 1e-6 and np.isfinite(filled).all()
