"""Correct node against a plain numpy reference."""

import numpy as np
import pytest

from nodes import Correct
from stream.core.item import Item, SparseFrame
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan

SHAPE = (64, 80)


def make_scan(shape=SHAPE, dtype="uint16"):
    return Scan.from_start(Start(scan_id="t", detectors={"eiger": DetectorInfo(shape, dtype)}))


def reference(raw, dark, flat, mask):
    out = raw.astype(np.float32)
    excluded = np.zeros(raw.shape, bool) if mask is None else mask != 0
    if dark is not None:
        out = out - np.asarray(dark, np.float32)
    if flat is not None:
        with np.errstate(divide="ignore"):
            inv = (1.0 / np.asarray(flat, np.float64)).astype(np.float32)
        out = out * inv
        if np.ndim(flat):
            excluded |= ~(flat > 0)
    out[excluded] = np.nan
    return out


@pytest.mark.parametrize("kind", ["maps", "scalars", "none", "mask_only"])
def test_correct_matches_numpy(kind):
    rng = np.random.default_rng(1)
    raw = rng.poisson(20, SHAPE).astype(np.uint16)
    dark = flat = mask = None
    if kind == "maps":
        dark = rng.normal(5, 2, SHAPE).astype(np.float32)
        flat = rng.uniform(0.5, 1.5, SHAPE)
        flat[3, 4] = 0.0
        flat[5, 6] = -1.0
        mask = (rng.random(SHAPE) < 0.05).astype(np.int8)
    elif kind == "scalars":
        dark, flat = 3.25, 0.7
    elif kind == "mask_only":
        mask = rng.random(SHAPE) < 0.1
    node = Correct(dark=dark, flat=flat, mask=mask)
    node.setup(make_scan())
    out = node.process(Item(0, "eiger", frame=raw)).frame
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, reference(raw, dark, flat, mask))
    if kind == "maps":
        assert np.isnan(out[3, 4]) and np.isnan(out[5, 6])


def test_mask_includes_bad_flat_and_dark():
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0] = 1
    flat = np.ones(SHAPE)
    flat[1, 1], flat[2, 2] = 0.0, np.nan
    dark = np.zeros(SHAPE)
    dark[3, 3] = -np.inf
    node = Correct(dark=dark, flat=flat, mask=mask)
    assert node.mask.dtype == bool
    assert sorted(zip(*np.nonzero(node.mask), strict=True)) == [(i, i) for i in range(4)]
    assert Correct(flat=np.ones(SHAPE)).mask is None


def test_nonfinite_dark_is_masked():
    dark = np.zeros(SHAPE, np.float32)
    dark[1, 2] = np.inf
    out = Correct(dark=dark).process(Item(0, "e", frame=np.ones(SHAPE, np.uint16))).frame
    assert np.isnan(out[1, 2]) and np.isfinite(np.delete(out.ravel(), 1 * 80 + 2)).all()


@pytest.mark.parametrize("name", ["dark", "flat", "mask"])
def test_shape_mismatch_names_parameter(name):
    node = Correct(**{name: np.ones((10, 10))})
    with pytest.raises(ValueError, match=rf"{name}.*\(10, 10\).*\(64, 80\)"):
        node.setup(make_scan())


def test_inconsistent_arrays_and_bad_scalars():
    with pytest.raises(ValueError, match="dark.*flat"):
        Correct(dark=np.zeros((4, 4)), flat=np.ones((4, 5)))
    with pytest.raises(ValueError, match="flat"):
        Correct(flat=0.0)
    with pytest.raises(ValueError, match="dark"):
        Correct(dark=float("nan"))


def test_sparse_only_item_untouched():
    sparse = SparseFrame(SHAPE, np.array([1], np.uint16), np.array([2], np.uint16),
                         np.array([5.0], np.float32))
    item = Correct(dark=1.0, flat=2.0).process(Item(0, "eiger", sparse=sparse))
    assert item.sparse is sparse and item.frame is None
