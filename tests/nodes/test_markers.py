"""Pixels at an unsigned detector dtype's largest value (EIGER / Lima gaps and bad
pixels) are never kept by default, on every path a frame takes to the sparse pixels."""

import itertools
import logging

import numpy as np
import pytest

from nodes import Background, Correct, Integrate, Label, Normalise, RoiSums, Threshold, fuse
from nodes.threshold import CUT_MAP
from stream.core.encoded import compress
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan

SHAPE = (64, 80)
_ids = itertools.count()


def scan(dtype, scan_id=None):
    """A scan of its own (the markers are logged once a scan, by any node)."""
    scan_id = scan_id or f"markers-{next(_ids)}"
    return Scan.from_start(Start(scan_id=scan_id, detectors={"eiger": DetectorInfo(SHAPE,
                                                                                   dtype)}))


def gapped(dtype, seed=0):
    """A frame with two spots, a module gap (a row and a column) and a few dead pixels
    at the marker value; the spots' pixels above the cut, as (rows, cols)."""
    rng = np.random.default_rng(seed)
    frame = rng.poisson(8, SHAPE).astype(np.float64)
    big = np.iinfo(dtype).max > 255  # uint8: spots below its marker
    frame[10:14, 20:24] += 500 if big else 150
    frame[40:43, 50:55] += 800 if big else 180
    marker = np.iinfo(dtype).max
    frame = frame.astype(dtype)
    spots = np.nonzero(frame > 50)
    frame[30, :] = marker
    frame[:, 70] = marker
    frame[5, 5] = frame[60, 10] = marker
    return frame, spots


def kept(item):
    return item.sparse.row.astype(int), item.sparse.col.astype(int)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("encoded", [False, True])
def test_threshold_drops_markers(dtype, encoded, caplog):
    frame, spots = gapped(dtype)
    nodes = [Threshold(cut=50.0), Threshold(cut=50.0)]  # two worker threads' chains
    the_scan = scan(dtype)
    for node in nodes:
        node.setup(the_scan)
    sent = compress(frame, "bslz4") if encoded else frame
    with caplog.at_level(logging.WARNING, logger="nodes.threshold"):
        out = nodes[0].process(Item(0, "eiger", frame=sent))
        nodes[1].process(Item(1, "eiger", frame=sent))
    rows, cols = kept(out)
    np.testing.assert_array_equal(rows, spots[0])
    np.testing.assert_array_equal(cols, spots[1])
    warned = [r.getMessage() for r in caplog.records if "marker" in r.getMessage()]
    assert len(warned) == 1 and f"{SHAPE[1] + SHAPE[0] - 1 + 2} pixels" in warned[0]


def test_markers_false_keeps_them():
    frame, spots = gapped("uint16")
    node = Threshold(cut=50.0, markers=False)
    node.setup(scan("uint16"))
    out = node.process(Item(0, "eiger", frame=frame))
    assert out.sparse.nnz == len(spots[0]) + SHAPE[1] + SHAPE[0] - 1 + 2
    assert out.sparse.intensity.max() == 65535
    with pytest.raises(ValueError, match="markers"):
        Threshold(cut=50.0, markers="yes")


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("encoded", [False, True])
def test_fused_and_unfused_correction_drop_them_alike(dtype, encoded):
    """correct (dark, flat) and normalise, fused into one pass or node by node: the same
    pixels, none of them a marker, even with `markers = false` on the threshold."""
    frame, spots = gapped(dtype, seed=1)
    rng = np.random.default_rng(2)
    dark = rng.uniform(0, 3, SHAPE).astype(np.float32)
    flat = rng.uniform(0.8, 1.2, SHAPE)

    def chain():
        return [Correct(dark=dark, flat=flat), Normalise(counter="mon", reference=2.0),
                Threshold(cut=50.0, markers=False)]

    point = {"counters": {"mon": 1.0}}
    sent = compress(frame, "bslz4") if encoded else frame
    unfused = Item(0, "eiger", frame=frame, **point)
    for node in chain():
        node.setup(scan(dtype))
        unfused = node.process(unfused)
    fused = fuse(chain())
    assert [n.kind for n in fused] == ["dense"]
    fused[0].setup(scan(dtype))
    out = fused[0].process(Item(0, "eiger", frame=sent, **point))
    np.testing.assert_array_equal(out.sparse.row, unfused.sparse.row)
    np.testing.assert_array_equal(out.sparse.col, unfused.sparse.col)
    np.testing.assert_array_equal(out.sparse.intensity, unfused.sparse.intensity)
    rows, cols = kept(out)
    assert not np.isin(rows, [30]).any() and not np.isin(cols, [70]).any()
    assert {(5, 5), (60, 10)}.isdisjoint(zip(rows.tolist(), cols.tolist(), strict=True))


def test_the_gap_is_no_peak():
    """Labelled after the default threshold: the two spots, not a peak along the gap."""
    frame, _ = gapped("uint32")
    chain = [Threshold(cut=50.0), Label(min_pixels=2)]
    item = Item(0, "eiger", frame=frame)
    for node in chain:
        node.setup(scan("uint32"))
        item = node.process(item)
    assert item.sparse.npeaks == 2


# ------------------------------------------------------------ integrate, roi_sums, background

