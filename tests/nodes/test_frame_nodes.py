"""Frame node (crop, orientation, rebin): numpy's answers, the documented coordinates, geometry."""

import itertools

import numpy as np
import pytest

from nodes import Frame, Integrate
from nodes.frame import FRAME_META, frame_map_of
from nodes.geometry import Geometry
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan

SHAPE = (23, 31)


def scan_of(shape=SHAPE, dtype="uint16", **maps):
    return Scan.from_start(Start("s", {"d": DetectorInfo(shape, dtype, **maps)}))


def reference(frame, roi, flip_rows, flip_cols, transpose, rot90, rebin):
    """The same steps with numpy: slicing, np.flip, .T, np.rot90, reshape-sum."""
    out = frame[roi[0]:roi[1], roi[2]:roi[3]] if roi else frame
    if flip_rows:
        out = np.flip(out, 0)
    if flip_cols:
        out = np.flip(out, 1)
    if transpose:
        out = out.T
    out = np.rot90(out, rot90)
    h, w = out.shape[0] // rebin, out.shape[1] // rebin
    return out[:h * rebin, :w * rebin].reshape(h, rebin, w, rebin).sum(axis=(1, 3))


CASES = list(itertools.product([None, [2, 19, 3, 30]], [False, True], [False, True],
                               [False, True], [0, 1, 2, 3], [1, 2, 3]))


@pytest.mark.parametrize("roi, flip_rows, flip_cols, transpose, rot90, rebin", CASES)
def test_frames_and_coordinates(roi, flip_rows, flip_cols, transpose, rot90, rebin):
    frame = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(SHAPE)
    node = Frame(roi=roi, flip_rows=flip_rows, flip_cols=flip_cols, transpose=transpose,
                 rot90=rot90, rebin=rebin)
    node.setup(scan_of())
    out = node.process(Item(0, "d", frame=frame)).frame
    want = reference(frame, roi, flip_rows, flip_cols, transpose, rot90, rebin)
    np.testing.assert_array_equal(out, want)
    assert out.shape == node.out_shape and out.dtype == node.out_dtype(np.uint16)
    # coordinates: each output pixel's centre is the centre of its block of detector pixels
    rows, cols = np.indices(out.shape)
    y, x = node.to_detector(rows, cols)
    if rebin == 1:
        assert np.all(y % 1 == 0.5) and np.all(x % 1 == 0.5)
        np.testing.assert_array_equal(frame[y.astype(int), x.astype(int)], out)
    else:
        half = (rebin - 1) / 2  # the block's pixels around its centre
        total = np.zeros(out.shape, np.int64)
        for dy, dx in itertools.product(np.arange(rebin) - half, repeat=2):
            total += frame[(y - 0.5 + dy).astype(int), (x - 0.5 + dx).astype(int)]
        np.testing.assert_array_equal(total, out)


def test_centre_crop_is_shifted_inside_and_dtypes_widen():
    frame = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint8).reshape(SHAPE)
    node = Frame(centre=[10.4, 2.0], size=[5, 8], rebin=2)
    node.setup(scan_of(dtype="uint8"))
    assert node.origin == (8, 0)  # round(10.4) - 5 // 2; columns shifted to start at 0
    out = node.process(Item(0, "d", frame=frame)).frame
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, reference(frame, [8, 13, 0, 8], 0, 0, 0, 0, 2))
    for dtype, want in (("int16", np.int64), ("float32", np.float32), ("float64", np.float64),
                        ("uint32", np.int64)):
        assert node.out_dtype(dtype) == want


def test_auto_centre_follows_the_blob():
    node = Frame(auto_centre=True, size=[7, 9], auto_cut=5.0)
    node.setup(scan_of((60, 70)))
    for r, c in ((20, 30), (3, 66), (50, 10)):
        frame = np.ones((60, 70), np.uint16)
        frame[r - 1:r + 2, c - 1:c + 2] = 100
        item = node.process(Item(0, "d", frame=frame))
        r0, c0 = item.outputs["frame_origin"]
        assert (r0, c0) == (min(max(r - 3, 0), 53), min(max(c - 4, 0), 61))
        np.testing.assert_array_equal(item.frame, frame[r0:r0 + 7, c0:c0 + 9])
        assert node.coordinates((r0, c0))[0, 2] == r0
    # nothing above the cut: the frame's middle
    item = node.process(Item(1, "d", frame=np.zeros((60, 70), np.uint16)))
    assert tuple(item.outputs["frame_origin"]) == (30 - 3, 35 - 4)  # (29.5, 34.5) rounded up


def test_output_scan_carries_shape_dtype_map_and_detector_maps():
    pixel_mask = np.zeros(SHAPE, np.uint8)
    pixel_mask[5, 6] = 1
    flatfield = np.full(SHAPE, 2.0)
    node = Frame(roi=[1, 21, 2, 30], transpose=True, rebin=2)
    out = node.output_scan(scan_of(pixel_mask=pixel_mask, flatfield=flatfield))
    info = out.detector()[1]
    assert info.shape == (14, 10) and info.dtype == "uint32"
    assert info.pixel_mask.shape == (14, 10) and info.pixel_mask.sum() == 1
    np.testing.assert_allclose(info.flatfield, 2.0)  # the mean of a block's gains
    pixel_map, detector_shape = frame_map_of(out)
    assert detector_shape == SHAPE
    np.testing.assert_allclose(pixel_map, node.coordinates()[:2].ravel())
    # a second frame node composes with the first
    second = Frame(flip_rows=True)
    both = second.output_scan(out)
    a = node.coordinates() @ second.coordinates()
    np.testing.assert_allclose(frame_map_of(both)[0], a[:2].ravel())
    auto = Frame(auto_centre=True, size=[5, 5]).output_scan(scan_of())
    assert auto.start.meta[FRAME_META]["per_point"]
    with pytest.raises(ValueError, match="auto_centre"):
        frame_map_of(auto)
    assert node.scan_outputs()["frame_map"][0].shape == (3, 3)


