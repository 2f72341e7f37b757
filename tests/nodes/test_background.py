"""Background node: sigma clip and median against numpy, the threshold map the threshold uses."""

import json

import numpy as np
import pytest

from nodes import Background, Correct, DensePass, Label, Normalise, Properties, Threshold, fuse
from nodes.threshold import CUT_MAP, CUT_MIN
from stream.core.item import Item
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan
from stream.run.pipeline import Pipeline

SHAPE = (90, 110)
GEOMETRY = dict(dist=0.05, poni1=0.0045, poni2=0.0052, pixel1=1e-4, pixel2=1e-4, rot1=0.03,
                wavelength=1e-10)


def scan_of(shape=SHAPE, dtype="float32"):
    return Scan.from_start(Start("s", {"d": DetectorInfo(shape, dtype)}))


def background(setup=True, dtype="float32", **kw):
    node = Background(**{**GEOMETRY, "npt": 30, **kw})
    if setup:
        node.setup(scan_of(dtype=dtype))
    return node


def ring_frame(rng, node, spots=20, clean=False):
    """Rings (smooth in 2theta) + Poisson noise + bright spots (and the frame without them)."""
    tth = np.degrees(node.geometry.tth(SHAPE))
    frame = rng.poisson(30 + 40 * np.exp(-0.5 * ((tth - 8) / 0.7) ** 2)).astype(np.float32)
    rings = frame.copy()
    for _ in range(spots):
        r, c = rng.integers(1, SHAPE[0] - 2), rng.integers(1, SHAPE[1] - 2)
        frame[r - 1:r + 2, c - 1:c + 2] += 400.0
    return (frame, rings) if clean else frame


def ref_stats(v, n):
    m = v.sum() / n.sum()
    return m, np.sqrt(np.sum(n * n * (v / n - m) ** 2) / np.sum(n * n))


def ref_sigma_clip(frame, pbin, norm, nbins, clip, max_iter):
    """Per bin, numpy: drop |x - m| > clip * s, recompute, until nothing is dropped."""
    v, mean, sigma = frame.ravel().astype(np.float64), np.full(nbins, np.nan), np.full(nbins,
                                                                                       np.nan)
    for k in range(nbins):
        sel = (pbin == k) & np.isfinite(v)
        if not sel.any():
            continue
        x, n = v[sel], norm[sel].astype(np.float64)
        keep = np.ones(x.size, bool)
        m, s = ref_stats(x, n)
        for _ in range(max_iter):
            drop = keep & (np.abs(x / n - m) > clip * s) if s > 0 else np.zeros_like(keep)
            if not drop.any():
                break
            keep &= ~drop
            m, s = ref_stats(x[keep], n[keep])
        mean[k], sigma[k] = m, s
    return mean, sigma


def ref_cut_map(node, level, spread):
    """background + max(nsigma * spread, min_excess), interpolated with np.interp."""
    pos = node.geometry.radial(SHAPE, node.unit).ravel()
    norm = node.norm if node.norm.size else np.ones(pos.size)
    bg = np.interp(pos, node.radial, level) * norm
    sd = np.interp(pos, node.radial, spread) * norm
    cut = bg + np.maximum(node.nsigma * sd, node.min_excess)
    cut[node.pbin < 0] = np.inf
    return cut.reshape(SHAPE), bg.reshape(SHAPE)


@pytest.mark.parametrize("solid_angle", [False, True])
def test_sigma_clip_matches_numpy(solid_angle):
    rng = np.random.default_rng(1)
    node = background(correct_solid_angle=solid_angle, clip=2.5, max_iter=4)
    frame, rings = ring_frame(rng, node, clean=True)
    frame[5, 5] = rings[5, 5] = np.nan
    item = node.process(Item(0, "d", frame=frame))
    norm = node.norm if solid_angle else np.ones(frame.size, np.float32)
    mean, sigma = ref_sigma_clip(frame, node.pbin, norm, 30, 2.5, 4)
    assert np.isfinite(mean).all()
    np.testing.assert_allclose(item.outputs["background"], mean, rtol=1e-5)
    np.testing.assert_allclose(item.outputs["background_sigma"], sigma, rtol=1e-4)
    # the clip removed the spots: the level is the rings' alone (a plain mean is not)
    def means(f):  # sum(v) / sum(norm) over the bin's valid pixels
        ok = np.isfinite(f.ravel())
        return np.array([f.ravel()[ok & (node.pbin == k)].sum() / norm[ok & (node.pbin == k)]
                         .sum() for k in range(30)])
    clean, plain = means(rings), means(frame)
    assert np.all(np.abs(item.outputs["background"] - clean) < 0.05 * clean)
    assert np.max(np.abs(plain - clean) / clean) > 0.2
    cut, _ = ref_cut_map(node, mean, sigma)
    cut[5, 5] = np.inf  # a NaN pixel is invalid: never kept
    np.testing.assert_allclose(item.outputs[CUT_MAP], cut, rtol=2e-6)
    assert float(item.outputs[CUT_MIN]) == pytest.approx(cut.min(), rel=1e-6)