GEOMETRY = dict(dist=0.05, poni1=0.0031, poni2=0.0042, pixel1=1e-4, pixel2=1e-4, rot1=0.03,
                wavelength=1e-10)


def gaps_of(frame):
    """The marker pixels of a gapped frame, as a mask (nonzero: masked)."""
    return (frame == np.iinfo(frame.dtype).max).astype(np.uint8)


def run(chain, frame, dtype="uint32", **point):
    item = Item(0, "eiger", frame=frame, **point)
    for node in chain:
        node.setup(scan(dtype))
        item = node.process(item)
    return item


@pytest.mark.parametrize("split", ["no", "bbox"])
def test_integrate_leaves_markers_out_as_masked(split):
    """A uint32 frame's gap pixels count in no bin: the profile (and its errors) is the
    one of the same frame with those pixels masked, not billions in the gap's bins."""
    frame, _ = gapped("uint32")
    keys = dict(GEOMETRY, npt=60, split=split, radial_range=[0.5, 6.0])
    gapped_out = run([Integrate(**keys)], frame).outputs
    masked = run([Integrate(**keys, mask=gaps_of(frame))], frame).outputs
    for name in ("integrate1d", "integrate1d_error"):
        np.testing.assert_allclose(gapped_out[name], masked[name], rtol=1e-6)
    assert gapped_out["integrate1d"].max() < 1000
    kept = run([Integrate(**keys, markers=False)], frame).outputs
    assert kept["integrate1d"].max() > 1e6  # markers = false: counted, as the threshold's
    with pytest.raises(ValueError, match="markers"):
        Integrate(**keys, markers=1)


@pytest.mark.parametrize("markers", [True, False])
def test_fused_correct_and_integrate_leave_markers_out(markers):
    """correct + integrate fused into one pass on the raw frame: the gaps count in no bin,
    as when `correct` makes them NaN first (whatever integrate's `markers` says)."""
    frame, _ = gapped("uint32", seed=3)
    dark = np.random.default_rng(4).uniform(0, 3, SHAPE).astype(np.float32)
    keys = dict(GEOMETRY, npt=60, radial_range=[0.5, 6.0], markers=markers)
    chain = fuse([Correct(dark=dark), Integrate(**keys)])
    assert [n.kind for n in chain] == ["decode", "integrate"]
    fused = run(chain, frame).outputs
    masked = run([Correct(dark=dark, mask=gaps_of(frame)), Integrate(**keys)], frame).outputs
    np.testing.assert_allclose(fused["integrate1d"], masked["integrate1d"], rtol=1e-6)
    assert fused["integrate1d"].max() < 1000


def test_roi_sums_leave_markers_out_as_masked():
    """ROI, annulus and tile sums over a gap: those of the frame with the gap masked."""
    frame, _ = gapped("uint32")
    keys = dict(rois=[[25, 40, 60, 80]], annuli=[[30.0, 40.0, 20.0, 6.0]], tiles=True,
                tile_bin=5)
    gapped_out = run([RoiSums(**keys)], frame).outputs
    masked = run([Correct(mask=gaps_of(frame)), RoiSums(**keys)], frame).outputs
    assert set(gapped_out) == {"roi_0", "annulus_0", "tile_0"}
    for name, value in gapped_out.items():
        np.testing.assert_array_equal(value, masked[name])
    assert float(gapped_out["roi_0"]) < 1e5
    kept = run([RoiSums(**keys, markers=False)], frame).outputs
    assert float(kept["roi_0"]) > 1e9


@pytest.mark.parametrize("method", ["sigma_clip", "median"])
@pytest.mark.parametrize("subtract", [False, True])
def test_background_leaves_markers_out_as_masked(method, subtract):
    """The per-bin background, its spread, the cut map (+inf at the gaps) and a subtracted
    frame (NaN there) are those of the frame with the gap pixels masked."""
    frame, _ = gapped("uint32", seed=5)
    keys = dict(GEOMETRY, npt=25, radial_range=[0.5, 6.0], method=method, max_iter=1,
                subtract=subtract)
    gapped_item = run([Background(**keys)], frame)
    masked = run([Background(**keys, mask=gaps_of(frame))], frame)
    for name in ("background", "background_sigma", CUT_MAP):
        np.testing.assert_array_equal(gapped_item.outputs[name], masked.outputs[name])
    assert np.isinf(gapped_item.outputs[CUT_MAP][30]).all()
    if subtract:
        np.testing.assert_array_equal(gapped_item.frame, masked.frame)
        assert np.isnan(gapped_item.frame[:, 70]).all()


def test_fixed_background_masks_markers():
    """A fixed background image: +inf in the cut map and NaN in the subtracted frame at
    the gaps, so no threshold after it keeps them."""
    frame, spots = gapped("uint32")
    image = np.full(SHAPE, 8.0, np.float32)
    for subtract in (False, True):
        chain = [Background(image=image, subtract=subtract), Threshold(cut=50.0, markers=False)]
        cut = run(chain[:1], frame).outputs[CUT_MAP]
        gaps = gaps_of(frame).astype(bool)
        assert np.isinf(cut[gaps]).all() and np.isfinite(cut[~gaps]).all()
        item = run(chain, frame)
        assert {(5, 5), (60, 10)}.isdisjoint(zip(*kept(item), strict=True))
        assert not np.isin(kept(item)[0], [30]).any()
