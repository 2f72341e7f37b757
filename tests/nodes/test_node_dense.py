"""DensePass is bit-identical to correct -> normalise -> threshold; fuse() and the registry."""

import itertools

import numpy as np
import pytest

from nodes import NODES, Correct, DensePass, Label, Normalise, Properties, Threshold, fuse
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.node import set_param
from stream.core.scan import Scan

SHAPE = (64, 80)
DTYPES = ["uint8", "uint16", "uint32", "int16", "int32", "float32", "float64"]


def make_scan(dtype="uint16", shape=SHAPE):
    return Scan.from_start(Start(scan_id="t", detectors={"eiger": DetectorInfo(shape, dtype)}))


def raw_frame(rng, dtype):
    frame = rng.poisson(12, SHAPE).astype(np.float64)
    for _ in range(10):
        r, c = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        frame[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] += rng.uniform(10, 200)
    if np.dtype(dtype).kind == "f":
        frame += rng.normal(0, 0.5, SHAPE)
    if np.dtype(dtype) in (np.uint32, np.int32):
        frame *= 3e5  # float32(raw) rounds
    return frame.astype(dtype)


def both(nodes, **point):
    """(unfused item, fused item) for the same chain and point (nodes never modify inputs)."""
    unfused = Item(0, "eiger", **point)
    for node in nodes:
        unfused = node.process(unfused)
    fused_chain = fuse(nodes)
    assert len(fused_chain) == 1 and fused_chain[0].kind == "dense"
    fused = fused_chain[0].process(Item(0, "eiger", **point))
    return unfused, fused


