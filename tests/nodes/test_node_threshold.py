"""Threshold node against np.nonzero, cut maps, overflow and sparse replay."""

import re

import numpy as np
import pytest

from nodes import Background, DensePass, Threshold
from nodes.threshold import precut_as
from stream.config.base import ConfigError
from stream.config.schema import Config
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.node import set_param
from stream.core.scan import Scan

SHAPE = (64, 80)
DTYPES = ["uint8", "uint16", "uint32", "int16", "int32", "float32", "float64"]


def spots_frame(rng, dtype, shape=SHAPE, nspots=12):
    frame = rng.poisson(8, shape).astype(np.float64)
    for _ in range(nspots):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        frame[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] += rng.uniform(20, 100)
    if np.dtype(dtype).kind == "f":
        return (frame + rng.normal(0, 0.3, shape)).astype(dtype)
    return frame.astype(dtype)


def expected(frame, threshold):
    keep = frame.astype(np.float64) > threshold
    rows, cols = np.nonzero(keep)
    return rows, cols, frame[keep].astype(np.float32)


def assert_sparse(sparse, rows, cols, values):
    assert sparse.row.dtype == np.uint16 and sparse.col.dtype == np.uint16
    assert sparse.intensity.dtype == np.float32 and sparse.label is None
    np.testing.assert_array_equal(sparse.row, rows)
    np.testing.assert_array_equal(sparse.col, cols)
    np.testing.assert_array_equal(sparse.intensity, values)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_nonzero(dtype):
    rng = np.random.default_rng(3)
    frame = spots_frame(rng, dtype)
    for cut in (20.0, 20.3, 12.0):
        item = Threshold(cut=cut).process(Item(0, "e", frame=frame))
        assert_sparse(item.sparse, *expected(frame, cut))
        assert item.frame is None and not item.flags


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_values_packed_around_the_cut(dtype):
    cut = 20.3  # not a float32: the float32 pixels nearest to it must be sorted exactly
    near = np.asarray(cut, dtype)
    frame = (near + np.arange(-2560, 2560) * np.spacing(near)).astype(dtype).reshape(SHAPE)
    item = Threshold(cut=cut, max_pixels=5120).process(Item(0, "e", frame=frame))
    assert_sparse(item.sparse, *expected(frame, cut))


