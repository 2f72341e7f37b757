"""Pixels at an unsigned detector dtype's largest value (EIGER / Lima gaps and bad
pixels) are never kept by default, on every path a frame takes to the sparse pixels."""

import itertools
import logging

import numpy as np
import pytest

from nodes import Correct, Label, Normalise, Threshold, fuse
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
