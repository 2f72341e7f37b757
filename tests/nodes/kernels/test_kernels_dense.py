"""The dense kernels against plain numpy, on random frames of every supported dtype.

Shapes cover full chunks, sub-chunks and the pixel-by-pixel end of a row; the
configurations cover every map / scalar combination, the pre-cut on and off,
delta 0 (the vectorised path) and raised (the float64 path, with and without
the histogram), buffers with room, exactly full and too small, values lying
exactly on the cut, and a lone candidate at every column position.
"""

import itertools

import numpy as np
import pytest

from nodes.kernels.dense import CHUNK, STREAK, SUB, correct_threshold, threshold_frame
from nodes.threshold import NO_HIST, NO_MAP
from stream.core.messages import DTYPES

NO_MASK = np.zeros((0, 0), np.bool_)
SHAPES = [(7, 2 * CHUNK + 37), (5, CHUNK), (4, SUB + 3), (3, 1)]
GUARD = 2 * SUB  # sentinel entries after the buffers: nothing may be written there

# (delta, histogram, buffer size): delta 0 without a histogram is the vectorised path; a
# buffer with room for the whole frame, for exactly the pixels kept, or for half of them
PASSES = [("zero", False, "frame"), ("zero", False, "exact"), ("zero", False, "half"),
          ("raised", False, "frame"), ("raised", False, "half"), ("raised", True, "frame"),
          ("zero", True, "exact")]