def test_median_matches_numpy_and_not_interpolated():
    rng = np.random.default_rng(2)
    node = background(method="median", interpolate=False, nsigma=4.0, min_excess=25.0)
    frame = ring_frame(rng, node)
    item = node.process(Item(0, "d", frame=frame))
    v = frame.ravel()
    for k in range(30):
        x = v[node.pbin == k]
        med = np.median(x)
        assert item.outputs["background"][k] == pytest.approx(med)
        assert item.outputs["background_sigma"][k] == pytest.approx(
            1.4826 * np.median(np.abs(x - med)), rel=1e-6)
    level = item.outputs["background"].astype(np.float64)
    spread = item.outputs["background_sigma"].astype(np.float64)
    inside = node.pbin >= 0
    want = level[node.pbin[inside]] + np.maximum(4.0 * spread[node.pbin[inside]], 25.0)
    np.testing.assert_allclose(item.outputs[CUT_MAP].ravel()[inside], want, rtol=1e-6)
    assert np.all(np.isinf(item.outputs[CUT_MAP].ravel()[~inside]))


def test_threshold_uses_the_frame_map():
    rng = np.random.default_rng(3)
    node = background(nsigma=5.0)
    pipe = Pipeline([node, Threshold(cut=1e9), Label(), Properties()])
    pipe.setup(scan_of())
    for i in range(3):
        frame = ring_frame(rng, node)
        item = pipe.process(Item(i, "d", frame=frame.copy()))
        level, spread = ref_sigma_clip(frame, node.pbin, np.ones(frame.size), 30, 3.0, 5)
        cut, _ = ref_cut_map(node, level, spread)
        rows, cols = np.nonzero(frame > cut)
        assert rows.size > 50  # the spots, not the rings (cut = 1e9 of its own is unused)
        np.testing.assert_array_equal(item.sparse.row, rows)
        np.testing.assert_array_equal(item.sparse.col, cols)
        np.testing.assert_array_equal(item.sparse.intensity, frame[rows, cols])
        assert CUT_MAP not in item.outputs and CUT_MIN not in item.outputs
        assert set(item.outputs) == {"background", "background_sigma"}


