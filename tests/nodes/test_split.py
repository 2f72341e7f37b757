"""Splitting touching spots: the label node's local-maximum split (2D) and the linker's
split of cliques at their significant maxima (3D), against naive references; point by
point, in blocks and in block replay they give the same."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy import ndimage

from nodes import Label, Properties
from nodes.block import label_frames, properties_frames
from nodes.kernels.label import connected_pixels, significant, split_local_max
from nodes.link.linker import Linker, PeakBlock
from stream.cli.main import main
from stream.core.item import PEAK_COLUMNS, Item, SparseFrame
from stream.core.scan import Sweep
from tests.support.link import SHAPE, Grid, cat, make_scan, partition
from tests.support.paths import CONFIGS
from tests.support.sparse import flat_tables, write_sparse
from tests.support.unionfind import NaiveForest

# ------------------------------------------------------------------ 2D split


def gaussians(shape, spots, background=0.0):
    """A noise-free image of 2D Gaussians (s, f, sigma, amplitude)."""
    r, c = np.mgrid[:shape[0], :shape[1]].astype(float)
    img = np.full(shape, background)
    for s, f, sigma, amp in spots:
        img += amp * np.exp(-((r - s) ** 2 + (c - f) ** 2) / (2 * sigma ** 2))
    return img


def sparse_from(img, cut):
    row, col = np.nonzero(img > cut)
    return SparseFrame(img.shape, row.astype(np.uint16), col.astype(np.uint16),
                       img[row, col].astype(np.float32))


def split(sparse, prominence=0.05, sigma=1.0, min_pixels=1):
    labels = np.empty(sparse.nnz, np.int32)
    nc = connected_pixels(sparse.row, sparse.col, labels)
    n = split_local_max(sparse.row, sparse.col, sparse.intensity, labels, nc, prominence,
                        sigma, min_pixels)
    return labels, n


@pytest.mark.parametrize("second", [1000.0, 600.0])
def test_two_spots_that_touch_are_split_one_is_not(second):
    img = gaussians((30, 40), [(15, 14, 2.0, 1000.0), (15, 23, 2.0, second)])
    sp = sparse_from(img, 20.0)
    components = np.empty(sp.nnz, np.int32)
    assert connected_pixels(sp.row, sp.col, components) == 1  # one blob
    labels, n = split(sp)
    assert n == 2
    for k, f in ((1, 14), (2, 23)):  # each part around its spot
        w = sp.intensity * (labels == k)
        assert abs((w * sp.col).sum() / w.sum() - f) < 1.0
    if second == 1000.0:  # equal spots: each pixel goes to the nearer one
        assert np.array_equal(labels == 2, sp.col.astype(int) > 18.5)
    one, n1 = split(sparse_from(gaussians((30, 40), [(15, 18, 2.0, 1000.0)]), 20.0))
    assert n1 == 1 and (one == 1).all()


@pytest.mark.parametrize("seed", range(8))
def test_poisson_noise_does_not_cut_a_spot(seed):
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(1.0, 2.5)
    img = rng.poisson(gaussians((32, 32), [(16, 15.5, sigma, rng.uniform(200, 3000))],
                                background=10.0)).astype(float)
    labels, n = split(sparse_from(img, 40.0), min_pixels=2)
    components = np.empty(labels.shape[0], np.int32)
    sp = sparse_from(img, 40.0)
    assert n == connected_pixels(sp.row, sp.col, components)


def test_plateaus_and_huge_prominence_keep_components():
    rng = np.random.default_rng(3)
    keep = ndimage.gaussian_filter(rng.standard_normal((40, 50)), 1.5) > 0.3
    row, col = np.nonzero(keep)
    flat = SparseFrame(keep.shape, row.astype(np.uint16), col.astype(np.uint16),
                       np.full(row.shape[0], 7.0, np.float32))
    lumpy = SparseFrame(keep.shape, flat.row, flat.col,
                        rng.uniform(1, 100, row.shape[0]).astype(np.float32))
    components = np.empty(row.shape[0], np.int32)
    nc = connected_pixels(flat.row, flat.col, components)
    for sp, prominence in ((flat, 0.0), (lumpy, 1.0)):  # equal values / nothing significant
        labels, n = split(sp, prominence=prominence, sigma=0.0)
        assert n == nc and np.array_equal(labels, components)  # also numbered alike


def test_significance_rule():
    assert not significant(100.0, 100.0, 0.0, 0.0)  # no dip: one maximum
    assert significant(100.0, 99.0, 0.0, 0.0)
    assert not significant(1000.0, 950.0, 0.1, 0.0) and significant(1000.0, 899.0, 0.1, 0.0)
    assert 3.0 * math.sqrt(1850.0) < 150.0 and 3.0 * math.sqrt(1880.0) > 120.0
    assert significant(1000.0, 850.0, 0.0, 3.0)  # 3 sigmas of the difference of counts
    assert not significant(1000.0, 880.0, 0.0, 3.0)
    assert not significant(1000.0, math.inf, 0.0, 0.0)  # links without a saddle


def test_small_maxima_merge_and_labels_are_in_raster_order():
    img = gaussians((20, 30), [(10, 8, 1.5, 900.0), (10, 20, 1.5, 900.0)])
    img[10, 13] = 500.0  # a bright pixel off the first spot's edge, and its bridge:
    img[10, 12] = 40.0  # a maximum of 2 pixels, well above its saddle
    img[3, 24] = 5000.0  # a hot pixel touching nothing: a blob of its own
    sp = sparse_from(img, 30.0)
    labels, n = split(sp, min_pixels=1)
    assert n == 4
    first = np.unique(labels, return_index=True)[1]
    assert np.all(np.diff(first) > 0)  # numbered by first pixel
    assert labels[(sp.row == 3) & (sp.col == 24)][0] == 1
    labels, n = split(sp, min_pixels=3)  # too small to stand alone: joins its spot
    assert n == 3
    bright = labels[(sp.row == 10) & (sp.col == 13)][0]
    assert bright == labels[(sp.row == 10) & (sp.col == 8)][0]


def naive_split_2d(sparse, prominence, sigma, min_pixels):
    """The watershed of split_local_max with dictionaries: labels per pixel."""
    n = sparse.nnz
    where = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(sparse.row, sparse.col,
                                                                 strict=True))}
    value = sparse.intensity.astype(float)

    def higher(a, b):
        return value[a] > value[b] or (value[a] == value[b] and a > b)

    def neighbours(i):
        r, c = int(sparse.row[i]), int(sparse.col[i])
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                j = where.get((r + dr, c + dc))
                if j is not None and j != i:
                    yield j

    up = list(range(n))
    for i in range(n):
        for j in neighbours(i):
            if higher(j, up[i]):
                up[i] = j
    basin = []
    for i in range(n):
        x = i
        while up[x] != x:
            x = up[x]
        basin.append(x)
    size = {b: basin.count(b) for b in set(basin)}
    edges = []
    for i in range(n):
        for j in neighbours(i):
            if j > i and basin[i] != basin[j]:
                edges.append((-min(value[i], value[j]), basin[i], basin[j]))
    forest = NaiveForest(size)
    find = forest.find
    for neg, a, b in sorted(edges):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        hi, lo = (rb, ra) if higher(rb, ra) else (ra, rb)
        if not significant(value[lo], -neg, prominence, sigma) or size[lo] < min_pixels:
            forest.parent[lo] = hi
            size[hi] += size[lo]
    out, names = [], {}
    for i in range(n):
        out.append(names.setdefault(find(basin[i]), len(names) + 1))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_split_kernel_matches_naive_watershed(seed):
    rng = np.random.default_rng(seed)
    spots = [(rng.uniform(0, 40), rng.uniform(0, 60), rng.uniform(0.8, 3.0),
              rng.uniform(50, 3000)) for _ in range(25)]
    img = rng.poisson(gaussians((40, 60), spots, 10.0)).astype(float)
    img[rng.random(img.shape) < 0.02] = 45.0  # specks and plateaus of equal values
    sp = sparse_from(img, 40.0)
    for prominence, sigma, min_pixels in ((0.0, 0.0, 1), (0.05, 1.0, 1), (0.0, 0.5, 4)):
        labels, n = split(sp, prominence, sigma, min_pixels)
        want = naive_split_2d(sp, prominence, sigma, min_pixels)
        assert np.array_equal(labels, want) and n == want.max()


def label_item(sparse, **kw):
    return Label(**kw).process(Item(0, "e", sparse=sparse)).sparse


@pytest.mark.parametrize("min_pixels", [1, 3])
def test_label_node_split_paths_agree(min_pixels):
    """The node and its block form give what components -> remove_small -> split give."""
    rng = np.random.default_rng(min_pixels)
    frames = []
    for k in range(6):
        spots = [(rng.uniform(3, 37), rng.uniform(3, 47), rng.uniform(1, 2.5),
                  rng.uniform(100, 2000)) for _ in range(12)]
        img = rng.poisson(gaussians((40, 50), spots, 10.0)).astype(float)
        img[rng.integers(0, 40, 5), rng.integers(0, 50, 5)] = 300.0  # specks
        frames.append(sparse_from(img, 40.0 if k != 3 else 1e9))  # frame 3 empty
    out = [label_item(sp, min_pixels=min_pixels) for sp in frames]
    for sp, got in zip(frames, out, strict=True):
        ref = label_item(sp, min_pixels=min_pixels, split="none")
        assert np.array_equal(got.row, ref.row) and np.array_equal(got.col, ref.col)
        labels = ref.label.copy()
        n = split_local_max(ref.row, ref.col, ref.intensity, labels, ref.npeaks, 0.05, 1.0,
                            min_pixels)
        assert got.npeaks == n and np.array_equal(got.label, labels)
    assert sum(o.npeaks for o in out) > sum(label_item(sp, min_pixels=min_pixels,
                                                       split="none").npeaks for sp in frames)
    cat_ = {k: np.concatenate([getattr(sp, k) for sp in frames]) for k in
            ("row", "col", "intensity")}
    nnz = np.array([sp.nnz for sp in frames], np.int64)
    row, col, inten, labels, nnz2, npeaks = label_frames(
        Label(min_pixels=min_pixels), cat_["row"], cat_["col"], cat_["intensity"], nnz)
    assert np.array_equal(labels, np.concatenate([o.label for o in out]))
    assert np.array_equal(npeaks, [o.npeaks for o in out])
    assert np.array_equal(nnz2, [o.nnz for o in out])
    table = properties_frames(row, col, inten, labels, nnz2, npeaks)
    want = [Properties().process(Item(0, "e", sparse=o)).peaks for o in out]
    for k in PEAK_COLUMNS:
        assert np.array_equal(table[k], np.concatenate([w[k] for w in want])), k


def test_label_rejects_bad_split_settings():
    with pytest.raises(ValueError, match="split"):
        Label(split="watershed")
    with pytest.raises(ValueError, match="prominence_sigma"):
        Label(prominence_sigma=-1.0)


# ------------------------------------------------------------------ 3D split


def smooth_stack(npoints, seed, shape=SHAPE, label_split="local_max", cut=600.0):
    """Frames of a smooth random field (bumps lasting a few points) cut at a level,
    labelled by the label node and measured by the properties node."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((npoints, *shape)), (1.3, 1.3, 1.3))
    field = 1000.0 * np.clip(field / field.std(), 0, None)
    frames = []
    for p in range(npoints):
        sp = sparse_from(field[p], cut)
        item = Label(split=label_split).process(Item(p, "e", sparse=sp))
        item = Properties().process(item)
        frames.append((item.sparse, item.peaks))
    return frames


