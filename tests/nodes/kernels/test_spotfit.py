"""model_intensity: a spot's integral from a 3D Gaussian fitted to its kept pixels."""

import numpy as np
import pytest

from nodes.kernels.spotfit import model_intensity

SIG = np.array([1.2, 1.5, 1.8])  # point, row, col


def grid(centre, half=7):
    axes = [np.arange(np.floor(c) - half, np.floor(c) + half + 1) for c in centre]
    z, r, c = (a.ravel() for a in np.meshgrid(*axes, indexing="ij"))
    return z, r, c


def gaussian(z, r, c, centre, amp, sig=SIG):
    d2 = sum(((x - m) / s) ** 2 for x, m, s in zip((z, r, c), centre, sig, strict=True))
    return amp * np.exp(-0.5 * d2)


def total(amp, sig=SIG):
    return amp * (2 * np.pi) ** 1.5 * np.prod(sig)


def fit(z, r, c, v, q=None, background=0.0):
    q = np.ones(v.shape[0]) if q is None else q
    return model_intensity(z.astype(np.int64), r.astype(np.int32), c.astype(np.int32),
                           v.astype(np.float32), q, background, 0.0)


def test_a_noise_free_gaussian_cut_at_its_tails_gives_its_integral():
    centre = (10.3, 20.6, 30.2)
    z, r, c = grid(centre)
    v = gaussian(z, r, c, centre, 1000.0) + 10.0
    keep = v > 10.0 + 50.0  # 5% of the peak: a plain sum loses the tails
    got = fit(z[keep], r[keep], c[keep], v[keep], background=10.0)
    kept_sum = (v[keep] - 10.0).sum()
    assert kept_sum < 0.9 * total(1000.0)
    assert got == pytest.approx(total(1000.0), rel=1e-3)
    # a share of every pixel is that share of the spot
    half = fit(z[keep], r[keep], c[keep], v[keep], np.full(keep.sum(), 0.5), 10.0)
    assert half == pytest.approx(0.5 * total(1000.0), rel=1e-3)


def test_poisson_spots_are_within_5_percent_where_the_pixel_sum_is_short():
    rng = np.random.default_rng(3)
    bg, good_fit, good_sum, n = 10.0, 0, 0, 60
    for _ in range(n):
        centre = rng.uniform(5, 6, 3) + (10, 20, 30)
        amp = rng.uniform(300, 3000)  # the simulator's spots; fainter ones lose
        # too much of their shape under the cut for any fit of the kept pixels
        z, r, c = grid(centre)
        v = rng.poisson(gaussian(z, r, c, centre, amp) + bg).astype(float)
        keep = v > bg + 30  # configs/simulated.toml: cut 40 over a background of 10
        truth = total(amp)
        got = fit(z[keep], r[keep], c[keep], v[keep], background=bg)
        good_fit += abs(got - truth) <= 0.05 * truth
        good_sum += abs((v[keep] - bg).sum() - truth) <= 0.05 * truth
    assert good_fit >= 0.95 * n
    assert good_sum < 0.8 * n  # the case the fit is for


def test_what_is_not_a_gaussian_gives_nan():
    centre = (10.0, 20.0, 30.0)
    z, r, c = grid(centre, half=3)
    v = gaussian(z, r, c, centre, 1000.0)
    one = z == 10  # seen at one point only: no width in that axis
    assert np.isnan(fit(z[one], r[one], c[one], v[one]))
    flat = np.full(z.shape[0], 100.0)  # does not fall off
    assert np.isnan(fit(z, r, c, flat))
    assert np.isnan(fit(z, r, c, v, background=2000.0))  # nothing above the background


def test_touching_spots_are_shared_again_by_their_fitted_models():
    from nodes.kernels.spotfit import deblended_intensities
    a, b = (10.3, 20.6, 30.2), (10.8, 23.6, 31.0)  # a faint spot 3 px from a bright one
    z, r, c = grid((10.5, 22.0, 30.6), half=8)
    ga, gb = gaussian(z, r, c, a, 100.0), gaussian(z, r, c, b, 1000.0)
    v = ga + gb + 10.0
    keep = v > 10.0 + 5.0
    sa, sb = ga[keep] ** 0.8, gb[keep] ** 0.8  # wrong first shares: too flat
    resp = np.stack([sa, sb], axis=1) / (sa + sb)[:, None]
    args = (z[keep].astype(np.int64), r[keep].astype(np.int32), c[keep].astype(np.int32),
            v[keep].astype(np.float32), resp, 10.0, 0.0)
    err = [abs(deblended_intensities(*args, n)[0] / total(100.0) - 1) for n in (0, 8, 30)]
    assert err[0] > 0.05  # the faint one holds the bright one's tail
    assert err[0] > err[1] > err[2]
    got = deblended_intensities(*args, 30)
    assert got == pytest.approx([total(100.0), total(1000.0)], rel=0.01)
