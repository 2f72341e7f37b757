"""A frame with more pixels above the cut than max_pixels: the cut is raised for that
frame to the lowest one that keeps at most max_pixels, whatever the frame's largest
values are. Detector markers (2**32 - 1, 65535) never count in it: a uint32 frame with
a module gap came out empty (the raised cut jumped to ~4.2e6, the histogram that chose
it being 4.2e6 wide per bin), and a uint16 one kept far fewer pixels than max_pixels."""

import re

import numpy as np
import pytest

from nodes import Correct, Normalise, Threshold, fuse
from stream.core.encoded import compress
from stream.core.item import Item

SHAPE = (64, 80)
CUT, MAXN = 20.0, 300


def ring_frame(dtype, seed=4):
    """A bright powder-like band (far more than MAXN pixels above CUT) and spots,
    with distinct enough values; and the same frame with a module gap (two columns)
    and a dead pixel at the dtype's largest value."""
    rng = np.random.default_rng(seed)
    r, c = np.indices(SHAPE)
    radius = np.hypot(r - 32, c - 40)
    frame = rng.poisson(5, SHAPE) + 200 * np.exp(-((radius - 20) / 3) ** 2)
    frame += rng.uniform(0, 1, SHAPE) * 50
    frame = np.round(frame).astype(dtype)
    gapped = frame.copy()
    gapped[:, 60:62] = np.iinfo(dtype).max
    gapped[3, 3] = np.iinfo(dtype).max
    return frame, gapped


def top(frame, cut, maxn, valid):
    """numpy: the pixels a raised cut keeps (every kept value above every dropped one)."""
    values = frame.astype(np.float64) - cut
    above = np.sort(values[valid & (values > 0)])
    limit = above[above.size - maxn - 1]
    return valid & (values > limit), limit


def as_mask(item):
    mask = np.zeros(SHAPE, bool)
    mask[item.sparse.row, item.sparse.col] = True
    return mask


def raised_to(flag):
    m = re.search(r"(\d+) pixels above .* > max_pixels (\d+); cut raised to (\S+) for", flag)
    assert m, flag
    return int(m.group(1)), float(m.group(3))


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("encoded", [False, True])
def test_markers_do_not_raise_the_cut(dtype, encoded):
    frame, gapped = ring_frame(dtype)
    marker = gapped == np.iinfo(dtype).max
    expect, limit = top(frame, CUT, MAXN, ~marker)
    assert expect.sum() > MAXN * 0.95
    for chain in ([Threshold(cut=CUT, max_pixels=MAXN)],
                  [Correct(dark=0.0), Threshold(cut=CUT, max_pixels=MAXN)],  # fused
                  [Threshold(cut_map=np.full(SHAPE, CUT, np.float32), max_pixels=MAXN)]):
        item = Item(0, "eiger", frame=compress(gapped, "bslz4") if encoded else gapped)
        for node in fuse(chain):
            item = node.process(item)
        np.testing.assert_array_equal(as_mask(item), expect)
        n_above = int(((gapped.astype(np.float64) > CUT) & ~marker).sum())
        if chain[-1].cut_map is None:
            assert raised_to(item.flags[0]) == (n_above, CUT + limit)
        else:
            assert f"{n_above} pixels above cut_map" in item.flags[0]


def test_unfused_correct_and_normalise_before_it():
    """correct / normalise make the markers NaN: never above any cut either."""
    frame, gapped = ring_frame("uint32")
    marker = gapped == np.iinfo("uint32").max
    item = Item(0, "eiger", frame=gapped, counters={"monitor": 2.0})
    for node in (Correct(dark=0.0), Normalise(reference=2.0, counter="monitor"),
                 Threshold(cut=CUT, max_pixels=MAXN)):
        item = node.process(item)
    np.testing.assert_array_equal(as_mask(item), top(frame, CUT, MAXN, ~marker)[0])


def test_kept_markers_count_as_the_values_they_are():
    """markers = false: the gap pixels are values like any other (the largest), kept
    with the next largest up to max_pixels, not alone."""
    frame, gapped = ring_frame("uint32")
    item = Threshold(cut=CUT, max_pixels=MAXN, markers=False).process(
        Item(0, "eiger", frame=gapped))
    marker = gapped == np.iinfo("uint32").max
    expect, _ = top(gapped, CUT, MAXN, np.ones(SHAPE, bool))
    np.testing.assert_array_equal(as_mask(item), expect)
    assert (as_mask(item) & marker).sum() == marker.sum() and expect.sum() > MAXN * 0.95


def test_a_hot_pixel_does_not_coarsen_the_raised_cut():
    """One finite value far above the rest (not a marker): the cut still lands among
    the others, keeping close to max_pixels."""
    frame, _ = ring_frame("uint32")
    frame[50, 5] = 2**31
    item = Threshold(cut=CUT, max_pixels=MAXN).process(Item(0, "eiger", frame=frame))
    expect, limit = top(frame, CUT, MAXN, np.ones(SHAPE, bool))
    np.testing.assert_array_equal(as_mask(item), expect)
    assert raised_to(item.flags[0])[1] == CUT + limit