def naive_split(frames, trajectory, prominence, sigma, missing=()):
    """Cliques by brute force: any-pixel links, saddles from pixel dictionaries, then
    each linked group cut by 0-dimensional persistence in plain Python."""
    ncols = SHAPE[1]
    peaks, offsets, total = [], [], 0
    for p, (sparse, _) in enumerate(frames):
        keys = sparse.row.astype(int) * ncols + sparse.col.astype(int)
        n = 0 if p in missing else sparse.npeaks
        blobs = []
        for k in range(n):
            sel = sparse.label == k + 1
            pix = dict(zip(keys[sel].tolist(), sparse.intensity[sel].astype(float).tolist(),
                           strict=True))
            top = max(pix.values())
            peak = min(key for key, v in pix.items() if v == top)
            blobs.append((pix, top, peak))
        peaks.append(blobs)
        offsets.append(total)
        total += n
    height = [0.0] * total
    for p, blobs in enumerate(peaks):
        for k, (_, top, _) in enumerate(blobs):
            height[offsets[p] + k] = top
    edges = []
    for j in range(len(frames)):
        for i in trajectory.neighbours_before(j):
            for a, (pa, ha, ka) in enumerate(peaks[i]):
                for b, (pb, hb, kb) in enumerate(peaks[j]):
                    shared = pa.keys() & pb.keys()
                    if not shared:
                        continue
                    s = max(min(pa[x], pb[x]) for x in shared)
                    if abs(ka // ncols - kb // ncols) <= 1 and abs(ka % ncols - kb % ncols) <= 1:
                        s = max(s, min(ha, hb))
                    edges.append((s, offsets[i] + a, offsets[j] + b))
    edges.sort(key=lambda e: (-e[0], e[1], e[2]))
    forest = NaiveForest(range(total))
    find = forest.find

    def higher(x, y):
        return height[x] > height[y] or (height[x] == height[y] and x < y)

    for s, a, b in edges:
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        hi, lo = (ra, rb) if higher(ra, rb) else (rb, ra)
        depth = height[lo] - s
        if not (depth > 0 and depth >= max(prominence * height[lo],
                                           sigma * math.sqrt(height[lo] + s))):
            forest.parent[lo] = hi
    return forest.groups()


def run_points(linker, scan, frames, missing=()):
    linker.setup(scan)
    out = []
    for p, (sparse, peaks) in enumerate(frames):
        if p in missing:
            out.append(linker.add_point(p, None, None, {}))
        else:
            out.append(linker.add_point(p, sparse, peaks, {"omega": 0.25 * p, "dty": 1.0}))
    out.append(linker.finish())
    return out


def run_blocks(linker, scan, frames, cuts, missing=()):
    linker.setup(scan)
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        sub = list(range(lo, hi))
        has = np.array([p not in missing for p in sub])
        pick = [frames[p][0] for p in sub if p not in missing]
        peaks = [frames[p][1] for p in sub if p not in missing]
        empty = np.empty(0)
        out.append(linker.add_block(PeakBlock(
            lo, SHAPE, has,
            np.array([frames[p][0].nnz if p not in missing else 0 for p in sub]),
            np.concatenate([s.row for s in pick] or [empty.astype(np.uint16)]),
            np.concatenate([s.col for s in pick] or [empty.astype(np.uint16)]),
            np.concatenate([s.label for s in pick] or [empty.astype(np.int32)]),
            np.array([frames[p][0].npeaks if p not in missing else 0 for p in sub]),
            {k: np.concatenate([pk[k] for pk in peaks]) for k in PEAK_COLUMNS},
            {"omega": 0.25 * np.arange(lo, hi), "dty": np.ones(hi - lo)},
            intensity=np.concatenate([s.intensity for s in pick]))))
    out.append(linker.finish())
    return out


SPLIT = {"criterion": "any_pixel", "split": "local_max", "prominence": 0.05,
         "prominence_sigma": 0.5}


@pytest.mark.parametrize("trajectory, npoints, missing", [
    (Sweep(30), 30, (9,)),
    (Grid(4, 6), 24, (13,)),
])
def test_linker_split_matches_naive_reference(trajectory, npoints, missing):
    frames = smooth_stack(npoints, seed=npoints)
    scan = make_scan(trajectory, npoints)
    got = run_points(Linker(**SPLIT), scan, frames, set(missing))
    want = naive_split(frames, trajectory, SPLIT["prominence"], SPLIT["prominence_sigma"],
                       set(missing))
    assert partition(cat(got, "members")) == want
    whole = run_points(Linker(criterion="any_pixel"), make_scan(trajectory, npoints), frames,
                       set(missing))
    assert len(want) > len(partition(cat(whole, "members")))  # some cliques were cut
    # raw overlaps do not depend on the split; cliques keep their members' sums
    for k in ("peak_a", "peak_b", "npixels", "score"):
        assert np.array_equal(cat(got, "overlaps")[k], cat(whole, "overlaps")[k])
    members, cl = cat(got, "members"), cat(got, "cliques")
    s_i = np.concatenate([pk["s_I"] for p, (_, pk) in enumerate(frames) if p not in missing])
    order = np.argsort(cl["clique_id"])
    np.testing.assert_allclose(np.bincount(members["clique_id"],
                                           weights=s_i[members["peak_id"]]),
                               cl["s_I"][order], rtol=1e-12)


@pytest.mark.parametrize("trajectory, npoints", [(Sweep(40), 40), (Grid(5, 8), 40)])
def test_split_blocks_equal_points(trajectory, npoints):
    frames = smooth_stack(npoints, seed=7)
    one = run_points(Linker(**SPLIT), make_scan(trajectory, npoints), frames, {11})
    blocks = run_blocks(Linker(**SPLIT), make_scan(trajectory, npoints), frames,
                        [0, 1, 13, 14, npoints], {11})
    for table in ("overlaps", "cliques"):
        a, b = cat(one, table), cat(blocks, table)
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=True), (table, k)
    ma, mb = cat(one, "members"), cat(blocks, "members")  # sorted per step, not overall
    oa, ob = np.argsort(ma["peak_id"]), np.argsort(mb["peak_id"])
    assert np.array_equal(ma["peak_id"][oa], mb["peak_id"][ob])
    assert np.array_equal(ma["clique_id"][oa], mb["clique_id"][ob])
    assert cat(one, "cliques")["clique_id"].shape[0] > 10


