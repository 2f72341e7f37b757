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

KMAX = 8  # components per clique at most
NACC = 9
_EM_ITER = 60
_VAR_FLOOR = 0.08  # a spot on one frame or one pixel row: 1/12 of a step squared


@numba.njit(nogil=True, cache=True)
def _gauss1d(sigma):
    if sigma <= 0.0:
        out = np.ones(1, np.float64)
        return out, 0
    h = int(np.ceil(3.0 * sigma))
    out = np.empty(2 * h + 1, np.float64)
    tot = 0.0
    for i in range(-h, h + 1):
        out[i + h] = np.exp(-0.5 * (i / sigma) ** 2)
        tot += out[i + h]
    for i in range(2 * h + 1):
        out[i] /= tot
    return out, h


@numba.njit(nogil=True, cache=True)
def _smooth(vol, sz, sr, sc):
    """Separable Gaussian smoothing of a 3D volume (zero outside)."""
    nz, nr, nc = vol.shape
    a = vol.copy()
    b = np.zeros_like(vol)
    for axis in range(3):
        sig = sz if axis == 0 else (sr if axis == 1 else sc)
        g, h = _gauss1d(sig)
        b[:, :, :] = 0.0
        for i in range(nz):
            for j in range(nr):
                for k in range(nc):
                    v = a[i, j, k]
                    if v == 0.0:
                        continue
                    for t in range(-h, h + 1):
                        w = g[t + h] * v
                        if axis == 0:
                            if 0 <= i + t < nz:
                                b[i + t, j, k] += w
                        elif axis == 1:
                            if 0 <= j + t < nr:
                                b[i, j + t, k] += w
                        else:
                            if 0 <= k + t < nc:
                                b[i, j, k + t] += w
        a, b = b, a
    return a


@numba.njit(nogil=True, cache=True)
def _box(z, r, c, values, lo, pad, max_voxels):
    """The dense box (padded) of the pixels' values, and which voxels hold a pixel;
    empty arrays when the box is larger than max_voxels."""
    n = z.shape[0]
    hi = np.zeros(3, np.int64)
    for p in range(n):
        hi[0] = max(hi[0], z[p] - lo[0])
        hi[1] = max(hi[1], r[p] - lo[1])
        hi[2] = max(hi[2], c[p] - lo[2])
    nz, nr, nc = hi[0] + 1 + 2 * pad[0], hi[1] + 1 + 2 * pad[1], hi[2] + 1 + 2 * pad[2]
    if nz * nr * nc > max_voxels:
        return np.zeros((0, 0, 0), np.float64), np.zeros((0, 0, 0), np.bool_)
    vol = np.zeros((nz, nr, nc), np.float64)
    occ = np.zeros((nz, nr, nc), np.bool_)
    for p in range(n):
        i, j, k = z[p] - lo[0] + pad[0], r[p] - lo[1] + pad[1], c[p] - lo[2] + pad[2]
        vol[i, j, k] += values[p]
        occ[i, j, k] = True
    return vol, occ


@numba.njit(nogil=True, cache=True)
def _seeds(vol, occ, lo, pad, sz, sr, sc, seed_fraction):
    """Seed positions (k, 3) from LoG maxima at occupied voxels, strongest first."""
    nz, nr, nc = vol.shape
    sm = _smooth(vol, sz, sr, sc)
    wz, wr, wc = sz * sz + 1.0, sr * sr + 1.0, sc * sc + 1.0
    blob = np.full((nz, nr, nc), -np.inf)
    top = 0.0
    for i in range(1, nz - 1):
        for j in range(1, nr - 1):
            for k in range(1, nc - 1):
                v = sm[i, j, k]
                d = -(wz * (sm[i - 1, j, k] + sm[i + 1, j, k] - 2 * v)
                      + wr * (sm[i, j - 1, k] + sm[i, j + 1, k] - 2 * v)
                      + wc * (sm[i, j, k - 1] + sm[i, j, k + 1] - 2 * v))
                blob[i, j, k] = d
                if occ[i, j, k] and d > top:
                    top = d
    pos = np.empty((KMAX * 4, 3), np.float64)
    val = np.empty(KMAX * 4, np.float64)
    m = 0
    if top <= 0.0:
        return pos[:0], val[:0]
    for i in range(1, nz - 1):
        for j in range(1, nr - 1):
            for k in range(1, nc - 1):
                d = blob[i, j, k]
                if not occ[i, j, k] or d < seed_fraction * top:
                    continue
                is_max = True
                for di in range(-1, 2):
                    for dj in range(-1, 2):
                        for dk in range(-1, 2):
                            if di == 0 and dj == 0 and dk == 0:
                                continue
                            e = blob[i + di, j + dj, k + dk]
                            # ties: the first in raster order wins
                            if e > d or (e == d and 9 * di + 3 * dj + dk < 0):
                                is_max = False
                if is_max:
                    if m == pos.shape[0]:  # keep the strongest
                        w = 0
                        for q in range(1, m):
                            if val[q] < val[w]:
                                w = q
                        if val[w] >= d:
                            continue
                        m -= 1
                        pos[w] = pos[m]
                        val[w] = val[m]
                    pos[m, 0] = i - pad[0] + lo[0]
                    pos[m, 1] = j - pad[1] + lo[1]
                    pos[m, 2] = k - pad[2] + lo[2]
                    val[m] = d
                    m += 1
    order = np.argsort(-val[:m], kind="mergesort")
    return pos[:m][order], val[:m][order]


