"""The 3D smoothing of `kernels.blobs3d` against scipy's separable correlation with the
same truncated, normalised Gaussian weights (zero outside the box)."""

import numpy as np
import pytest
from scipy import ndimage

from nodes.kernels.blobs3d import gauss1d, smooth


def reference(vol: np.ndarray, sigmas: tuple[float, float, float]) -> np.ndarray:
    out = vol
    for axis, sigma in enumerate(sigmas):
        weights, _ = gauss1d(sigma)
        out = ndimage.correlate1d(out, weights, axis=axis, mode="constant", cval=0.0)
    return out


@pytest.mark.parametrize("shape, sigmas", [((5, 9, 11), (0.7, 1.0, 1.0)),
                                           ((1, 4, 3), (0.7, 1.0, 1.0)),  # box < kernel
                                           ((6, 7, 8), (0.0, 1.5, 0.5)),
                                           ((3, 20, 2), (2.0, 0.7, 3.0))])
def test_smooth_equals_separable_correlation(shape, sigmas):
    rng = np.random.default_rng(sum(shape))
    vol = rng.exponential(10.0, shape) * (rng.random(shape) < 0.4)  # sparse, as a clique
    got = smooth(vol, *sigmas)
    np.testing.assert_allclose(got, reference(vol, sigmas), rtol=1e-12, atol=1e-12)
    assert got.sum() <= vol.sum() * (1 + 1e-12)  # mass leaves at the borders only


def test_smooth_keeps_the_mass_of_a_voxel_far_from_the_borders():
    vol = np.zeros((15, 15, 15))
    vol[7, 7, 7] = 3.0
    got = smooth(vol, 0.7, 1.0, 1.0)
    assert got.sum() == pytest.approx(3.0, rel=1e-12)
    assert np.unravel_index(got.argmax(), got.shape) == (7, 7, 7)