def rocking(values, shape=SHAPE):
    """A 3 x 3 blob at the same place on every point, centre `values[p]`, edges half."""
    frames = []
    for p, v in enumerate(values):
        img = np.zeros(shape)
        if v:
            img[5:8, 5:8] = 0.5 * v
            img[6, 6] = v
        item = Label(split="none").process(Item(p, "e", sparse=sparse_from(img, 0.0)))
        frames.append((item.sparse, Properties().process(item).peaks))
    return frames


@pytest.mark.parametrize("values, n_split", [
    ([100, 400, 900, 400, 200, 500, 1000, 500, 100], 2),  # a dip: two spots
    ([100, 400, 900, 700, 800, 500, 100], 1),  # a shallow dip: noise
    ([100, 900, 880, 100], 1),  # a flat top
])
def test_rocking_curve_split_at_significant_dips_only(values, n_split):
    frames = rocking(values)
    n = len(values)
    parts = partition(cat(run_points(Linker(criterion="any_pixel", split="local_max"),
                                     make_scan(Sweep(n), n), frames), "members"))
    assert len(parts) == n_split
    whole = run_points(Linker(criterion="any_pixel"), make_scan(Sweep(n), n), frames)
    assert len(partition(cat(whole, "members"))) == 1
    if n_split == 2:  # cut at the dip (point 4 is a pass to either side)
        assert frozenset(range(4)) in parts or frozenset(range(5)) in parts


