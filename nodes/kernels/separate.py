"""Pixel-level separation of a closed clique into its spots (3D, on its pixels only).

A clique's pixels (point rank z, row r, col c, intensity) are put in a dense
box around them, smoothed with a small 3D Gaussian, and the scale-normalised
Laplacian of Gaussian gives the spot seeds: its local maxima (26 neighbours)
above `seed_fraction` of the strongest, which also finds spots seen only as a
shoulder of a brighter one when the curvature shows them. With two seeds or
more, a mixture of 3D Gaussians (diagonal covariance) is fitted to the
pixels by intensity-weighted EM from those seeds; components closer than
`merge_distance` (|mu_a - mu_b| over sqrt(var_a + var_b), per axis summed)
or holding less than `min_share` of the intensity are dropped and the fit is
made again. Each pixel's intensity then goes to the components in
proportion to their models (the responsibilities), so every pixel is
counted exactly once, and each (member 2D peak, component) gets its share
of the additive moment sums (`ACC` order: npx, sum_intensity, s_1, s_I,
s_sI, s_fI, s_ssI, s_ffI, s_sfI).
"""

from __future__ import annotations

import numba
import numpy as np

from nodes.kernels.blobs3d import KMAX, dense_box, log_seeds, residual_peak
from nodes.kernels.spotfit import deblended_intensities, model_intensity

NACC = 9
DEBLEND_ROUNDS = 8  # refits of touching spots with the pixels shared by their models
_EM_ITER = 40
_VAR_FLOOR = 0.08  # a spot on one frame or one pixel row: 1/12 of a step squared


@numba.njit(nogil=True, cache=True)
def _estep(x, w, mu, var, pi, resp, dens):
    """Responsibilities and mixture density per pixel; returns sum_p w_p log dens_p.
    Each component's log terms and inverse variances are taken once, not per pixel."""
    n, K = x.shape[0], mu.shape[0]
    logp = np.empty(K, np.float64)
    const = np.empty(K, np.float64)
    inv = np.empty((K, 3), np.float64)
    for k in range(K):
        const[k] = np.log(pi[k])
        for a in range(3):
            inv[k, a] = 0.5 / var[k, a]
            const[k] -= 0.5 * np.log(var[k, a])
    norm = -1.5 * np.log(2 * np.pi)
    ll = 0.0
    for p in range(n):
        best = -np.inf
        for k in range(K):
            d0 = x[p, 0] - mu[k, 0]
            d1 = x[p, 1] - mu[k, 1]
            d2 = x[p, 2] - mu[k, 2]
            q = const[k] - (d0 * d0 * inv[k, 0] + d1 * d1 * inv[k, 1] + d2 * d2 * inv[k, 2])
            logp[k] = q
            best = max(best, q)
        tot = 0.0
        for k in range(K):
            logp[k] = np.exp(logp[k] - best)
            tot += logp[k]
        for k in range(K):
            resp[p, k] = logp[k] / tot
        dens[p] = np.exp(best + norm) * tot
        ll += w[p] * (best + norm + np.log(tot))
    return ll


@numba.njit(nogil=True, cache=True)
def _em(x, w, mu, var, pi, resp, dens):
    """Intensity-weighted EM of a diagonal Gaussian mixture (until the means and
    variances move less than 1e-3): resp (n, K) and the mixture density at each
    pixel (dens) of the final parameters; returns sum_p w_p log dens_p.
    The M step is one pass over the pixels: the weighted sums of x and x^2 about
    the component's previous mean (small numbers: no cancellation)."""
    n, K = x.shape[0], mu.shape[0]
    wsum = 0.0
    for p in range(n):
        wsum += w[p]
    s0 = np.empty(K, np.float64)
    s1 = np.empty((K, 3), np.float64)
    s2 = np.empty((K, 3), np.float64)
    for _ in range(_EM_ITER):
        _estep(x, w, mu, var, pi, resp, dens)
        s0[:] = 0.0
        s1[:, :] = 0.0
        s2[:, :] = 0.0
        for p in range(n):  # M step
            for k in range(K):
                q = w[p] * resp[p, k]
                s0[k] += q
                for a in range(3):
                    d = x[p, a] - mu[k, a]
                    s1[k, a] += q * d
                    s2[k, a] += q * d * d
        shift = 0.0
        for k in range(K):
            if s0[k] <= 0.0:
                pi[k] = 1e-12
                continue
            pi[k] = s0[k] / wsum
            for a in range(3):
                m = s1[k, a] / s0[k]  # the mean's move
                v_new = max(s2[k, a] / s0[k] - m * m, _VAR_FLOOR)
                shift = max(shift, abs(m), abs(v_new - var[k, a]))
                mu[k, a] += m
                var[k, a] = v_new
        if shift < 1e-3:
            break
    return _estep(x, w, mu, var, pi, resp, dens)