@pytest.mark.parametrize("dtype", DTYPES)
def test_precut_as_rounds_down(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    for bound in (20.3, -7.5, 0.0, 1e12, -1e12, float(info.max), float(info.min)):
        typed, use = precut_as(np.dtype(dtype), bound)
        assert typed.dtype == np.dtype(dtype)
        if use:
            assert float(typed) <= bound
            if typed != info.max:  # the next value up is above the bound
                up = np.nextafter(typed, np.inf) if typed.dtype.kind == "f" else int(typed) + 1
                assert float(up) > bound
        else:
            assert bound < float(info.min)


@pytest.mark.parametrize("layout", ["read_only", "big_endian", "strided"])
def test_strict_and_any_layout(layout):
    frame = np.array([[5, 6, 7], [7, 8, 6]], np.uint16)
    if layout == "read_only":
        frame.flags.writeable = False
    elif layout == "big_endian":
        frame = frame.astype(">u2")
    else:
        frame = np.repeat(frame, 2, axis=1)[:, ::2]
    sparse = Threshold(cut=7.0).process(Item(0, "e", frame=frame)).sparse
    assert (sparse.row.tolist(), sparse.col.tolist()) == ([1], [1])


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_cut_map(dtype):
    rng = np.random.default_rng(4)
    frame = spots_frame(rng, dtype)
    cut_map = rng.uniform(5, 40, SHAPE)
    item = Threshold(cut=1000.0, cut_map=cut_map).process(Item(0, "e", frame=frame))
    assert_sparse(item.sparse, *expected(frame, cut_map.astype(np.float32)))


def test_setup_checks_cut_map_shape():
    scan = Scan.from_start(Start(scan_id="t", detectors={"d": DetectorInfo(SHAPE, "uint16")}))
    with pytest.raises(ValueError, match=r"cut_map.*\(8, 8\).*\(64, 80\)"):
        Threshold(cut_map=np.zeros((8, 8))).setup(scan)
    Threshold(cut_map=np.zeros(SHAPE)).setup(scan)


def test_a_negative_cut_is_refused():
    """Below 0 a cut keeps the background (and a signed frame's gap markers): every frame
    would have its cut raised and be flagged. 0 keeps every counted photon: allowed."""
    for cut in (-5.0, -1e-3):
        with pytest.raises(ValueError, match=r"cut must be >= 0, got -.*max_pixels"):
            Threshold(cut=cut)
    frame = np.zeros(SHAPE, np.uint16)
    frame[3, 4] = 1
    item = Threshold(cut=0.0).process(Item(0, "e", frame=frame))
    assert item.sparse.nnz == 1 and not item.flags


def test_a_negative_cut_map_value_is_refused_as_a_negative_cut_is(tmp_path):
    """A cut_map of 40 with -5 at one pixel kept that pixel on every frame."""
    cut_map = np.full(SHAPE, 40.0, np.float32)
    cut_map[1, 1] = -5.0
    with pytest.raises(ValueError, match=r"cut_map must be >= 0.*1 pixels are below 0 "
                                         r"\(the lowest -5 at row 1, column 1\)"):
        Threshold(cut_map=cut_map)
    np.save(tmp_path / "cut.npy", cut_map)
    text = '[[node]]\nkind = "threshold"\ncut_map = "cut.npy"\n' \
           '[[node]]\nkind = "label"\n[[node]]\nkind = "properties"\n'
    with pytest.raises(ConfigError, match=r"test.toml: \[\[node\]\] #1 \(threshold\).*"
                                          r"cut_map must be >= 0"):
        Config.from_text(text, "test.toml", tmp_path).build_nodes()
    cut_map[1, 1] = 0.0  # 0 as a cut is: every pixel above 0
    assert Threshold(cut_map=cut_map).cut_min() == 0.0


def overflow_cut(flag):
    m = re.search(r"(\d+) pixels above .* > max_pixels (\d+); cut raised to (\S+) for", flag)
    assert m, flag
    return int(m.group(1)), int(m.group(2)), float(m.group(3))


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int32"])
def test_overflow_raises_cut(dtype):
    rng = np.random.default_rng(5)
    frame = spots_frame(rng, dtype, nspots=40)
    cut, max_pixels = 10.0, 300
    above = int((frame.astype(np.float64) > cut).sum())
    assert above > max_pixels
    node = Threshold(cut=cut, max_pixels=max_pixels)
    item = node.process(Item(0, "e", frame=frame))
    assert 0 < item.sparse.nnz <= max_pixels
    n_above, maxn, raised = overflow_cut(item.flags[0])
    assert (n_above, maxn) == (above, max_pixels) and raised > cut
    # what is kept is exactly a higher threshold: every kept value beats every dropped one
    kept = np.zeros(SHAPE, bool)
    kept[item.sparse.row, item.sparse.col] = True
    dropped = (frame.astype(np.float64) > cut) & ~kept
    assert frame[kept].min() > frame[dropped].max()
    again = node.process(Item(0, "e", frame=frame))  # deterministic
    np.testing.assert_array_equal(again.sparse.intensity, item.sparse.intensity)
    assert node.cut == cut  # only this frame


def test_overflow_default_max_pixels_and_ties():
    frame = np.full((8, 8), 100, np.uint16)  # all equal: nothing can be partly kept
    item = Threshold(cut=0.0).process(Item(0, "e", frame=frame))
    assert item.sparse.nnz == 0 and "max_pixels 16" in item.flags[0]
    frame[0, :3] = 200  # three above the ties fit within 16
    item = Threshold(cut=0.0).process(Item(0, "e", frame=frame))
    assert item.sparse.col.tolist() == [0, 1, 2]
    frame = np.full((8, 8), np.inf, np.float32)  # no cut can separate these: truncate, loudly
    item = Threshold(cut=0.0).process(Item(0, "e", frame=frame))
    assert item.sparse.nnz == 16 and "kept the first 16 in raster order" in item.flags[0]


def test_overflow_with_cut_map():
    rng = np.random.default_rng(6)
    frame = spots_frame(rng, "float32", nspots=40)
    cut_map = np.full(SHAPE, 10.0)
    cut_map[:, :40] = 30.0
    item = Threshold(cut_map=cut_map, max_pixels=200).process(Item(0, "e", frame=frame))
    assert 0 < item.sparse.nnz <= 200 and "cut_map raised by" in item.flags[0]


def test_sparse_replay():
    rng = np.random.default_rng(7)
    frame = spots_frame(rng, "float32")
    sparse = Threshold(cut=9.0, max_pixels=5120).process(Item(0, "e", frame=frame)).sparse
    sparse.label, sparse.npeaks = np.ones(sparse.nnz, np.int32), 1
    item = Threshold(cut=25.5).process(Item(0, "e", sparse=sparse))
    assert_sparse(item.sparse, *expected(frame, 25.5))
    cut_map = rng.uniform(10, 40, SHAPE).astype(np.float32)
    item = Threshold(cut_map=cut_map).process(Item(0, "e", sparse=sparse))
    assert_sparse(item.sparse, *expected(frame, np.maximum(cut_map, 9.0)))
    item = Threshold(cut=9.0, max_pixels=50).process(Item(0, "e", sparse=sparse))
    assert item.sparse.nnz <= 50 and "cut raised to" in item.flags[0]


def test_cut_is_settable():
    node = Threshold(cut=5.0)
    set_param(node, "cut", 12)
    assert node.cut == 12.0 and isinstance(node.cut, float)
    with pytest.raises(KeyError):
        set_param(node, "max_pixels", 3)


@pytest.mark.parametrize("node, key", [
    (lambda v: Threshold(cut=v), "cut"),
    (lambda v: DensePass(threshold=Threshold(cut=v)), "cut"),
    (lambda v: Background(image=np.zeros((4, 4), np.float32), nsigma=v), "nsigma"),
    (lambda v: Background(image=np.zeros((4, 4), np.float32), min_excess=v), "min_excess"),
])
def test_a_live_change_takes_the_bounds_a_config_takes(node, key):
    """`peakstream set threshold cut 0` was refused ('must be in (0, 1e9]') while a
    config's cut = 0 was accepted: 0 is now taken by both, below 0 by neither."""
    built = node(0.0)
    assert set_param(built, key, 0) == 0.0 and getattr(built, key) == 0.0
    with pytest.raises(ValueError):
        node(-0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, "):
        set_param(node(5.0), key, -0.5)