def test_one_spot_on_two_passes_stays_one_clique():
    """Back and forth over the same range: the maxima of the two passes are one spot
    (peak pixels next to each other), whatever their heights."""
    # points 0 1 2 forward, 3 4 5 backward: 3 4 5 sit at the angles of 2 1 0
    frames = rocking([200, 900, 200, 200, 700, 200])
    n = len(frames)

    class Passes(Grid):
        def neighbours_before(self, i):
            return {0: [], 1: [0], 2: [1], 3: [2], 4: [1, 3], 5: [0, 4]}[i]

        def last_neighbour(self, i):
            return {0: 5, 1: 4, 2: 3}.get(i, min(i + 1, 5))

    for split in ("local_max", "none"):
        parts = partition(cat(run_points(
            Linker(criterion="any_pixel", split=split, prominence_sigma=0.0, prominence=0.0),
            make_scan(Passes(2, 3), n), frames), "members"))
        assert parts == {frozenset(range(6))}
    # without the pass links the two passes are two maxima apart
    parts = partition(cat(run_points(
        Linker(criterion="any_pixel", split="local_max", prominence_sigma=0.0, prominence=0.0),
        make_scan(Sweep(n), n), frames), "members"))
    assert len(parts) == 2


def test_linker_rejects_bad_split_settings():
    with pytest.raises(ValueError, match="split"):
        Linker(split="watershed")
    with pytest.raises(ValueError, match="prominence"):
        Linker(prominence=-0.1)
    linker = Linker(split="local_max")
    linker.setup(make_scan(Sweep(3), 3))
    sparse, peaks = rocking([5])[0]
    block = PeakBlock.single(0, sparse, peaks, {})
    block.intensity = None
    with pytest.raises(ValueError, match="intensities"):
        linker.add_block(block)