def assert_identical(a, b):
    for name in ("row", "col", "intensity"):
        x, y = getattr(a.sparse, name), getattr(b.sparse, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert a.flags == b.flags


CASES = list(itertools.product([None, "scalar", "map"], [None, "scalar", "map"],
                               [False, True], [None, "ok", "missing"]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_equals_unfused(dtype):
    rng = np.random.default_rng(DTYPES.index(dtype))
    raw = raw_frame(rng, dtype)
    scale = 3e5 if np.dtype(dtype) in (np.uint32, np.int32) else 1.0
    dark_map = (rng.normal(10, 3, SHAPE) * scale).astype(np.float32)
    flat_map = rng.uniform(0.6, 1.4, SHAPE)
    flat_map[2, 3] = 0.0
    mask = rng.random(SHAPE) < 0.05
    for dark, flat, masked, monitor in CASES:
        dark_v = {None: None, "scalar": 7.3 * scale, "map": dark_map}[dark]
        flat_v = {None: None, "scalar": 0.83, "map": flat_map}[flat]
        correct = Correct(dark=dark_v, flat=flat_v, mask=mask if masked else None)
        counters = {"ok": {"monitor": 1.37}, "missing": {}, None: {}}[monitor]
        nodes = [correct] if (dark, flat, masked) != (None, None, False) or not monitor else []
        if monitor:
            nodes.append(Normalise(reference=1.1))
        cut = float(np.quantile(raw, 0.9)) + 0.37 * scale
        cut_map = rng.uniform(1.0, 1.3, SHAPE) * cut  # keeps no more than the scalar cut
        for threshold in (Threshold(cut=cut), Threshold(cut_map=cut_map)):
            a, b = both([*nodes, threshold], frame=raw, counters=counters)
            assert 0 < a.sparse.nnz < raw.size // 4, (dark, flat, masked, monitor)
            assert_identical(a, b)


def test_fused_equals_unfused_at_the_cut():
    """Pixels whose corrected value lands exactly on or next to the cut."""
    raw = np.arange(5120, dtype=np.uint16).reshape(SHAPE) % 97
    correct, normalise = Correct(dark=0.3, flat=0.7), Normalise()
    counters = {"monitor": 1.3}
    values = (raw.astype(np.float32) - np.float32(0.3)) * np.float32(1 / 0.7)
    values *= np.float32(1 / 1.3)
    for cut in (float(values[0, 50]), float(np.nextafter(values[0, 50], 0)), 0.0):
        threshold = Threshold(cut=cut, max_pixels=5120)  # (a cut or cut map is >= 0)
        a, b = both([correct, normalise, threshold], frame=raw, counters=counters)
        assert_identical(a, b)
        np.testing.assert_array_equal(a.sparse.intensity, values[values.astype(float) > cut])


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_fused_overflow_matches_unfused(dtype):
    rng = np.random.default_rng(8)
    raw = raw_frame(rng, dtype)
    nodes = [Correct(dark=2.0, flat=rng.uniform(0.8, 1.2, SHAPE)), Normalise(),
             Threshold(cut=10.0, max_pixels=150)]
    a, b = both(nodes, frame=raw, counters={"monitor": 0.9})
    assert 0 < a.sparse.nnz <= 150 and "cut raised to" in a.flags[-1]
    assert_identical(a, b)


def test_setup_warmup_read_only_and_sparse_replay():
    rng = np.random.default_rng(9)
    raw = raw_frame(rng, "uint16")
    raw.flags.writeable = False
    dark = np.asfortranarray(rng.normal(3, 1, SHAPE))  # converted to C order once
    nodes = [Correct(dark=dark, flat=1.1), Normalise(reference=2.0), Threshold(cut=30.0)]
    chain = fuse(nodes)
    chain[0].setup(make_scan("uint16"))
    with pytest.raises(ValueError, match="dark"):
        chain[0].setup(make_scan("uint16", (10, 10)))
    a, b = both(nodes, frame=raw, counters={"monitor": 3.0})
    assert_identical(a, b)
    sparse = Threshold(cut=0.0, max_pixels=5120).process(Item(0, "e", frame=raw)).sparse
    a, b = both(nodes, sparse=sparse, counters={"monitor": 3.0})
    assert_identical(a, b)


def test_fuse_runs():
    c, n, t, t2 = Correct(), Normalise(), Threshold(cut=1.0), Threshold(cut=2.0)
    lab, prop = Label(), Properties()
    kinds = lambda chain: [x.kind for x in fuse(chain)]  # noqa: E731
    assert kinds([c, n, t, lab, prop]) == ["dense", "label", "properties"]
    assert kinds([c, t]) == ["dense"] and kinds([n, t]) == ["dense"]
    assert kinds([t, lab]) == ["threshold", "label"]
    # a chain that starts with a node needing the dense frame decodes compressed ones first
    assert kinds([n, c, t]) == ["decode", "normalise", "dense"]
    assert kinds([c, c, t]) == ["decode", "correct", "dense"]
    assert kinds([c, n, lab, t]) == ["decode", "correct", "normalise", "label", "threshold"]
    assert kinds([c, t, n, t2]) == ["dense", "dense"]
    dense = fuse([c, n, t])[0]
    assert isinstance(dense, DensePass)
    assert (dense.correct, dense.normalise, dense.threshold) == (c, n, t)
    set_param(t, "cut", 5.0)
    assert dense.cut == 5.0
    set_param(dense, "cut", 7.0)
    assert t.cut == 7.0


def test_registry():
    assert set(NODES) == {"frame", "correct", "normalise", "integrate", "background",
                          "threshold", "label", "properties", "roi_sums", "ptyd"}
    for kind, cls in NODES.items():
        assert cls.kind == kind and isinstance(cls.settable, tuple)


def test_fused_pre_cut_is_conservative():
    """Float32 raw values packed around the pre-cut's boundary, where float32 rounding bites."""
    rng = np.random.default_rng(10)
    for _ in range(20):
        dark, flat = rng.uniform(-50, 50), rng.uniform(0.3, 3.0)
        monitor, cut = rng.uniform(0.3, 3.0), rng.uniform(1, 1000)
        bound = np.float32(dark + cut * monitor * flat)
        steps = np.arange(-2560, 2560) * np.spacing(bound)
        raw = (bound + steps).astype(np.float32).reshape(SHAPE)
        nodes = [Correct(dark=dark, flat=flat), Normalise(), Threshold(cut=cut, max_pixels=5120)]
        a, b = both(nodes, frame=raw, counters={"monitor": monitor})
        assert 0 < a.sparse.nnz < raw.size
        assert_identical(a, b)


def test_all_masked():
    raw = np.full(SHAPE, 1000, np.uint16)
    for dark in (np.zeros(SHAPE), 0.0):
        nodes = [Correct(dark=dark, mask=np.ones(SHAPE, bool)), Threshold(cut=1.0)]
        a, b = both(nodes, frame=raw)
        assert a.sparse.nnz == 0
        assert_identical(a, b)
