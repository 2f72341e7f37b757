"""Properties node: the 2D peak table against direct numpy sums."""

import numpy as np
import pytest

from nodes import Label, Properties, Threshold
from stream.core.item import PEAK_COLUMNS, Item, SparseFrame

SHAPE = (64, 80)


def labelled_item(seed):
    rng = np.random.default_rng(seed)
    frame = rng.normal(0, 1, SHAPE).astype(np.float32)
    for _ in range(15):
        r, c = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        h, w = rng.integers(1, 7, 2)
        frame[r:r + h, c:c + w] += rng.uniform(5, 50, (min(h, 64 - r), min(w, 80 - c)))
    item = Threshold(cut=2.0).process(Item(0, "e", frame=frame))
    return Label().process(item)


@pytest.mark.parametrize("seed", range(4))
def test_moments_match_numpy(seed):
    item = Properties().process(labelled_item(seed))
    sp, peaks = item.sparse, item.peaks
    assert list(peaks) == list(PEAK_COLUMNS)
    for name, dtype in PEAK_COLUMNS.items():
        assert peaks[name].dtype == np.dtype(dtype) and peaks[name].shape == (sp.npeaks,)
    k = sp.label - 1
    s, f, signal = sp.row.astype(float), sp.col.astype(float), sp.intensity.astype(float)

    def total(w):
        return np.bincount(k, weights=w, minlength=sp.npeaks)

    np.testing.assert_array_equal(peaks["npx"], np.bincount(k, minlength=sp.npeaks))
    np.testing.assert_array_equal(peaks["s_1"], np.bincount(k, minlength=sp.npeaks))
    expected = {"s_I": total(signal), "s_sI": total(s * signal), "s_fI": total(f * signal),
                "s_ssI": total(s * s * signal), "s_ffI": total(f * f * signal),
                "s_sfI": total(s * f * signal)}
    expected["sum_intensity"] = expected["s_I"]
    expected["s_raw"] = expected["s_sI"] / expected["s_I"]
    expected["f_raw"] = expected["s_fI"] / expected["s_I"]
    for name, value in expected.items():
        np.testing.assert_allclose(peaks[name], value, rtol=1e-12, err_msg=name)
    for name, coord, fn in (("bb_s0", sp.row, np.minimum), ("bb_s1", sp.row, np.maximum),
                            ("bb_f0", sp.col, np.minimum), ("bb_f1", sp.col, np.maximum)):
        ref = np.full(sp.npeaks, 65535 if fn is np.minimum else -1)
        fn.at(ref, k, coord.astype(int))
        np.testing.assert_array_equal(peaks[name], ref, err_msg=name)
    top = np.full(sp.npeaks, -np.inf, np.float32)
    np.maximum.at(top, k, sp.intensity)
    np.testing.assert_array_equal(peaks["max_intensity"], top)


def test_empty_frame_gives_empty_table():
    item = Threshold(cut=10.0).process(Item(0, "e", frame=np.zeros(SHAPE, np.uint16)))
    peaks = Properties().process(Label().process(item)).peaks
    assert list(peaks) == list(PEAK_COLUMNS)
    assert all(v.size == 0 and v.dtype == np.dtype(PEAK_COLUMNS[n]) for n, v in peaks.items())


def test_needs_labels():
    item = Threshold(cut=0.5).process(Item(0, "e", frame=np.ones(SHAPE, np.uint16)))
    with pytest.raises(ValueError, match="label"):
        Properties().process(item)


@pytest.mark.parametrize("min_pixels", [1, 3])
def test_label_runs_give_the_pixels_table_bit_for_bit(min_pixels):
    """With the label node's runs (split none) the table is the one the pixels give."""
    for seed in range(4):
        px = labelled_item(seed).sparse  # the thresholded pixels, relabelled
        labelled = Label(split="none", min_pixels=min_pixels).process(
            Item(0, "e", sparse=SparseFrame(px.shape, px.row, px.col, px.intensity)))
        sp = labelled.sparse
        assert min_pixels == 1 or sp.nnz < px.nnz
        assert sp.runs.shape[0] > 0
        with_runs = Properties().process(labelled).peaks
        bare = SparseFrame(sp.shape, sp.row, sp.col, sp.intensity, sp.label, sp.npeaks)
        assert bare.runs is None
        plain = Properties().process(Item(0, "e", sparse=bare)).peaks
        for name in PEAK_COLUMNS:
            assert with_runs[name].dtype == plain[name].dtype
            assert with_runs[name].tobytes() == plain[name].tobytes(), name