# ------------------------------------------------------------ whole chain


def split_config(tmp_path):
    text = (CONFIGS / "imaged11.toml").read_text()
    text = text.replace('split = "none"                    # 8-connected',
                        'split = "local_max"\nprominence_sigma = 0.5  #')
    text = text.replace('split = "none"                    # linked',
                        'split = "local_max"\nprominence_sigma = 1.0  #')
    assert text.count("local_max") == 2
    path = tmp_path / "split.toml"
    path.write_text(text)
    return path


def test_split_replay_in_blocks_writes_the_per_point_file(tmp_path):
    src = write_sparse(tmp_path / "in.h5", nframes=40, seed=5)
    with h5py.File(src, "a") as f:  # smooth intensities, so that maxima mean something
        g = f["1.1"]
        r, c = g["row"][()].astype(float), g["col"][()].astype(float)
        fr = g["frame"][()].astype(float)
        g["intensity"][...] = (500 + 400 * np.sin(r / 3.0) * np.cos(c / 4.0)
                               + 300 * np.sin(fr / 2.0)).astype(np.uint16)
    config = split_config(tmp_path)
    outs = {}
    for extra in ([], ["--per-point"]):
        out = tmp_path / f"out{len(extra)}.h5"
        assert main(["replay", str(src), "--config", str(config), "--quiet", "--output",
                     str(out), *extra]) == 0
        outs[bool(extra)] = flat_tables(out)
    a, b = outs[False], outs[True]
    assert sorted(a) == sorted(b)
    for k in a:
        if k not in ("counters", "status"):
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    plain = tmp_path / "plain.h5"
    assert main(["replay", str(src), "--preset", "imaged11", "--quiet", "--output",
                 str(plain)]) == 0
    assert a["detector/peaks2d/npx"].shape[0] > flat_tables(plain)["detector/peaks2d/npx"].shape[0]


