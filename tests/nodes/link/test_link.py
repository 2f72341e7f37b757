"""The incremental linker against a naive pure-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nodes import Label, Properties
from nodes.kernels.overlap import overlap_counts, overlap_runs
from nodes.kernels.runs import frame_runs
from nodes.link.linker import Linker
from stream.core.item import MOMENT_COLUMNS, PEAK_COLUMNS, Item, SparseFrame
from stream.core.scan import Sweep
from tests.support.link import (
    SHAPE,
    Grid,
    Wrap,
    cat,
    labelled,
    make_scan,
    partition,
    random_stack,
    run,
)
from tests.support.unionfind import NaiveForest


def reference(frames, trajectory, missing=()):
    """Naive linking: pixel-key sets, all pairs of blobs, dict union-find."""
    blobs, offsets, total = [], [], 0
    for p, (sparse, _) in enumerate(frames):
        keys = sparse.row.astype(int) * SHAPE[1] + sparse.col.astype(int)
        n = 0 if p in missing else sparse.npeaks
        blobs.append([set(keys[sparse.label == k + 1].tolist()) for k in range(n)])
        offsets.append(total)
        total += n
    edges = {}
    for i in range(len(frames)):
        for j in trajectory.neighbours_before(i):
            for a, sa in enumerate(blobs[j]):
                for b, sb in enumerate(blobs[i]):
                    if sa & sb:
                        edges[(offsets[j] + a, offsets[i] + b)] = len(sa & sb)
    forest = NaiveForest(range(total))
    for a, b in edges:
        forest.union(a, b)
    return edges, forest.groups(), offsets


# -------------------------------------------------------------------- tests


def test_overlap_kernel_counts_shared_pixels():
    key_a = np.array([1, 2, 3, 7, 9, 12], np.int64)
    lab_a = np.array([1, 1, 2, 0, 2, 1], np.int32)
    key_b = np.array([2, 3, 4, 7, 9, 12], np.int64)
    lab_b = np.array([2, 1, 1, 1, 1, 3], np.int32)
    a, b, n = overlap_counts(key_a, lab_a, 2, key_b, lab_b)
    got = list(zip(a.tolist(), b.tolist(), n.tolist(), strict=True))
    assert got == [(1, 2, 1), (1, 3, 1), (2, 1, 2)]


def test_overlap_kernel_random_labels():
    rng = np.random.default_rng(5)
    for nla, nlb in ((1, 40), (40, 1), (6, 9)):
        key_a = np.sort(rng.choice(400, 250, replace=False)).astype(np.int64)
        key_b = np.sort(rng.choice(400, 250, replace=False)).astype(np.int64)
        lab_a = rng.integers(0, nla + 1, 250).astype(np.int32)
        lab_b = rng.integers(0, nlb + 1, 250).astype(np.int32)
        a, b, n = overlap_counts(key_a, lab_a, nla, key_b, lab_b)
        in_b = dict(zip(key_b.tolist(), lab_b.tolist(), strict=True))
        want: dict[tuple[int, int], int] = {}
        for k, la in zip(key_a.tolist(), lab_a.tolist(), strict=True):
            lb = in_b.get(k, 0)
            if la > 0 and lb > 0:
                want[(la, lb)] = want.get((la, lb), 0) + 1
        got = list(zip(a.tolist(), b.tolist(), n.tolist(), strict=True))
        assert got == [(*pair, want[pair]) for pair in sorted(want)]


@pytest.mark.parametrize("trajectory, npoints, missing", [
    (Sweep(None), 14, ()),
    (Sweep(14), 14, (5,)),
    (Grid(3, 5), 15, (7,)),
    (Wrap(12), 12, ()),
])
def test_matches_naive_reference(trajectory, npoints, missing):
    frames = random_stack(npoints, seed=npoints + len(missing))
    results = run(Linker(), make_scan(trajectory, npoints), frames, set(missing))
    edges, cliques, offsets = reference(frames, trajectory, set(missing))

    ov = cat(results, "overlaps")
    got = dict(zip(zip(ov["peak_a"].tolist(), ov["peak_b"].tolist(), strict=True),
                   ov["npixels"].tolist(), strict=True))
    assert got == edges and len(got) == ov["peak_a"].shape[0]
    members = cat(results, "members")
    assert partition(members) == cliques
    assert [r.peak_offset for r in results[:-1]] == offsets

    # moments: each clique's sums are its members' sums
    table = {k: np.concatenate([frames[p][1][k] for p in range(npoints) if p not in missing])
             for k in PEAK_COLUMNS}
    point = np.concatenate([np.full(frames[p][0].npeaks, p) for p in range(npoints)
                            if p not in missing])
    cl = cat(results, "cliques")
    order = np.argsort(members["clique_id"], kind="stable")
    ids = members["clique_id"][order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    assert np.array_equal(ids[starts], cl["clique_id"])

    def per_clique(x):
        return np.add.reduceat(x[members["peak_id"][order]], starts)

    for name in (*MOMENT_COLUMNS, "sum_intensity"):
        assert np.allclose(cl[name], per_clique(table[name]), rtol=1e-12), name
    assert np.array_equal(cl["npx"], per_clique(table["npx"].astype(np.int64)))
    assert np.array_equal(cl["n2d"], np.diff(np.r_[starts, ids.shape[0]]))
    assert np.allclose(cl["s_raw"], cl["s_sI"] / cl["s_I"])
    assert np.allclose(cl["f_raw"], cl["s_fI"] / cl["s_I"])
    w = table["s_I"]
    assert np.allclose(cl["point"], per_clique(w * point) / per_clique(w))
    assert np.allclose(cl["omega"], 0.25 * cl["point"]) and np.allclose(cl["dty"], 1.0)
    assert np.array_equal(cl["first_point"], np.minimum.reduceat(point[members["peak_id"][order]],
                                                                 starts))
    assert np.array_equal(cl["last_point"], np.maximum.reduceat(point[members["peak_id"][order]],
                                                                starts))
    # score = shared / smaller blob
    npx = table["npx"].astype(float)
    assert np.allclose(ov["score"], ov["npixels"] / np.minimum(npx[ov["peak_a"]],
                                                               npx[ov["peak_b"]]))


def block_frames(on: list[bool], shape=SHAPE):
    """The same 3x3 blob on every point where `on` is True, nothing elsewhere."""
    frames = []
    for p, lit in enumerate(on):
        mask = np.zeros(shape, bool)
        if lit:
            mask[5:8, 5:8] = True
        frames.append(labelled(mask, np.full(shape, 1.0 + p)))
    return frames


def test_missing_point_breaks_links():
    frames = block_frames([True] * 8)
    results = run(Linker(), make_scan(), frames, missing={3})
    members = cat(results, "members")
    assert partition(members) == {frozenset({0, 1, 2}), frozenset({3, 4, 5, 6})}
    ov = cat(results, "overlaps")
    assert (ov["peak_a"].tolist(), ov["peak_b"].tolist()) == ([0, 1, 3, 4, 5], [1, 2, 4, 5, 6])
    assert results[3].peak_offset == 3 and results[4].peak_offset == 3
    # the first clique can no longer grow once point 3 is passed
    assert results[3].cliques["n2d"].tolist() == [3]


@pytest.mark.parametrize("npoints", [None, 7])
def test_clique_emitted_when_it_can_no_longer_grow(npoints):
    frames = block_frames([True, True, True, False, False, True, True])
    linker = Linker()
    results = run(linker, make_scan(npoints=npoints), frames)
    closed = [r.cliques["clique_id"].shape[0] for r in results]
    assert closed[:6] == [0, 0, 0, 1, 0, 0]
    first = results[3].cliques
    assert (first["first_point"][0], first["last_point"][0], first["n2d"][0]) == (0, 2, 3)
    assert results[3].members["peak_id"].tolist() == [0, 1, 2]
    late = results[-1] if npoints is None else results[6]
    assert late.members["peak_id"].tolist() == [3, 4]
    assert late.cliques["clique_id"].tolist() == [1]
    assert closed[6] + closed[7] == 1
    assert results[-1].point_id == -1 and linker.open_peaks() == 0
    assert linker.frontier_points() == []


def test_deterministic_ids_and_every_peak_once():
    frames = random_stack(20, seed=3)
    a = run(Linker(), make_scan(Grid(4, 5), 20), frames)
    b = run(Linker(), make_scan(Grid(4, 5), 20), frames)
    for ra, rb in zip(a, b, strict=True):
        for table in ("overlaps", "cliques", "members"):
            for k, v in getattr(ra, table).items():
                assert np.array_equal(v, getattr(rb, table)[k], equal_nan=True)
    cl, members = cat(a, "cliques"), cat(a, "members")
    assert np.array_equal(cl["clique_id"], np.arange(cl["clique_id"].shape[0]))
    total = sum(s.npeaks for s, _ in frames)
    assert np.array_equal(np.sort(members["peak_id"]), np.arange(total))
    for r in a:
        m = r.members
        assert np.all(np.diff(m["peak_id"]) > 0)
        smallest = [m["peak_id"][m["clique_id"] == c].min() for c in r.cliques["clique_id"]]
        assert smallest == sorted(smallest)
    assert any(r.cliques["clique_id"].shape[0] > 1 for r in a)


def test_memory_bounded_by_frontier():
    npoints = 3000
    frames = random_stack(npoints, seed=11, shape=(16, 16), keep=0.08, sigma=(1.0, 1.0, 1.0))
    linker = Linker()
    linker.setup(make_scan(npoints=npoints))
    most_open = most_frontier = 0
    results = []
    for p, (sparse, peaks) in enumerate(frames):
        results.append(linker.add_point(p, sparse, peaks, {"omega": float(p)}))
        most_open = max(most_open, linker.open_peaks())
        most_frontier = max(most_frontier, len(linker.frontier_points()))
    total = sum(s.npeaks for s, _ in frames)
    assert total > 5000
    assert most_frontier == 1
    assert most_open < 100
    assert linker.forest.capacity <= 2048  # slots are reused, not grown with the scan
    results.append(linker.finish())
    assert linker.open_peaks() == 0
    # still right after many compactions of the slot arrays: members and moments
    members, cliques = cat(results, "members"), cat(results, "cliques")
    assert partition(members) == reference(frames, Sweep(npoints))[1]
    npx = np.concatenate([p["npx"] for _, p in frames]).astype(np.int64)
    s_i = np.concatenate([p["s_I"] for _, p in frames])
    order = np.argsort(cliques["clique_id"])
    npx_sums = np.bincount(members["clique_id"], weights=npx[members["peak_id"]])
    assert np.array_equal(npx_sums.astype(np.int64), cliques["npx"][order])
    np.testing.assert_allclose(np.bincount(members["clique_id"], weights=s_i[members["peak_id"]]),
                               cliques["s_I"][order], rtol=1e-12)


def test_bad_calls_raise():
    (sparse, peaks), = block_frames([True])
    linker = Linker()
    with pytest.raises(ValueError, match="setup"):
        linker.add_point(0, sparse, peaks, {})
    linker.setup(make_scan())
    with pytest.raises(ValueError, match="expected point 0"):
        linker.add_point(1, sparse, peaks, {})
    linker.add_point(0, sparse, peaks, {})
    with pytest.raises(ValueError, match="expected point 1"):
        linker.add_point(0, sparse, peaks, {})
    with pytest.raises(ValueError, match="peak rows"):
        linker.add_point(1, sparse, {k: v[:0] for k, v in peaks.items()}, {})
    backwards = SparseFrame(SHAPE, sparse.row[::-1].copy(), sparse.col[::-1].copy(),
                            sparse.intensity, sparse.label, sparse.npeaks)
    with pytest.raises(ValueError, match="raster-sorted"):
        linker.add_point(1, backwards, peaks, {})
    linker.add_point(1, sparse, peaks, {})
    linker.finish()
    with pytest.raises(ValueError, match="after finish"):
        linker.add_point(2, sparse, peaks, {})
    with pytest.raises(ValueError, match="any_pixel"):
        Linker(criterion="nearest")


def test_run_kernels_match_the_pixel_kernel():
    """frame_runs + overlap_runs (runs of labelled pixels) give overlap_counts' pairs
    and counts, and labelled_keys' pixels per peak, on random labels with unlabelled
    pixels, several frames in one call and empty frames; saddles from the pixels."""
    rng = np.random.default_rng(8)
    ncols = 23
    frames = []
    for nlab in (5, 0, 1, 7):  # frame 1 has no pixels
        n = 0 if nlab == 0 else 300
        keys = np.sort(rng.choice(40 * ncols, n, replace=False)).astype(np.int64)
        lab = rng.integers(-1, nlab + 1, n).astype(np.int32)  # runs of one label
        lab = np.repeat(lab[::4], 4)[:n]
        frames.append((keys, lab, rng.uniform(1, 9, n).astype(np.float32), nlab))
    row = np.concatenate([k // ncols for k, *_ in frames]).astype(np.uint16)
    col = np.concatenate([k % ncols for k, *_ in frames]).astype(np.uint16)
    ptr = np.cumsum([0, *(k.shape[0] for k, *_ in frames)]).astype(np.int64)
    npeaks = np.array([f[3] for f in frames], np.int64)
    inten = np.concatenate([f[2] for f in frames])
    runs, run_ptr, npx, status, kept, int_ptr, peak_key, peak_h = frame_runs(
        row, col, np.concatenate([f[1] for f in frames]), inten, ptr, npeaks, ncols)
    assert not status.any()
    peak0 = np.cumsum([0, *npeaks])
    for f, (_, lab, val, nlab) in enumerate(frames):
        mine = npx[peak0[f]:peak0[f + 1]]
        assert mine.tolist() == [(lab == k + 1).sum() for k in range(nlab)]
        good = lab > 0
        assert kept[int_ptr[f]:int_ptr[f + 1]].tolist() == val[good].tolist()
        r = runs[run_ptr[f]:run_ptr[f + 1]]
        assert int((r[:, 2] - r[:, 1] + 1).sum()) == int(good.sum())
    a, b = 3, 0  # frames 3 and 0, either way round
    for x, y in ((a, b), (b, a)):
        kx, lx, vx, nx = frames[x]
        ky, ly, vy, _ = frames[y]
        want = overlap_counts(kx, lx, nx, ky, ly)
        rx = runs[run_ptr[x]:run_ptr[x + 1]]
        ry = runs[run_ptr[y]:run_ptr[y + 1]]
        ix, iy = kept[int_ptr[x]:int_ptr[x + 1]], kept[int_ptr[y]:int_ptr[y + 1]]
        px, py = slice(peak0[x], peak0[x + 1]), slice(peak0[y], peak0[y + 1])
        got = overlap_runs(rx, nx, ry, ix, iy, peak_key[px], peak_h[px], peak_key[py],
                           peak_h[py], ncols, True)
        for w, g in zip(want, got[:3], strict=True):
            assert w.tolist() == g.tolist()
        assert len(want[0]) > 3
        vals_x = dict(zip(kx[lx > 0].tolist(), vx[lx > 0].tolist(), strict=True))
        vals_y = dict(zip(ky[ly > 0].tolist(), vy[ly > 0].tolist(), strict=True))
        for la, lb, s in zip(*got[:2], got[3], strict=True):  # the highest shared min
            shared = set(kx[lx == la].tolist()) & set(ky[ly == lb].tolist())
            low = max(min(vals_x[k], vals_y[k]) for k in shared)
            ka, kb = peak_key[px][la - 1], peak_key[py][lb - 1]
            if abs(ka // ncols - kb // ncols) <= 1 and abs(ka % ncols - kb % ncols) <= 1:
                low = max(low, min(peak_h[px][la - 1], peak_h[py][lb - 1]))
            assert s == low
    bad = frame_runs(row[::-1].copy(), col[::-1].copy(), np.ones(row.shape[0], np.int32),
                     inten[:0], np.array([0, row.shape[0]]), np.array([1]), ncols)[3]
    assert bad.tolist() == [1]
    high = frame_runs(row[:5], col[:5], np.full(5, 3, np.int32), inten[:0], np.array([0, 5]),
                      np.array([2]), ncols)[3]
    assert high.tolist() == [2]


def test_label_runs_link_as_the_pixels_do():
    """The label node's runs (split none) are frame_runs' of its pixels, and a linker
    given them gives what it gives finding them itself, bit for bit."""
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.standard_normal((12, *SHAPE)), 1.2)
    frames, bare = [], []
    for p in range(12):
        row, col = np.nonzero(noise[p] > 0.1)
        px = SparseFrame(SHAPE, row.astype(np.uint16), col.astype(np.uint16),
                         rng.uniform(1, 9, row.size).astype(np.float32))
        item = Properties().process(Label(split="none", min_pixels=2).process(
            Item(p, "e", sparse=px)))
        sp = item.sparse
        want = frame_runs(sp.row, sp.col, sp.label, sp.intensity[:0], np.array([0, sp.nnz]),
                          np.array([sp.npeaks]), SHAPE[1])[0]
        assert sp.runs.tobytes() == want.tobytes() and sp.runs.dtype == want.dtype
        frames.append((sp, item.peaks))
        bare.append((SparseFrame(SHAPE, sp.row, sp.col, sp.intensity, sp.label, sp.npeaks),
                     item.peaks))
    for criterion in ("any_pixel", "fraction"):
        a = run(Linker(criterion=criterion), make_scan(Grid(3, 4), 12), frames)
        b = run(Linker(criterion=criterion), make_scan(Grid(3, 4), 12), bare)
        for table in ("overlaps", "cliques", "members"):
            ca, cb = cat(a, table), cat(b, table)
            assert all(ca[k].tobytes() == cb[k].tobytes() for k in ca), table
        assert cat(a, "overlaps")["npixels"].shape[0] > 10


def test_runs_are_dropped_with_the_pixels_and_malformed_ones_refused():
    """`take` (other pixels) leaves no runs; the linker refuses runs of another form
    with a ValueError, never reads them."""
    row, col = np.nonzero(ndimage.gaussian_filter(
        np.random.default_rng(4).standard_normal(SHAPE), 1.2) > 0.1)
    px = SparseFrame(SHAPE, row.astype(np.uint16), col.astype(np.uint16),
                     np.ones(row.size, np.float32))
    item = Properties().process(Label(split="none").process(Item(0, "e", sparse=px)))
    sp = item.sparse
    assert sp.runs is not None and sp.take(np.arange(sp.nnz)).runs is None
    for bad in (sp.runs.astype(np.int64), sp.runs[:, :4].copy(), sp.runs.ravel()):
        linker = Linker()
        linker.setup(make_scan(npoints=2))
        frame = SparseFrame(SHAPE, sp.row, sp.col, sp.intensity, sp.label, sp.npeaks, bad)
        with pytest.raises(ValueError, match="runs are"):
            linker.add_point(0, frame, item.peaks, {"omega": 0.0, "dty": 0.0})
