"""Pixel-level separation of closed cliques (linker split "pixels"): known answers on
synthetic 3D Gaussian spots, a dense oracle (scipy 3D connected components plus a
scikit-image watershed from LoG seeds), exact intensity accounting, block = point by
point, and resume from `state()` bit-identical."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from nodes.link.linker import Linker, PeakBlock
from tests.support.link import cat, failing_fit_volume, labelled, make_scan, run

SHAPE = (40, 40)
NPOINTS = 16
CUT = 8.0


def spots_volume(spots, seed: int | None = None, background: float = 2.0) -> np.ndarray:
    """(point, row, col) volume of 3D Gaussians (z, s, f, sz, ss, sf, amplitude), with
    Poisson noise when `seed` is given."""
    z, s, f = np.meshgrid(np.arange(NPOINTS), np.arange(SHAPE[0]), np.arange(SHAPE[1]),
                          indexing="ij")
    vol = np.full((NPOINTS, *SHAPE), background)
    for z0, s0, f0, sz, ss, sf, amp in spots:
        vol += amp * np.exp(-0.5 * (((z - z0) / sz) ** 2 + ((s - s0) / ss) ** 2
                                    + ((f - f0) / sf) ** 2))
    if seed is not None:
        vol = np.random.default_rng(seed).poisson(vol).astype(float)
    return vol


def frames_of(vol: np.ndarray):
    return [labelled(vol[p] > CUT, vol[p]) for p in range(vol.shape[0])]


def link(vol: np.ndarray, split: str = "pixels", criterion: str = "any_pixel"):
    linker = Linker(criterion=criterion, split=split)
    results = run(linker, make_scan(npoints=NPOINTS), frames_of(vol))
    return cat(results, "cliques"), cat(results, "members"), linker


def centres(cliques) -> np.ndarray:
    return np.column_stack([cliques["point"], cliques["s_raw"], cliques["f_raw"]])


def matched(found: np.ndarray, truth: np.ndarray, tol=(0.5, 1.0, 1.0)) -> bool:
    """Every true spot has exactly one found centre within tolerance, and no extra."""
    if found.shape[0] != truth.shape[0]:
        return False
    near = (np.abs(found[None, :, :] - truth[:, None, :]) <= np.array(tol)).all(axis=2)
    return bool((near.sum(axis=1) == 1).all() and (near.sum(axis=0) == 1).all())


# two spots that touch along the rocking curve and in the frame, and one isolated
PAIR = [(6.0, 15.0, 14.0, 1.0, 1.5, 1.5, 400.0), (8.2, 17.5, 16.0, 1.0, 1.5, 1.5, 250.0)]
ALONE = [(7.0, 31.0, 30.0, 1.1, 1.4, 1.6, 300.0)]


def test_touching_pair_becomes_two_cliques_isolated_stays_one():
    vol = spots_volume(PAIR + ALONE)
    whole, _, _ = link(vol, split="none")
    assert whole["clique_id"].shape[0] == 2  # the pair is one clique without separation
    cliques, members, linker = link(vol)
    truth = np.array([s[:3] for s in PAIR + ALONE])
    assert matched(centres(cliques), truth, (0.3, 0.3, 0.3))
    assert linker.separator.nseparated == 1
    # the isolated spot's clique is the very row split "none" gives
    alone = np.flatnonzero(np.abs(cliques["s_raw"] - 31) < 1)[0]
    same = np.flatnonzero(np.abs(whole["s_raw"] - 31) < 1)[0]
    for k in cliques:
        if k not in ("clique_id", "fit_intensity"):  # fitted with split "pixels" only
            assert cliques[k][alone] == whole[k][same], k
    assert np.isnan(whole["fit_intensity"]).all()
    assert np.isfinite(cliques["fit_intensity"]).all()


def true_total(spot) -> float:
    *_, sz, ss, sf, amp = spot
    return amp * (2 * np.pi) ** 1.5 * sz * ss * sf


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fitted_intensity_of_separated_spots_holds_their_tails(seed):
    """fit_intensity (net of the linker's background) is within 5% of each spot's true
    integrated intensity, touching pair included; the net pixel sum misses the
    tails under the cut."""
    background = 2.0
    vol = spots_volume(PAIR + ALONE, seed=seed, background=background)
    linker = Linker(criterion="any_pixel", split="pixels", background=background)
    results = run(linker, make_scan(npoints=NPOINTS), frames_of(vol))
    cliques = cat(results, "cliques")
    spots = cliques["npx"] >= 12  # single noise pixels above the cut aside
    cliques = {k: v[spots] for k, v in cliques.items()}
    truth = np.array([s[:3] for s in PAIR + ALONE])
    assert matched(centres(cliques), truth)
    order = [int(np.argmin(np.abs(centres(cliques) - t).sum(axis=1))) for t in truth]
    total = np.array([true_total(s) for s in PAIR + ALONE])
    fit = cliques["fit_intensity"][order]
    net = (cliques["sum_intensity"] - background * cliques["npx"])[order]
    assert np.all(np.abs(fit - total) / total < 0.05), (fit, total)
    # the pixel sums fall short (the tails under the cut); the fit does not
    assert np.all(net < total)
    assert np.abs(fit - total).sum() < 0.5 * np.abs(net - total).sum()


def test_every_pixel_counted_once():
    vol = spots_volume(PAIR + ALONE, seed=3)
    cliques, members, _ = link(vol)
    frames = frames_of(vol)
    total = sum(float(sp.intensity.astype(np.float64).sum()) for sp, _ in frames)
    assert cliques["sum_intensity"].sum() == pytest.approx(total, rel=1e-9)
    # per 2D peak the shares sum to one; peaks split between cliques have several rows
    per_peak = np.bincount(members["peak_id"], weights=members["share"])
    assert np.allclose(per_peak, 1.0)
    assert (members["share"] > 0).all() and (members["share"] <= 1).all()
    assert (np.bincount(members["peak_id"]) > 1).any()


def test_shoulder_without_a_second_maximum_is_found():
    """The weaker spot has no local maximum of its own in any frame (a shoulder)."""
    pair = [(7.0, 18.0, 18.0, 1.2, 1.8, 1.8, 600.0), (8.5, 18.0, 21.6, 1.2, 1.8, 1.8, 300.0)]
    vol = spots_volume(pair)
    for p in range(NPOINTS):  # one 2D maximum per frame
        img = np.where(vol[p] > CUT, vol[p], 0)
        assert len(peak_local_max(img, min_distance=1, threshold_abs=CUT)) <= 1
    cliques, _, _ = link(vol)
    assert matched(centres(cliques), np.array([s[:3] for s in pair]), (0.5, 1.0, 1.0))


def oracle(vol: np.ndarray) -> np.ndarray:
    """The dense reference: 3D connected components of the thresholded volume, each
    cut by a watershed on the smoothed intensity from LoG seeds; centroids (z, s, f)."""
    mask = vol > CUT
    comp, _ = ndimage.label(mask, np.ones((3, 3, 3), bool))
    blob = -ndimage.gaussian_laplace(vol, (0.7, 1.0, 1.0))
    seeds = peak_local_max(blob, min_distance=1, threshold_rel=0.05, labels=comp,
                           exclude_border=False)
    markers = np.zeros(vol.shape, np.int64)
    markers[tuple(seeds.T)] = np.arange(1, seeds.shape[0] + 1)
    seg = watershed(-ndimage.gaussian_filter(vol, (0.7, 1.0, 1.0)), markers, mask=mask)
    idx = np.arange(1, seeds.shape[0] + 1)
    w = np.where(mask, vol, 0.0)
    return np.array(ndimage.center_of_mass(w, seg, idx)).reshape(-1, 3) if idx.shape[0] else \
        np.empty((0, 3))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_the_dense_oracle_and_the_truth(seed):
    """Random pairs: the streaming separation finds every spot the dense watershed
    finds (and the truth has), with centroids at least as close to the truth."""
    rng = np.random.default_rng(seed)
    spots = []
    for cs, cf in ((12, 12), (12, 28), (28, 12), (28, 28)):
        z0 = rng.uniform(5, 10)
        base = (z0, cs + rng.uniform(-1, 1), cf + rng.uniform(-1, 1), rng.uniform(0.9, 1.2),
                rng.uniform(1.2, 1.8), rng.uniform(1.2, 1.8), rng.uniform(200, 800))
        spots.append(base)
        u = rng.standard_normal(3)
        u *= rng.uniform(3.0, 4.0) / np.linalg.norm(u / np.array(base[3:6]))
        spots.append((base[0] + u[0], base[1] + u[1], base[2] + u[2], *base[3:6],
                      base[6] * rng.uniform(0.4, 1.0)))
    vol = spots_volume(spots, seed=seed)
    truth = np.array([s[:3] for s in spots])
    cliques, _, _ = link(vol)
    ours = centres(cliques)[cliques["npx"] >= 5]  # not the lone noise pixels
    ref = oracle(vol)

    def errors(found):
        d = np.abs(found[None, :, :] - truth[:, None, :]) / np.array([0.5, 1.0, 1.0])
        return d.max(axis=2).min(axis=1)  # per true spot, the nearest found (tolerance 1)

    ok_ours, ok_ref = errors(ours) <= 1, errors(ref) <= 1
    assert ok_ours.sum() >= ok_ref.sum()
    assert ok_ours.mean() >= 0.75
    assert ours.shape[0] <= truth.shape[0]  # no spot cut into pieces


def test_block_path_and_resume_are_bit_identical():
    vol = spots_volume(PAIR + ALONE + [(11.0, 8.0, 30.0, 1.0, 1.5, 1.5, 500.0),
                                       (12.3, 9.5, 32.5, 1.0, 1.5, 1.5, 500.0)], seed=7)
    frames = frames_of(vol)
    scan = make_scan(npoints=NPOINTS)
    whole, members, _ = link(vol)
    # block path: the whole scan in two blocks
    linker = Linker(criterion="any_pixel", split="pixels")
    linker.setup(scan)
    parts = []
    for lo, hi in ((0, 9), (9, NPOINTS)):
        fr = frames[lo:hi]
        parts.append(linker.add_block(PeakBlock(
            lo, SHAPE, np.ones(hi - lo, bool), np.array([sp.nnz for sp, _ in fr]),
            np.concatenate([sp.row for sp, _ in fr]), np.concatenate([sp.col for sp, _ in fr]),
            np.concatenate([sp.label for sp, _ in fr]),
            np.array([sp.npeaks for sp, _ in fr]),
            {k: np.concatenate([pk[k] for _, pk in fr]) for k in fr[0][1]},
            {"omega": 0.25 * np.arange(lo, hi), "dty": np.ones(hi - lo)},
            intensity=np.concatenate([sp.intensity for sp, _ in fr]))))
    parts.append(linker.finish())
    got = cat(parts, "cliques")
    for k in whole:
        assert np.array_equal(got[k], whole[k], equal_nan=True), k
    got = cat(parts, "members")  # the same rows, in another order (closed together)
    a, b = (np.lexsort((m["clique_id"], m["peak_id"])) for m in (got, members))
    for k in members:
        assert np.array_equal(got[k][a], members[k][b]), k
    # resume from state() after every point
    for cut in range(1, NPOINTS):
        first = Linker(criterion="any_pixel", split="pixels")
        out = run_part(first, scan, frames, 0, cut)
        resume_and_compare(first, out, scan, frames, cut, whole)


def resume_and_compare(first, out, scan, frames, cut, whole, background=False):
    """A second linker goes on from `first`'s state at `cut`: the scan's cliques are
    `whole`'s."""
    second = Linker(criterion="any_pixel", split="pixels")
    if background:
        second.separate_in_background()
    second.setup(scan)
    second.restore(first.state())
    out += run_part(second, scan, frames, cut, NPOINTS, setup=False)
    out.append(second.finish())
    got = cat(out, "cliques")
    for k in whole:
        assert np.array_equal(got[k], whole[k], equal_nan=True), (cut, k)


def run_part(linker, scan, frames, lo, hi, setup=True):
    if setup:
        linker.setup(scan)
    return [linker.add_point(p, *frames[p], {"omega": 0.25 * p, "dty": 1.0})
            for p in range(lo, hi)]


def test_pool_holds_only_open_cliques():
    vol = spots_volume(PAIR + ALONE)
    linker = Linker(criterion="any_pixel", split="pixels")
    linker.setup(make_scan(npoints=NPOINTS))
    held = []
    for p, (sp, pk) in enumerate(frames_of(vol)):
        linker.add_point(p, sp, pk, {"omega": 0.25 * p, "dty": 1.0})
        held.append(linker.pool.npixels())
    assert max(held) > 0 and held[-1] == 0  # every spot closed before the end: all freed


def test_background_separation_gives_the_same_tables_and_resumes():
    """Separated in a thread of its own, cliques come out with later points' results
    (so a point's linking never waits): the same tables, the same ids, in the same
    order; state() refuses while a separation is under way, and after drain() a
    resume from it gives the same scan."""
    vol = spots_volume(PAIR + ALONE + [(11.0, 8.0, 30.0, 1.0, 1.5, 1.5, 500.0),
                                       (12.3, 9.5, 32.5, 1.0, 1.5, 1.5, 500.0)], seed=7)
    frames = frames_of(vol)
    scan = make_scan(npoints=NPOINTS)
    whole, members, sync = link(vol)
    assert sync.separator.nseparated >= 2  # the pairs were separated
    linker = Linker(criterion="any_pixel", split="pixels")
    linker.separate_in_background(threads=3)  # finished out of order, given back in order
    out = run_part(linker, scan, frames, 0, NPOINTS)
    out.append(linker.finish())
    assert linker.pending == 0
    assert linker.separator.nseparated == sync.separator.nseparated
    got = cat(out, "cliques")
    for k in whole:
        assert np.array_equal(got[k], whole[k], equal_nan=True), k
    got = cat(out, "members")
    for k in members:
        assert np.array_equal(got[k], members[k]), k
    for cut in (5, 9, 12):
        first = Linker(criterion="any_pixel", split="pixels")
        first.separate_in_background(threads=1)
        out = run_part(first, scan, frames, 0, cut - 1)
        busy = threading.Event()  # the separation thread held up: a closing stays pending
        first._background.executor.submit(busy.wait)
        try:
            out += run_part(first, scan, frames, cut - 1, cut, setup=False)
            assert first.pending >= 1
            with pytest.raises(ValueError, match="drain"):
                first.state()
        finally:
            busy.set()
        out.append(first.drain())
        assert first.pending == 0
        resume_and_compare(first, out, scan, frames, cut, whole, background=True)


def test_fits_that_fail_are_counted_and_the_count_resumes():
    vol = failing_fit_volume(NPOINTS, SHAPE)
    cliques, _, linker = link(vol)
    assert cliques["clique_id"].shape[0] == 4
    one = cliques["first_point"] == cliques["last_point"]
    two = cliques["last_point"] - cliques["first_point"] == 1
    big = cliques["npx"] >= 12
    assert np.isfinite(cliques["fit_intensity"][big & ~one & ~two]).sum() == 1  # Gaussian
    assert np.isnan(cliques["fit_intensity"][~(big & ~one & ~two)]).all()
    assert (big & two).sum() == 1 and (big & one).sum() == 1 and (~big).sum() == 1
    assert linker.separator.nfit_failed == 1  # the 2-point spot, not the 1-point nor small
    assert link(vol, split="local_max")[2].separator.nfit_failed == 0  # no fit at all
    scan, frames = make_scan(npoints=NPOINTS), frames_of(vol)
    for cut in (3, 5, 13):  # before, after and long after the 2-point spot closed
        first = Linker(criterion="any_pixel", split="pixels")
        run_part(first, scan, frames, 0, cut)
        second = Linker(criterion="any_pixel", split="pixels")
        second.setup(scan)
        second.restore(first.state())
        run_part(second, scan, frames, cut, NPOINTS, setup=False)
        second.finish()
        assert second.separator.nfit_failed == 1, cut