@numba.njit(nogil=True, cache=True)
def _estep(x, w, mu, var, pi, resp, dens):
    """Responsibilities and mixture density per pixel; returns sum_p w_p log dens_p."""
    n, K = x.shape[0], mu.shape[0]
    logp = np.empty(K, np.float64)
    norm = -1.5 * np.log(2 * np.pi)
    ll = 0.0
    for p in range(n):
        best = -np.inf
        for k in range(K):
            q = np.log(pi[k])
            for a in range(3):
                d = x[p, a] - mu[k, a]
                q -= 0.5 * (d * d / var[k, a] + np.log(var[k, a]))
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
    variances move less than 1e-5): resp (n, K) and the mixture density at each
    pixel (dens) of the final parameters; returns sum_p w_p log dens_p."""
    n, K = x.shape[0], mu.shape[0]
    wsum = 0.0
    for p in range(n):
        wsum += w[p]
    for _ in range(_EM_ITER):
        _estep(x, w, mu, var, pi, resp, dens)
        shift = 0.0
        for k in range(K):  # M step
            s0 = 0.0
            s1 = np.zeros(3)
            for p in range(n):
                q = w[p] * resp[p, k]
                s0 += q
                for a in range(3):
                    s1[a] += q * x[p, a]
            if s0 <= 0.0:
                pi[k] = 1e-12
                continue
            pi[k] = s0 / wsum
            for a in range(3):
                m_new = s1[a] / s0
                shift = max(shift, abs(m_new - mu[k, a]))
                mu[k, a] = m_new
            s2 = np.zeros(3)
            for p in range(n):
                q = w[p] * resp[p, k]
                for a in range(3):
                    d = x[p, a] - mu[k, a]
                    s2[a] += q * d * d
            for a in range(3):
                v_new = max(s2[a] / s0, _VAR_FLOOR)
                shift = max(shift, abs(v_new - var[k, a]))
                var[k, a] = v_new
        if shift < 1e-5:
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
def _residual_peak(z, r, c, w, dens, lo, pad, shape, sz, sr, sc, relative_noise):
    """Where the smoothed excess of the pixels over the fitted model is largest
    (an occupied voxel), and that excess over its noise scale: Poisson plus a
    relative part (flat field, the model's own misfit)."""
    n = z.shape[0]
    wsum = 0.0
    for p in range(n):
        wsum += w[p]
    excess = np.zeros(shape, np.float64)
    model = np.zeros(shape, np.float64)
    occ = np.zeros(shape, np.bool_)
    for p in range(n):
        i, j, k = z[p] - lo[0] + pad[0], r[p] - lo[1] + pad[1], c[p] - lo[2] + pad[2]
        excess[i, j, k] = w[p] - wsum * dens[p]
        model[i, j, k] = wsum * dens[p]
        occ[i, j, k] = True
    se = _smooth(excess, sz, sr, sc)
    sm = _smooth(model, sz, sr, sc)
    # the smoothed excess is a weighted mean over ~m voxels: its noise scale is
    # sqrt((model + (relative_noise * model)^2) / m), m = 1 / sum(g^2) of the kernel
    m = 1.0
    for sig in (sz, sr, sc):
        g, h = _gauss1d(sig)
        m /= np.sum(g * g)
    best = -np.inf
    at = np.zeros(3, np.float64)
    for i in range(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                if occ[i, j, k]:
                    v2 = sm[i, j, k] + (relative_noise * sm[i, j, k]) ** 2 + 1.0
                    v = se[i, j, k] * np.sqrt(m / v2)
                    if v > best:
                        best = v
                        at[0] = i - pad[0] + lo[0]
                        at[1] = j - pad[1] + lo[1]
                        at[2] = k - pad[2] + lo[2]
    return at, best


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
    pad = np.array([int(np.ceil(3 * sz)) + 1, int(np.ceil(3 * sr)) + 1,
                    int(np.ceil(3 * sc)) + 1], np.int64)
    vol, occ = _box(z, r, c, inten.astype(np.float64), lo, pad, max_voxels)
    if vol.shape[0] == 0:
        return 1, np.ones((n, 1), np.float64)
    seeds, _ = _seeds(vol, occ, lo, pad, sz, sr, sc, seed_fraction)
    x = np.empty((n, 3), np.float64)
    w = np.empty(n, np.float64)
    wsum = 0.0
    for p in range(n):
        x[p, 0], x[p, 1], x[p, 2] = z[p], r[p], c[p]
        w[p] = max(np.float64(inten[p]), 0.0)
        wsum += w[p]
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
    shape = (vol.shape[0], vol.shape[1], vol.shape[2])
    while add_sigma > 0 and mu.shape[0] < KMAX:
        at, signif = _residual_peak(z, r, c, w, dens, lo, pad, shape, sz, sr, sc,
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
                     bic_factor, relative_noise):
    """Separate every clique (its pixels pix_ptr[i]:pix_ptr[i + 1], each with the row
    of its member 2D peak, `member`, in 0..nmembers-1).

    Returns K per clique, each component's centroid point rank (to order them),
    and acc (nmembers, KMAX, NACC): each member's share of the additive sums per
    component (component k of the member's clique)."""
    ncl = pix_ptr.shape[0] - 1
    ncomp = np.ones(ncl, np.int64)
    zc = np.zeros((ncl, KMAX), np.float64)
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
    return ncomp, zc, acc
