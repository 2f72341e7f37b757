"""Label node against scipy.ndimage.label (8-connectivity) on random sparse frames
(split = "none"); the local-maximum split is tested in test_split.py."""

import numpy as np
import pytest
from scipy import ndimage

from nodes import Label
from stream.core.item import Item, SparseFrame

SHAPE = (64, 80)


def random_sparse(rng, density=0.15, nblobs=15):
    keep = rng.random(SHAPE) < density  # speckle: many small, oddly shaped blobs
    for _ in range(nblobs):
        r, c = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        keep[max(r - 3, 0):r + rng.integers(1, 5), max(c - 3, 0):c + rng.integers(1, 5)] = True
    rows, cols = np.nonzero(keep)
    intensity = rng.uniform(1, 100, rows.size).astype(np.float32)
    return SparseFrame(SHAPE, rows.astype(np.uint16), cols.astype(np.uint16), intensity), keep


def scipy_labels(sparse):
    dense = np.zeros(sparse.shape, bool)
    dense[sparse.row, sparse.col] = True
    labels, n = ndimage.label(dense, structure=np.ones((3, 3)))
    return labels[sparse.row, sparse.col], n


def assert_same_partition(ours, theirs):
    pairs = np.unique(np.stack([ours, theirs]), axis=1)
    assert pairs.shape[1] == np.unique(ours).size == np.unique(theirs).size


def assert_raster_numbering(labels, npeaks):
    values, first = np.unique(labels, return_index=True)
    np.testing.assert_array_equal(values, np.arange(1, npeaks + 1))
    assert np.all(np.diff(first) > 0)


@pytest.mark.parametrize("seed", range(5))
def test_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    sparse, _ = random_sparse(rng, density=[0.02, 0.15, 0.3, 0.5, 0.7][seed])
    item = Label(split="none").process(Item(0, "e", sparse=sparse))
    labels = item.sparse.label
    ref, n = scipy_labels(sparse)
    assert labels.dtype == np.int32 and item.sparse.npeaks == n
    assert_same_partition(labels, ref)
    assert_raster_numbering(labels, n)
    assert item.sparse.nnz == sparse.nnz


@pytest.mark.parametrize("min_pixels", [2, 5, 20])
def test_min_pixels_drops_small_blobs(min_pixels):
    rng = np.random.default_rng(11)
    sparse, _ = random_sparse(rng)
    ref, n = scipy_labels(sparse)
    sizes = np.bincount(ref, minlength=n + 1)
    big = sizes[ref] >= min_pixels
    item = Label(min_pixels=min_pixels, split="none").process(Item(0, "e", sparse=sparse))
    out = item.sparse
    np.testing.assert_array_equal(out.row, sparse.row[big])
    np.testing.assert_array_equal(out.col, sparse.col[big])
    np.testing.assert_array_equal(out.intensity, sparse.intensity[big])
    assert out.npeaks == np.unique(ref[big]).size
    assert_same_partition(out.label, ref[big])
    assert_raster_numbering(out.label, out.npeaks)
    assert np.bincount(out.label)[1:].min(initial=min_pixels) >= min_pixels


def sparse_of(pixels, shape=SHAPE):
    rows, cols = np.array(sorted(pixels), np.uint16).reshape(-1, 2).T
    return SparseFrame(shape, rows, cols, np.ones(rows.size, np.float32))


@pytest.mark.parametrize("pixels, labels", [
    ([], []),
    ([(5, 5)], [1]),
    ([(0, 79), (1, 0)], [1, 2]),  # row ends do not wrap
    ([(0, 0), (1, 1)], [1, 1]),  # diagonal
    ([(0, 1), (1, 0)], [1, 1]),  # anti-diagonal
    ([(0, 0), (0, 2), (1, 1)], [1, 1, 1]),  # two starts joined below: one label
    ([(0, 5), (1, 0), (1, 1), (1, 2), (1, 3), (2, 4)], [1, 2, 2, 2, 2, 2]),
    ([(0, 0), (2, 0)], [1, 2]),  # a row gap separates
    ([(3, 0), (3, 2)], [1, 2]),  # a column gap separates
    ([(0, 3), (1, 0), (1, 1), (2, 2)], [1, 2, 2, 2]),
])
def test_small_cases(pixels, labels):
    item = Label(split="none").process(Item(0, "e", sparse=sparse_of(pixels)))
    assert item.sparse.label.tolist() == labels
    assert item.sparse.npeaks == (max(labels) if labels else 0)


def test_u_shape_merges_late():
    """Two arms that only meet at the bottom: the first arm's label wins."""
    pixels = [(r, 0) for r in range(5)] + [(r, 4) for r in range(5)] + [(5, c) for c in range(5)]
    item = Label(split="none").process(Item(0, "e", sparse=sparse_of(pixels)))
    assert item.sparse.npeaks == 1 and set(item.sparse.label.tolist()) == {1}


def test_needs_sparse_and_valid_min_pixels():
    with pytest.raises(ValueError, match="threshold"):
        Label().process(Item(0, "e", frame=np.zeros((4, 4))))
    with pytest.raises(ValueError, match="min_pixels"):
        Label(min_pixels=0)