@numba.njit(nogil=True, cache=True)
def _fit(x, w, mu0, merge_distance, min_share):
    """EM from the centres mu0, dropping (and fitting again without) the weakest of
    a pair closer than merge_distance or a component under min_share.
    Returns (mu, var, pi, resp, dens, ll)."""
    n = x.shape[0]
    mu = mu0.copy()
    while True:
        K = mu.shape[0]
        var = np.empty((K, 3), np.float64)
        for k in range(K):
            var[k, 0], var[k, 1], var[k, 2] = 1.0, 2.25, 2.25
        pi = np.full(K, 1.0 / K)
        resp = np.empty((n, K), np.float64)
        dens = np.empty(n, np.float64)
        ll = _em(x, w, mu, var, pi, resp, dens)
        drop = -1
        for k in range(K):
            if pi[k] < min_share and (drop < 0 or pi[k] < pi[drop]):
                drop = k
        if drop < 0:
            best = merge_distance * merge_distance
            for a in range(K):
                for b in range(a + 1, K):
                    d2 = 0.0
                    for t in range(3):
                        d = mu[a, t] - mu[b, t]
                        d2 += d * d / (var[a, t] + var[b, t])
                    if d2 < best:
                        best = d2
                        drop = a if pi[a] < pi[b] else b
        if drop < 0 or K == 1:
            return mu, var, pi, resp, dens, ll
        keep = np.empty((K - 1, 3), np.float64)
        q = 0
        for k in range(K):
            if k != drop:
                keep[q] = mu[k]
                q += 1
        mu = keep


@numba.njit(nogil=True, cache=True)
def separate_one(z, r, c, inten, sz, sr, sc, seed_fraction, merge_distance, min_share,
                 max_voxels, add_sigma, bic_factor, relative_noise):
    """Components (K) and the responsibilities (n, K) of one clique's pixels; K = 1
    (all ones) when it holds one spot.

    Seeds from the LoG; then, while the information criterion says so, one more
    component where the pixels most exceed the fitted mixture (a spot seen only as
    a shoulder): accepted when the smoothed excess there is above add_sigma of its
    Poisson scale, 2 (LL' - LL) > bic_factor * 7 log(sum I), and the new fit keeps
    every component (merge_distance, min_share)."""
    n = z.shape[0]
    lo = np.array([z.min(), r.min(), c.min()], np.int64)
    # The box reaches 2 voxels beyond the pixels: the seeds (at pixels) need the LoG
    # of their 26 neighbours, which needs the smoothed values one voxel further; each
    # of those sums every pixel within the kernel whatever the box (a pass along one
    # axis never mixes the others), so a box of the kernel's full reach gave the same
    # values at ~1.8x the voxels.
    pad = np.array([2, 2, 2], np.int64)
    x = np.empty((n, 3), np.float64)
    w = np.empty(n, np.float64)
    wsum = 0.0
    for p in range(n):
        x[p, 0], x[p, 1], x[p, 2] = z[p], r[p], c[p]
        w[p] = max(np.float64(inten[p]), 0.0)
        wsum += w[p]
    vol, occ = dense_box(z, r, c, w, lo, pad, max_voxels)  # (kept pixels: all > 0)
    if vol.shape[0] == 0:
        return 1, np.ones((n, 1), np.float64)
    seeds, _, smoothed = log_seeds(vol, occ, lo, pad, sz, sr, sc, seed_fraction)
    K = min(seeds.shape[0], KMAX)
    if K == 0:
        mu0 = np.zeros((1, 3), np.float64)
        for p in range(n):
            for a in range(3):
                mu0[0, a] += w[p] * x[p, a] / wsum
    else:
        mu0 = seeds[:K].copy()
    mu, _, _, resp, dens, ll = _fit(x, w, mu0, merge_distance, min_share)
    penalty = bic_factor * 7.0 * np.log(max(wsum, 2.0))
    while add_sigma > 0 and mu.shape[0] < KMAX:
        at, signif = residual_peak(z, r, c, w, dens, lo, pad, smoothed, sz, sr, sc,
                                   relative_noise)
        if signif < add_sigma:
            break
        K = mu.shape[0]
        more = np.empty((K + 1, 3), np.float64)
        more[:K] = mu
        more[K] = at
        mu2, _, _, resp2, dens2, ll2 = _fit(x, w, more, merge_distance, min_share)
        if mu2.shape[0] != K + 1 or 2.0 * (ll2 - ll) < penalty:
            break
        mu, resp, dens, ll = mu2, resp2, dens2, ll2
    K = mu.shape[0]
    if K < 2:
        return 1, np.ones((n, 1), np.float64)
    for p in range(n):  # negligible responsibilities go to the others
        tot = 0.0
        for k in range(K):
            if resp[p, k] < 1e-6:
                resp[p, k] = 0.0
            tot += resp[p, k]
        for k in range(K):
            resp[p, k] /= tot
    return K, resp