def test_relink_with_split_gives_what_a_replay_with_it_gives(tmp_path):
    from stream.offline.relink import relink

    src = write_sparse(tmp_path / "in.h5", nframes=40, seed=8)
    out = tmp_path / "out.h5"
    assert main(["replay", str(src), "--preset", "imaged11", "--quiet", "--output",
                 str(out)]) == 0
    relinked = tmp_path / "relinked.h5"
    relink(out, relinked, split="local_max", prominence_sigma=0.5)
    text = (CONFIGS / "imaged11.toml").read_text().replace(
        'split = "none"                    # linked',
        'split = "local_max"\nprominence_sigma = 0.5 #')
    config = tmp_path / "c.toml"
    config.write_text(text)
    direct = tmp_path / "direct.h5"
    assert main(["replay", str(src), "--config", str(config), "--quiet", "--output",
                 str(direct)]) == 0
    a, b = flat_tables(relinked), flat_tables(direct)
    for k in a:
        if k.startswith(("detector/", "points/")):
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    assert (a["detector/cliques/clique_id"].shape[0]
            > flat_tables(out)["detector/cliques/clique_id"].shape[0])


def test_split_memory_is_bounded_and_distance_links_never_split():
    npoints = 1500
    frames = smooth_stack(npoints, seed=11, shape=(16, 16), cut=1400.0)  # no percolation
    linker = Linker(**SPLIT)
    linker.setup(make_scan(Sweep(npoints), npoints))
    most = 0
    for p, (sparse, peaks) in enumerate(frames):
        linker.add_point(p, sparse, peaks, {"omega": float(p)})
        most = max(most, linker.forest.nedges)
    linker.finish()
    assert linker.forest.nedges == 0 and linker.open_peaks() == 0
    assert sum(s.npeaks for s, _ in frames) > 1000 and most < 200  # not the scan's 5000
    few = frames[:40]
    parts = [partition(cat(run_points(Linker(criterion="distance", distance=2.0, split=s),
                                      make_scan(Sweep(40), 40), few), "members"))
             for s in ("none", "local_max")]
    assert parts[0] == parts[1]