def test_subtract_gives_the_excess():
    rng = np.random.default_rng(4)
    node = background(subtract=True, nsigma=4.0)
    frame = ring_frame(rng, node)
    item = node.process(Item(0, "d", frame=frame))
    level = item.outputs["background"].astype(np.float64)
    spread = item.outputs["background_sigma"].astype(np.float64)
    cut, bg = ref_cut_map(node, level, spread)
    inside = (node.pbin >= 0).reshape(SHAPE)
    np.testing.assert_allclose(item.frame[inside], (frame - bg)[inside], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(item.outputs[CUT_MAP][inside], (cut - bg)[inside], rtol=1e-5)
    kept = Threshold().process(item).sparse
    assert kept.nnz > 0 and np.all(kept.intensity < 450)  # excess over the background


def test_fixed_image():
    rng = np.random.default_rng(5)
    image = rng.uniform(10, 40, SHAPE).astype(np.float32)
    node = Background(image=image, nsigma=3.0)
    node.setup(scan_of())
    frame = rng.poisson(image).astype(np.float32)
    frame[40:43, 50:53] += 300
    item = Threshold().process(node.process(Item(0, "d", frame=frame)))
    cut = image + 3.0 * np.sqrt(np.maximum(image, 1.0))
    rows, cols = np.nonzero(frame > cut)
    np.testing.assert_array_equal(item.sparse.row, rows)
    np.testing.assert_array_equal(item.sparse.col, cols)
    sigma = np.full(SHAPE, 2.0, np.float32)
    node = Background(image=image, sigma_image=sigma, nsigma=3.0, min_excess=7.0)
    node.setup(scan_of())
    out = node.process(Item(0, "d", frame=frame)).outputs
    np.testing.assert_allclose(out[CUT_MAP], image + 7.0)
    node.nsigma = 5.0  # settable: the map follows
    out = node.process(Item(0, "d", frame=frame)).outputs
    np.testing.assert_allclose(out[CUT_MAP], image + 10.0)


def test_nothing_fused_after_a_background():
    rng = np.random.default_rng(6)
    dark = rng.uniform(1, 3, SHAPE).astype(np.float32)
    chains = {"after": lambda b: [Correct(dark=dark), Normalise(), b, Threshold(), Label()],
              "before": lambda b: [b, Correct(dark=dark), Threshold(), Label()]}
    for make in chains.values():
        chain = fuse(make(background(setup=False)))
        assert not any(isinstance(n, DensePass) for n in chain)
    frame = (ring_frame(rng, background(setup=False)) + 2).astype(np.uint16)
    results = []
    for do_fuse in (True, False):
        pipe = Pipeline(chains["after"](background(setup=False)) + [Properties()], fuse=do_fuse)
        pipe.setup(scan_of(dtype="uint16"))
        results.append(pipe.process(Item(0, "d", frame=frame, counters={"monitor": 1.0})))
    np.testing.assert_array_equal(results[0].sparse.row, results[1].sparse.row)
    assert results[0].sparse.nnz > 0


def test_bad_parameters():
    for kw, match in (({"dist": None}, "geometry"), ({"method": "mode"}, "method"),
                      ({"clip": -1.0}, "clip"), ({"npt": 0}, "npt"),
                      ({"sigma_image": np.ones((2, 2))}, "sigma_image")):
        with pytest.raises(ValueError, match=match):
            Background(**{**GEOMETRY, **kw})
    node = background()
    with pytest.raises(ValueError, match="shape"):
        node.process(Item(0, "d", frame=np.zeros((3, 3), np.float32)))
    with pytest.raises(ValueError, match="image has shape"):
        Background(image=np.ones((3, 3))).setup(scan_of())
    assert node.scan_outputs()["background_radial"][0].shape == (30,)


def test_no_map_without_a_threshold_after():
    rng = np.random.default_rng(7)
    node = background(setup=False)
    pipe = Pipeline([node, Label()])  # no threshold: the map would travel and be stored
    assert node.to_threshold is False
    pipe.setup(scan_of())
    item = node.process(Item(0, "d", frame=ring_frame(rng, node)))
    assert set(item.outputs) == {"background", "background_sigma"}


GAP_MASK = np.zeros(SHAPE, bool)
GAP_MASK[40:42, :] = True  # a module gap the mask names (mid-frame: the range stays)


def gapped_frame(rng, node):
    """A signed frame as a Pilatus writes it: a low ring background, -1 in the masked gap
    and in a gap column the mask misses, -2 bad pixels; and where it is valid."""
    tth = np.degrees(node.geometry.tth(SHAPE))
    frame = rng.poisson(3 + 4 * np.exp(-0.5 * ((tth - 8) / 0.7) ** 2)).astype(np.int32)
    frame[GAP_MASK] = -1
    frame[:, 60:62] = -1
    frame[10, 10] = frame[70, 20] = frame[50, 90] = frame[60, 30] = -2
    return frame, ~GAP_MASK & (frame >= 0)


@pytest.mark.parametrize("method", ["sigma_clip", "median"])
def test_mask_and_dummy_leave_gaps_out(method):
    """Levels and spreads per bin are numpy's on the valid pixels alone; gaps and bad
    pixels get +inf in the map and NaN in a subtracted frame."""
    rng = np.random.default_rng(8)
    node = background(dtype="int32", method=method, clip=2.5, mask=GAP_MASK, dummy=-2.0,
                      delta_dummy=1.5, subtract=True)
    pbin = background(dtype="int32").pbin  # the bins without the mask: the same range
    assert np.array_equal(node.pbin, np.where(GAP_MASK.ravel(), -1, pbin))
    frame, valid = gapped_frame(rng, node)
    item = node.process(Item(0, "d", frame=frame.copy()))
    v = np.where(valid, frame, np.nan).astype(np.float64)
    if method == "median":
        level = np.array([np.nanmedian(v.ravel()[pbin == k]) for k in range(30)])
        spread = np.array([1.4826 * np.nanmedian(np.abs(v.ravel()[pbin == k] - level[k]))
                           for k in range(30)])
    else:
        level, spread = ref_sigma_clip(v, pbin, np.ones(v.size), 30, 2.5, 5)
    assert np.isfinite(level).all()
    np.testing.assert_allclose(item.outputs["background"], level, rtol=1e-5)
    np.testing.assert_allclose(item.outputs["background_sigma"], spread, rtol=1e-4)
    cut, bg = item.outputs[CUT_MAP], ref_cut_map(node, level, spread)[1]
    assert np.all(np.isinf(cut[~valid])) and np.isfinite(cut[valid]).all()
    assert np.all(np.isnan(item.frame[~valid]))
    np.testing.assert_allclose(item.frame[valid], (frame - bg)[valid], rtol=1e-5, atol=1e-4)
    # counted, the -1 and -2 pull the low background down
    plain = background(dtype="int32", method=method, clip=2.5).process(Item(0, "d", frame=frame))
    assert np.max(np.abs(plain.outputs["background"] - level) / level) > 0.1
    config = node.scan_outputs()["background_config"]
    assert json.loads(config[0][()])["dummy"] == -2.0 and json.loads(config[0][()])["has_mask"]


def test_fixed_image_leaves_the_mask_and_dummy_out():
    rng = np.random.default_rng(9)
    image = rng.uniform(2, 8, SHAPE).astype(np.float32)
    node = Background(image=image, mask=GAP_MASK, dummy=-2.0, delta_dummy=1.5, subtract=True)
    node.setup(scan_of(dtype="int32"))
    frame, valid = gapped_frame(rng, background())
    item = node.process(Item(0, "d", frame=frame))
    cut = item.outputs[CUT_MAP]
    assert np.all(np.isinf(cut[~valid])) and np.isfinite(cut[valid]).all()
    assert np.all(np.isnan(item.frame[~valid]))
    np.testing.assert_allclose(item.frame[valid], (frame - image)[valid])
