"""Blob finding in a small dense 3D box around a clique's pixels (for `kernels.separate`):
Gaussian smoothing, the scale-normalised Laplacian of Gaussian and its local maxima
(the spot seeds), and where the pixels most exceed a fitted model (shoulders)."""

from __future__ import annotations

import numba
import numpy as np

KMAX = 8  # components per clique at most (seeds kept: the strongest 4 KMAX)


@numba.njit(nogil=True, cache=True)
def gauss1d(sigma):
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
def smooth(vol, sz, sr, sc):
    """Separable Gaussian smoothing of a 3D volume (zero outside): a pass per axis, each
    voxel added to its neighbours along the axis, whole rows of columns at a time (the
    inner loop runs along the contiguous axis). Every output voxel sums its sources in
    the order of their index along the pass's axis, whatever the loop order."""
    nz, nr, nc = vol.shape
    gz, hz = gauss1d(sz)
    gr, hr = gauss1d(sr)
    gc, hc = gauss1d(sc)
    b = np.zeros_like(vol)
    for i in range(nz):  # along z
        for t in range(max(-hz, -i), min(hz, nz - 1 - i) + 1):
            g = gz[t + hz]
            for j in range(nr):
                for k in range(nc):
                    b[i + t, j, k] += g * vol[i, j, k]
    a = np.zeros_like(vol)
    for i in range(nz):  # along rows
        for j in range(nr):
            for t in range(max(-hr, -j), min(hr, nr - 1 - j) + 1):
                g = gr[t + hr]
                for k in range(nc):
                    a[i, j + t, k] += g * b[i, j, k]
    b[:, :, :] = 0.0
    for i in range(nz):  # along columns: the sources of a voxel in ascending order
        for j in range(nr):
            for t in range(min(hc, nc - 1), max(-hc, -(nc - 1)) - 1, -1):
                g = gc[t + hc]
                for k in range(max(0, -t), min(nc, nc - t)):
                    b[i, j, k + t] += g * a[i, j, k]
    return b


@numba.njit(nogil=True, cache=True)
def dense_box(z, r, c, values, lo, pad, max_voxels):
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
def log_seeds(vol, occ, lo, pad, sz, sr, sc, seed_fraction):
    """Seed positions (k, 3) from LoG maxima at occupied voxels, strongest first, their
    LoG values, and the smoothed volume."""
    nz, nr, nc = vol.shape
    sm = smooth(vol, sz, sr, sc)
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
        return pos[:0], val[:0], sm
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
    return pos[:m][order], val[:m][order], sm


@numba.njit(nogil=True, cache=True)
def residual_peak(z, r, c, w, dens, lo, pad, smoothed, sz, sr, sc, relative_noise):
    """Where the smoothed excess of the pixels (w, whose smoothed box is `smoothed`)
    over the fitted model is largest (an occupied voxel), and that excess over its
    noise scale: Poisson plus a relative part (flat field, the model's own misfit).
    Smoothing is linear: the excess smoothed is `smoothed` less the model smoothed."""
    n = z.shape[0]
    shape = smoothed.shape
    wsum = 0.0
    for p in range(n):
        wsum += w[p]
    model = np.zeros(shape, np.float64)
    occ = np.zeros(shape, np.bool_)
    for p in range(n):
        i, j, k = z[p] - lo[0] + pad[0], r[p] - lo[1] + pad[1], c[p] - lo[2] + pad[2]
        model[i, j, k] = wsum * dens[p]
        occ[i, j, k] = True
    sm = smooth(model, sz, sr, sc)
    se = smoothed - sm
    # the smoothed excess is a weighted mean over ~m voxels: its noise scale is
    # sqrt((model + (relative_noise * model)^2) / m), m = 1 / sum(g^2) of the kernel
    m = 1.0
    for sig in (sz, sr, sc):
        g, h = gauss1d(sig)
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
