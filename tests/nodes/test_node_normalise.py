"""Normalise node: float32 scale, flags on bad counters, sparse replay."""

import numpy as np
import pytest

from nodes import Normalise
from stream.core.item import Item, SparseFrame


def test_scales_by_float32_ratio():
    rng = np.random.default_rng(2)
    raw = rng.poisson(30, (16, 20)).astype(np.uint32)
    item = Normalise(counter="srcur", reference=200.0).process(
        Item(0, "e", counters={"srcur": 187.3}, frame=raw))
    scale = np.float32(200.0 / 187.3)
    assert item.frame.dtype == np.float32 and not item.flags
    np.testing.assert_array_equal(item.frame, raw.astype(np.float32) * scale)


@pytest.mark.parametrize("counters, why", [
    ({}, "counter 'monitor' missing"),
    ({"monitor": 0.0}, "monitor"),
    ({"monitor": -3.0}, "monitor"),
    ({"monitor": float("nan")}, "monitor"),
    ({"monitor": 1e-300}, "float32"),
])
def test_bad_counter_flags_and_does_not_scale(counters, why):
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4)
    item = Normalise().process(Item(0, "e", counters=counters, frame=raw))
    assert len(item.flags) == 1 and item.flags[0].startswith("normalise:")
    assert why in item.flags[0]
    np.testing.assert_array_equal(item.frame, raw.astype(np.float32))


def test_sparse_only_scales_intensity():
    sparse = SparseFrame((4, 4), np.array([0, 1], np.uint16), np.array([1, 1], np.uint16),
                         np.array([3.0, 7.5], np.float32), np.array([1, 1], np.int32), 1)
    item = Normalise(reference=2.0).process(Item(0, "e", counters={"monitor": 3.0}, sparse=sparse))
    np.testing.assert_array_equal(item.sparse.intensity, sparse.intensity * np.float32(2.0 / 3.0))
    assert item.sparse.npeaks == 1 and sparse.intensity[0] == 3.0  # input not modified


def test_rejects_bad_reference():
    with pytest.raises(ValueError, match="reference"):
        Normalise(reference=0.0)