def random_frame(rng, dtype, shape):
    """Poisson background, bright blobs and isolated hot pixels, in `dtype`; and its unit."""
    dtype = np.dtype(dtype)
    big = dtype.itemsize >= 4 and dtype.kind in "iu"
    unit = 3e5 if big else 1.0  # 32-bit integers: values float32 cannot hold exactly
    frame = rng.poisson(10, shape).astype(np.float64)
    for _ in range(max(1, frame.size // 150)):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        frame[max(r - 1, 0):r + 2, max(c - 3, 0):c + 4] += rng.uniform(5, 120)
    frame *= unit
    if dtype.kind == "f":
        frame += rng.normal(0, 0.4, shape)
        flat = frame.ravel()
        flat[rng.integers(0, flat.size, 3)] = np.inf
        flat[rng.integers(0, flat.size, 2)] = -np.inf
        flat[rng.integers(0, flat.size, 2)] = np.nan
    elif dtype.kind == "i":
        frame -= 12 * unit  # some negative values
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        frame = np.clip(np.rint(frame), info.min, info.max)
    return frame.astype(dtype), unit


def tight_precut(raw, keep):
    """The largest value of raw's dtype below every kept pixel's raw value (a valid pre-cut)."""
    if not keep.any():
        return raw.dtype.type(np.nanmax(raw) if raw.dtype.kind == "f" else raw.max())
    low = raw[keep].min()
    if raw.dtype.kind == "f":
        return np.nextafter(low, raw.dtype.type(-np.inf))
    return raw.dtype.type(low - 1) if low > np.iinfo(raw.dtype).min else raw.dtype.type(low)


def reference(values, excess, keep, nbins, hlo, hinv, hhi):
    """(n, emax, rows, cols, vals, hist) of the kept pixels, from numpy."""
    rows, cols = np.nonzero(keep)
    kept = excess[keep]
    finite = kept[np.isfinite(kept)]
    emax = float(finite.max()) if finite.size else -np.inf
    hist = np.zeros(nbins, np.int64)
    if nbins:
        with np.errstate(invalid="ignore", over="ignore"):
            j = np.clip(np.trunc((kept - hlo) * hinv), 0, nbins - 1)
        np.add.at(hist, np.where(kept >= hhi, nbins - 1, j).astype(np.int64), 1)
    return (int(keep.sum()), emax, rows.astype(np.uint16), cols.astype(np.uint16),
            values[keep].astype(np.float32), hist)


def buffer_size(kind, keep):
    return {"frame": keep.size, "exact": int(keep.sum()), "half": int(keep.sum()) // 2}[kind] or 1


def run_and_check(kernel, args, expected, size, nbins, hlo, hinv, hhi):
    """Call kernel(*args, rows, cols, vals, hist, hlo, hinv, hhi) and compare with numpy."""
    rows, cols = (np.full(size + GUARD, 7, np.uint16) for _ in range(2))
    vals = np.full(size + GUARD, np.nan, np.float32)
    hist = np.zeros(nbins, np.int64) if nbins else NO_HIST
    n, emax = kernel(*args, rows[:size], cols[:size], vals[:size], hist, hlo, hinv, hhi)
    n_ref, emax_ref, r_ref, c_ref, v_ref, hist_ref = expected
    assert n == n_ref
    assert emax == emax_ref
    m = min(n, size)
    assert rows[:m].tobytes() == r_ref[:m].tobytes()
    assert cols[:m].tobytes() == c_ref[:m].tobytes()
    assert vals[:m].tobytes() == v_ref[:m].tobytes()
    assert (rows[size:] == 7).all() and (cols[size:] == 7).all() and np.isnan(vals[size:]).all()
    if nbins:
        np.testing.assert_array_equal(hist, hist_ref)


def check_threshold(raw, cut, cut_map, delta=0.0, use_hist=False, room="frame",
                    precuts=("off", "tight")):
    t = cut_map.astype(np.float64) if cut_map.size else cut
    with np.errstate(invalid="ignore"):
        excess = raw.astype(np.float64) - t
        keep = excess > delta
    nbins = 16 if use_hist else 0
    hlo, hhi = delta, delta + 80 * max(abs(cut), 1.0)
    hinv = nbins / (hhi - hlo) if nbins else 0.0
    expected = reference(raw, excess, keep, nbins, hlo, hinv, hhi)
    for precut in precuts:  # valid pre-cuts only: threshold_frame relies on them
        use = precut != "off"
        typed = tight_precut(raw, keep) if use else raw.dtype.type(0)
        run_and_check(threshold_frame, (raw, typed, use, cut, cut_map, delta), expected,
                      buffer_size(room, keep), nbins, hlo, hinv, hhi)


def corrected(raw, mask, dark0, dark, invflat0, invflat, scale):
    with np.errstate(invalid="ignore", over="ignore"):
        v = raw.astype(np.float32) - (dark if dark.size else dark0)
        return (v * (invflat if invflat.size else invflat0)) * scale


def check_correct(raw, mask, dark0, dark, invflat0, invflat, scale, cut, cut_map, delta=0.0,
                  use_hist=False, room="frame", precuts=("off", "tight")):
    v = corrected(raw, mask, dark0, dark, invflat0, invflat, scale)
    with np.errstate(invalid="ignore"):
        excess = v.astype(np.float64) - (cut_map.astype(np.float64) if cut_map.size else cut)
        keep = (excess > delta) & (~mask if mask.size else True)
    nbins = 16 if use_hist else 0
    hlo, hhi = delta, delta + 80 * max(abs(cut), 1.0)
    hinv = nbins / (hhi - hlo) if nbins else 0.0
    for precut in precuts:
        use = precut != "off"
        if precut in ("off", "tight"):
            typed = tight_precut(raw, keep) if use else raw.dtype.type(0)
        else:
            typed = raw.dtype.type(precut)
        # a pixel whose raw value is not above the pre-cut is never kept, valid bound or not
        kept = keep & (raw > typed) if use else keep
        expected = reference(v, excess, kept, nbins, hlo, hinv, hhi)
        run_and_check(correct_threshold, (raw, typed, use, mask, dark0, dark, invflat0, invflat,
                                          scale, cut, cut_map, delta),
                      expected, buffer_size(room, kept), nbins, hlo, hinv, hhi)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_threshold_frame_equals_numpy(dtype, shape):
    rng = np.random.default_rng([DTYPES.index(dtype), *shape])
    raw, unit = random_frame(rng, dtype, shape)
    cut = 25.3 * unit
    for use_map in (False, True):
        cut_map = (rng.uniform(0.7, 1.3, shape) * cut).astype(np.float32) if use_map else NO_MAP
        for delta_kind, use_hist, room in PASSES:
            delta = 0.0 if delta_kind == "zero" else 17.5 * unit
            check_threshold(raw, cut, cut_map, delta, use_hist, room)


CONFIGS = list(itertools.product([False, True], ["none", "scalar", "map"],
                                 ["none", "scalar", "map"], [False, True]))


def correct_args(rng, shape, unit, use_mask, dark_kind, flat_kind):
    mask = rng.random(shape) < 0.1 if use_mask else NO_MASK
    dark0 = np.float32(2.5 * unit if dark_kind == "scalar" else 0.0)
    dark = (rng.normal(3, 1, shape) * unit).astype(np.float32) if dark_kind == "map" else NO_MAP
    invflat0 = np.float32(0.91 if flat_kind == "scalar" else 1.0)
    invflat = rng.uniform(0.7, 1.4, shape).astype(np.float32) if flat_kind == "map" else NO_MAP
    return mask, dark0, dark, invflat0, invflat, np.float32(1.0 / 1.07)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_correct_threshold_equals_numpy(dtype, shape):
    rng = np.random.default_rng([10 + DTYPES.index(dtype), *shape])
    raw, unit = random_frame(rng, dtype, shape)
    cut = 25.3 * unit
    for use_mask, dark_kind, flat_kind, use_map in CONFIGS:
        args = correct_args(rng, shape, unit, use_mask, dark_kind, flat_kind)
        cut_map = (rng.uniform(0.7, 1.3, shape) * cut).astype(np.float32) if use_map else NO_MAP
        for delta_kind, use_hist, room in PASSES:
            delta = 0.0 if delta_kind == "zero" else 17.5 * unit
            check_correct(raw, *args, cut, cut_map, delta, use_hist, room)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lone_candidate_at_every_column(dtype):
    """One bright pixel per row, on the diagonal: each column position is the only candidate."""
    ncols = 2 * CHUNK + SUB + 5
    raw = np.full((ncols, ncols), 3, dtype)
    raw[np.arange(ncols), np.arange(ncols)] = 90
    raw[np.arange(ncols - 1), np.arange(1, ncols)] = 50  # and a fainter right neighbour
    mask = np.zeros(raw.shape, bool)
    mask[::3, :] = True
    check_threshold(raw, 40.0, NO_MAP)
    for m in (NO_MASK, mask):
        check_correct(raw, m, np.float32(1), NO_MAP, np.float32(1.1), NO_MAP, np.float32(1),
                      45.0, NO_MAP, precuts=("off", "tight", 60))  # 60: drops the 50s


def values_around(t32):
    """float32 values just below, on and just above t32, and a zero."""
    below = np.nextafter(t32, np.float32(-np.inf))
    above = np.nextafter(t32, np.float32(np.inf))
    return np.array([below, t32, above, 0.0], np.float32)


@pytest.mark.parametrize("cut", [20.3, float(np.float32(20.3)), 0.1, -3.05, 0.0, 1e39, -1e39])
def test_values_on_the_cut(cut):
    """v > cut in float64 for a float32 v, at every column position (vectorised and not)."""
    near = values_around(np.float32(cut)) if abs(cut) < 3e38 else np.float32([3e38, 0, 1, -1])
    ncols = 2 * CHUNK + SUB + 7
    raw = np.resize(np.concatenate([near, [np.inf, -np.inf]]).astype(np.float32), (5, ncols))
    raw[1:] = np.roll(raw[0], 1), np.roll(raw[0], 2), np.roll(raw[0], 3), np.roll(raw[0], 5)
    for precuts in (("off",), ("off", "tight")):
        check_threshold(raw, cut, NO_MAP, precuts=precuts)
        check_correct(raw, NO_MASK, np.float32(0), NO_MAP, np.float32(1), NO_MAP, np.float32(1),
                      cut, NO_MAP, precuts=precuts)
    cut_map = np.resize(np.float32(cut) if abs(cut) < 3e38 else np.float32(1), raw.shape)
    check_threshold(raw, 0.0, cut_map.astype(np.float32))
    check_correct(raw, NO_MASK, np.float32(0), NO_MAP, np.float32(1), NO_MAP, np.float32(1),
                  0.0, cut_map.astype(np.float32))


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int32"])
def test_scattered_noise_many_candidates(dtype):
    """Low cut on a Poisson background: nearly every chunk holds a candidate."""
    rng = np.random.default_rng(99)
    raw = rng.poisson(10, (40, 3 * CHUNK + 11)).astype(dtype)
    for cut in (12.5, 15.0, 9.0):
        check_threshold(raw, cut, NO_MAP)
        check_correct(raw, rng.random(raw.shape) < 0.05, np.float32(0.5),
                      rng.normal(0, 1, raw.shape).astype(np.float32), np.float32(1),
                      rng.uniform(0.9, 1.1, raw.shape).astype(np.float32), np.float32(0.97),
                      cut, NO_MAP, room="exact")


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int32"])
@pytest.mark.parametrize("fused", [False, True])
def test_every_pixel_above_the_cut(dtype, fused):
    """A frame with every pixel above the cut: the cut is raised, the frame flagged, and the
    next frames are processed as usual (the threshold node and the fused dense pass)."""
    from nodes import Correct, Normalise, Threshold, fuse
    from stream.core.item import Item

    rng = np.random.default_rng(5)
    shape = (48, 2 * CHUNK + 37)
    hot = (rng.permutation(np.prod(shape)).reshape(shape) % 5000 + 100).astype(dtype)
    cool = rng.poisson(10, shape).astype(dtype)
    cool[10, 50:60] = 80
    maxn = 300
    nodes = [Threshold(cut=50.0, max_pixels=maxn)]
    if fused:
        nodes = [Correct(dark=1.0, flat=rng.uniform(0.9, 1.1, shape)), Normalise(), *nodes]
    chain = fuse(nodes)
    assert [n.kind for n in chain] == (["dense"] if fused else ["threshold"])
    node = chain[0]
    counters = {"monitor": 1.2}

    def reference(frame):
        item = Item(0, "d", frame=frame, counters=counters)
        for n in nodes:  # unfused: correct, normalise (numpy), then the threshold node
            item = n.process(item)
        return item

    for frame in (hot, cool, hot, cool):
        item = node.process(Item(0, "d", frame=frame, counters=counters))
        sp = item.sparse
        if frame is hot:
            assert len(item.flags) == 1 and "cut raised to" in item.flags[0]
            assert f"{frame.size} pixels above cut 50 > max_pixels {maxn}" in item.flags[0]
            assert 0 < sp.nnz <= maxn
            kept = np.zeros(shape, bool)
            kept[sp.row, sp.col] = True
            assert sp.intensity.min() > 50
            if not fused:  # what is kept is a higher cut: every kept value beats every dropped
                assert frame[kept].min() > frame[~kept].max()
        else:
            assert not item.flags and sp.nnz == 10
        if fused:
            ref = reference(frame)
            assert ref.flags == item.flags
            for name in ("row", "col", "intensity"):
                assert getattr(ref.sparse, name).tobytes() == getattr(sp, name).tobytes()
        assert node.cut == 50.0


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int32"])
def test_sparse_and_crowded_rows(dtype):
    """Bands of rows where most chunks hold a candidate (noise near the cut) between bands of
    spots: the fused pass changes how it looks at rows, back and forth, with the same result."""
    rng = np.random.default_rng(7)
    shape = (6 * STREAK, 8 * CHUNK + 11)
    raw = rng.poisson(10, shape).astype(np.float64)
    raw[: 2 * STREAK] -= 10  # quiet
    raw[4 * STREAK + 3:] -= 10
    for _ in range(10):  # and spots everywhere
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        raw[max(r - 2, 0):r + 3, max(c - 3, 0):c + 4] += rng.uniform(20, 200)
    raw = np.clip(raw, 0, None).astype(dtype)
    mask = rng.random(shape) < 0.05
    dark = rng.normal(0.5, 0.2, shape).astype(np.float32)
    invflat = rng.uniform(0.9, 1.1, shape).astype(np.float32)
    for cut in (13.5, 16.0, 30.0):
        for cut_map in (NO_MAP, rng.uniform(0.9, 1.1, shape).astype(np.float32) * cut):
            for room in ("frame", "exact", "half"):
                check_correct(raw, mask, np.float32(0), dark, np.float32(1), invflat,
                              np.float32(0.98), cut, cut_map, room=room)
                check_correct(raw, NO_MASK, np.float32(0.5), NO_MAP, np.float32(1.02), NO_MAP,
                              np.float32(1), cut, cut_map, room=room)


def test_any_layout():
    """Strided, Fortran-order and read-only arrays: the same pixels as contiguous ones."""
    rng = np.random.default_rng(3)
    shape = (9, 2 * CHUNK + 21)
    wide, _ = random_frame(rng, "uint16", (shape[0], 2 * shape[1]))
    raw = wide[:, ::2]
    raw.flags.writeable = False
    dark = np.asfortranarray(rng.normal(1, 0.3, shape).astype(np.float32))
    invflat = rng.uniform(0.9, 1.1, (shape[0], 2 * shape[1])).astype(np.float32)[:, 1::2]
    mask = np.asfortranarray(rng.random(shape) < 0.1)
    cut_map = np.asfortranarray(rng.uniform(20, 30, shape).astype(np.float32))
    for cm in (NO_MAP, cut_map):
        check_threshold(raw, 25.3, cm)
        check_correct(raw, mask, np.float32(0), dark, np.float32(1), invflat, np.float32(0.9),
                      25.3, cm)
