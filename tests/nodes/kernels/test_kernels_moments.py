"""peak_moments bit for bit against a plain Python accumulation in the same order.

The moments are float64 sums, so their last bits depend on the order of the
additions: per run of consecutive pixels with one label (in raster order), a
partial sum from 0, then the runs added into the peak's total in turn. This
pins that order down, so that a faster kernel keeps every stored value.
"""

import numpy as np
import pytest
from scipy import ndimage

from nodes.kernels.moments import peak_moments
from stream.core.item import PEAK_COLUMNS


def reference(row, col, intensity, label, npeaks):
    t = {k: np.zeros(npeaks, dt) for k, dt in PEAK_COLUMNS.items()}
    sums = np.zeros((npeaks, 6))  # s_I s_sI s_fI s_ssI s_ffI s_sfI
    t["bb_s0"][:] = 2147483647
    t["bb_f0"][:] = 2147483647
    t["bb_s1"][:] = -1
    t["bb_f1"][:] = -1
    t["max_intensity"][:] = -np.inf
    i, n = 0, len(row)
    while i < n:
        k = int(label[i]) - 1
        run = [0.0] * 6
        while i < n and int(label[i]) - 1 == k:
            s, f, v = float(row[i]), float(col[i]), float(intensity[i])
            sv, fv = s * v, f * v
            run[0] += v
            run[1] += sv
            run[2] += fv
            run[3] += s * sv
            run[4] += f * fv
            run[5] += s * fv
            t["npx"][k] += 1
            t["bb_s0"][k] = min(t["bb_s0"][k], row[i])
            t["bb_s1"][k] = max(t["bb_s1"][k], row[i])
            t["bb_f0"][k] = min(t["bb_f0"][k], col[i])
            t["bb_f1"][k] = max(t["bb_f1"][k], col[i])
            t["max_intensity"][k] = max(t["max_intensity"][k], intensity[i])
            i += 1
        for j in range(6):
            sums[k, j] += run[j]
    for j, name in enumerate(("s_I", "s_sI", "s_fI", "s_ssI", "s_ffI", "s_sfI")):
        t[name][:] = sums[:, j]
    t["s_1"][:] = t["npx"]
    t["sum_intensity"][:] = t["s_I"]
    with np.errstate(invalid="ignore", divide="ignore"):
        t["s_raw"][:] = np.where(t["s_I"] != 0, t["s_sI"] / t["s_I"], np.nan)
        t["f_raw"][:] = np.where(t["s_I"] != 0, t["s_fI"] / t["s_I"], np.nan)
    return t


def labelled(rng, shape, nblobs, offset=(0, 0)):
    """Raster-sorted pixels of random blobs (touching, single pixels, long thin ones), moved
    by `offset` (large coordinates: s * s * I needs more than float64's 53 bits)."""
    img = np.zeros(shape, bool)
    for _ in range(nblobs):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, 9, 2)
        img[r:r + h, c:c + w] |= rng.random((min(h, shape[0] - r), min(w, shape[1] - c))) < 0.8
    image, npeaks = ndimage.label(img, structure=np.ones((3, 3)))  # raster order of first pixel
    rs, cs = np.nonzero(img)
    row = (rs + offset[0]).astype(np.uint16)
    col = (cs + offset[1]).astype(np.uint16)
    labels = image[img].astype(np.int32)
    intensity = (rng.gamma(2.0, 50.0, row.size) * rng.choice([1e-3, 1.0, 1e3], row.size))
    return row, col, intensity.astype(np.float32), labels, npeaks


@pytest.mark.parametrize("seed", range(5))
def test_bit_identical_to_ordered_sums(seed):
    rng = np.random.default_rng(seed)
    shape = (60, 3000) if seed % 2 else (400, 90)
    offset = [(0, 0), (40000, 0), (0, 60000), (65000, 62000), (30000, 30000)][seed]
    row, col, intensity, labels, npeaks = labelled(rng, shape, 80, offset)
    if seed == 4:  # labels not in raster order of first pixel: runs interleave
        perm = rng.permutation(npeaks) + 1
        labels = perm[labels - 1].astype(np.int32)
    table = {k: np.full(npeaks, 7, dt) for k, dt in PEAK_COLUMNS.items()}
    peak_moments(row, col, intensity, labels, **table)
    expected = reference(row, col, intensity, labels, npeaks)
    for name in PEAK_COLUMNS:
        assert table[name].tobytes() == expected[name].tobytes(), name


def test_zero_intensity_peak():
    row = np.array([0, 0, 5], np.uint16)
    col = np.array([0, 1, 5], np.uint16)
    intensity = np.array([0.0, 0.0, 3.0], np.float32)
    labels = np.array([1, 1, 2], np.int32)
    table = {k: np.empty(2, dt) for k, dt in PEAK_COLUMNS.items()}
    peak_moments(row, col, intensity, labels, **table)
    assert np.isnan(table["s_raw"][0]) and np.isnan(table["f_raw"][0])
    assert table["s_raw"][1] == 5.0 and table["npx"].tolist() == [2, 1]