def test_transform_a_detector_array():
    node = Frame(roi=[1, 21, 2, 30], flip_cols=True)
    dark = np.random.default_rng(0).random(SHAPE)
    node.setup(scan_of())
    np.testing.assert_array_equal(node.transform(dark), dark[1:21, 2:30][:, ::-1])


@pytest.mark.parametrize("kw, match", [
    ({"roi": [5, 2, 0, 4]}, "row0 < row1"), ({"roi": [0, 2]}, "4 ints"),
    ({"size": [3, 3]}, "needs centre"), ({"centre": [1, 2]}, "need size"),
    ({"roi": [0, 2, 0, 2], "size": [2, 2], "centre": [1, 1]}, "not both"),
    ({"rebin": 0}, "rebin"), ({"rot90": 1.5}, "rot90"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        Frame(**kw)


def test_bad_frames():
    node = Frame(roi=[0, 30, 0, 10])
    with pytest.raises(ValueError, match="does not fit"):
        node.setup(scan_of())
    node = Frame(rebin=2)
    node.setup(scan_of())
    with pytest.raises(ValueError, match="set up for"):
        node.process(Item(0, "d", frame=np.zeros((4, 4), np.uint16)))
    with pytest.raises(ValueError, match="no dense frame"):
        node.process(Item(0, "d"))


PONI = dict(dist=0.1, poni1=0.011, poni2=0.0093, rot1=0.04, rot2=-0.02, rot3=0.1,
            pixel1=1e-4, pixel2=1e-4, wavelength=1e-10)


@pytest.mark.parametrize("kw", [{"roi": [10, 150, 20, 180]}, {"rebin": 2},
                                {"transpose": True, "flip_rows": True}])
def test_geometry_follows_the_frame_node(kw):
    """Integrating the transformed frame = pyFAI on the same frame with the moved detector."""
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector

    shape = (200, 230)
    rng = np.random.default_rng(3)
    frame = rng.poisson(50, shape).astype(np.float32)
    node = Frame(**kw)
    scan = node.output_scan(scan_of(shape, "float32"))
    out = node.process(Item(0, "d", frame=frame)).frame
    integ = Integrate(**PONI, npt=100, split="bbox")
    integ.setup(scan)
    ours = integ.process(Item(0, "d", frame=out)).outputs["integrate1d"]
    # the same geometry in pyFAI's own terms: crop moves the PONI, rebin doubles the pixel
    params = {k: PONI[k] for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")}
    pixel, ref_frame = 1e-4, out
    if "roi" in kw:
        params["poni1"] -= 10 * pixel
        params["poni2"] -= 20 * pixel
    if "rebin" in kw:
        pixel *= 2
    if "transpose" in kw:  # undo the frame node's orientation for pyFAI
        ref_frame = np.flip(out.T, 0)
    det = Detector(pixel, pixel, max_shape=ref_frame.shape)
    ai = pyFAI.load({"detector": det, "wavelength": 1e-10, **params})
    ref = ai.integrate1d(ref_frame, 100, unit="2th_deg", method=("bbox", "csr", "cython"))
    ok = ref.count > 0
    np.testing.assert_allclose(integ.radial(), ref.radial, rtol=1e-6)
    np.testing.assert_allclose(ours[ok], ref.intensity[ok], rtol=1e-3)
    g = Geometry(**PONI)
    assert np.max(np.degrees(g.tth(shape))) >= np.max(integ.radial())


def test_a_frame_node_in_a_scan_stores_its_output_shape_and_pixel_map(tmp_path):
    """Through the runner: the file's sparse shape is the cropped, rebinned frame's and
    /entry/<det>/frame_map maps output pixels to detector pixels."""
    import h5py

    from stream.config.schema import Config
    from stream.run.runner import ScanRunner
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig
    from stream.wire.codec import encode

    cfg = Config.from_text('[[node]]\nkind = "frame"\nroi = [10, 100, 20, 140]\nrebin = 2\n'
                           '[[node]]\nkind = "threshold"\ncut = 40.0\n[[node]]\nkind = "label"\n'
                           '[[node]]\nkind = "properties"\n')
    sim = Simulation(SimConfig(npoints=20, shape=(128, 160), spots=8, seed=3))
    out = tmp_path / "f.h5"
    r = ScanRunner(cfg, output_file=out)
    r.handle(encode(sim.start("s")))
    for i in range(20):
        r.handle(encode(sim.point(i, "s")))
    r.handle(encode(sim.end("s")))
    r.close()
    assert r.results[-1]["status"] == "success"
    with h5py.File(out, "r") as f:
        det = f["entry"][next(k for k in f["entry"] if k not in ("process", "points"))]
        assert (det["sparse"].attrs["shape0"], det["sparse"].attrs["shape1"]) == (45, 60)
        assert det["sparse/row"][()].max() < 45 and det["sparse/col"][()].max() < 60
        # output pixel (r, c) covers detector pixels from (2 r + 10, 2 c + 20)
        assert np.array_equal(det["frame_map"][()], [[2, 0, 10], [0, 2, 20], [0, 0, 1]])
        assert det["peaks2d/npx"].shape[0] > 0