@numba.njit(nogil=True, cache=True)
def separate_cliques(pix_ptr, z, r, c, inten, member, nmembers, sz, sr, sc,
                     seed_fraction, merge_distance, min_share, max_voxels, add_sigma,
                     bic_factor, relative_noise, background):
    """Separate every clique (its pixels pix_ptr[i]:pix_ptr[i + 1], each with the row
    of its member 2D peak, `member`, in 0..nmembers-1).

    Returns K per clique, each component's centroid point rank (to order them),
    acc (nmembers, KMAX, NACC): each member's share of the additive sums per
    component (component k of the member's clique), and each component's
    integrated intensity from a Gaussian fitted to its share of the pixels
    (`spotfit.model_intensity`, net of `background`; NaN if none fits)."""
    ncl = pix_ptr.shape[0] - 1
    ncomp = np.ones(ncl, np.int64)
    zc = np.zeros((ncl, KMAX), np.float64)
    fit = np.full((ncl, KMAX), np.nan)
    acc = np.zeros((nmembers, KMAX, NACC), np.float64)
    for i in range(ncl):
        a, b = pix_ptr[i], pix_ptr[i + 1]
        K, resp = separate_one(z[a:b], r[a:b], c[a:b], inten[a:b], sz, sr, sc,
                               seed_fraction, merge_distance, min_share, max_voxels,
                               add_sigma, bic_factor, relative_noise)
        ncomp[i] = K
        for p in range(a, b):
            m = member[p]
            s = np.float64(r[p])
            f = np.float64(c[p])
            v = np.float64(inten[p])
            for k in range(K):
                q = resp[p - a, k]
                if K == 1:
                    q = 1.0
                sig = q * v
                acc[m, k, 0] += q
                acc[m, k, 1] += sig
                acc[m, k, 2] += q
                acc[m, k, 3] += sig
                acc[m, k, 4] += s * sig
                acc[m, k, 5] += f * sig
                acc[m, k, 6] += s * s * sig
                acc[m, k, 7] += f * f * sig
                acc[m, k, 8] += s * f * sig
                zc[i, k] += z[p] * sig
        for k in range(K):
            tot = 0.0
            for m2 in range(a, b):
                tot += resp[m2 - a, k] * inten[m2] if K > 1 else inten[m2]
            zc[i, k] = zc[i, k] / tot if tot != 0.0 else 0.0
        if K == 1:
            fit[i, 0] = model_intensity(z[a:b], r[a:b], c[a:b], inten[a:b],
                                        np.ones(b - a, np.float64), background, relative_noise)
        else:
            fit[i, :K] = deblended_intensities(z[a:b], r[a:b], c[a:b], inten[a:b], resp,
                                               background, relative_noise, DEBLEND_ROUNDS)
    return ncomp, zc, acc, fit
