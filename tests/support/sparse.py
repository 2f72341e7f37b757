"""ImageD11 sparse recordings for the block replay, split and relink tests, and the
comparison of whole output files."""

from __future__ import annotations

import h5py
import numpy as np
from scipy import ndimage

from stream.run.runner import GAUGES
from tests.support.paths import CONFIGS

SHAPE = (40, 48)


def write_sparse(path, nframes=60, seed=0, empty_every=7, shape=SHAPE):
    """An ImageD11 sparse file of smoothed noise cut into blobs that last a few frames,
    with some empty frames."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((nframes, *shape)), (1.2, 1.5, 1.5))
    keep = noise > np.quantile(noise, 0.9)
    keep[::empty_every] = False
    frame, row, col = np.nonzero(keep)
    intensity = rng.integers(1, 1000, frame.shape[0]).astype(np.uint16)
    with h5py.File(path, "w") as f:
        g = f.create_group("1.1")
        g.attrs.update(itype="uint16", nframes=nframes, shape0=shape[0], shape1=shape[1])
        g["row"], g["col"] = row.astype(np.uint16), col.astype(np.uint16)
        g["intensity"], g["frame"] = intensity, frame.astype(np.uint32)
        g["nnz"] = np.bincount(frame, minlength=nframes).astype(np.int64)
        g["measurement/rot_center"] = 0.25 * np.arange(nframes)
    return path


def flat_tables(path) -> dict[str, np.ndarray]:
    """Every 1-D dataset under entry/ by its path, the counters (not the gauges) and the status."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            # the resume state is written on the flush interval: there or not by time
            if name.startswith("process/checkpoint/"):
                return
            if isinstance(obj, h5py.Dataset) and obj.ndim == 1:
                out[name] = obj.asstr()[()] if obj.dtype.kind == "O" else obj[()]
        f["entry"].visititems(visit)
        out["counters"] = {k: v for k, v in f["entry/process/counters"].attrs.items()
                           if k not in GAUGES}  # measured: RSS, lag ... differ
        out["status"] = f["entry"].attrs["status"]
    return out


# the counters of what became of the points; the others (lag, overruns, rss, workers
# reassigned or restarted) describe the executor that ran them, not the results
RESULT_COUNTERS = ("received", "accepted", "processed", "linked", "written", "missing", "bad",
                   "duplicate", "malformed", "rejected", "cliques")


def assert_same_file(a, b):
    """Two output files hold the same datasets, bit for bit, and the same result counters."""
    ta, tb = flat_tables(a), flat_tables(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        if k == "counters":
            assert {c: ta[k].get(c) for c in RESULT_COUNTERS} == \
                {c: tb[k].get(c) for c in RESULT_COUNTERS}, k
        elif isinstance(ta[k], np.ndarray):
            assert ta[k].dtype == tb[k].dtype, k
            assert np.array_equal(ta[k], tb[k], equal_nan=ta[k].dtype.kind == "f"), k
        else:
            assert ta[k] == tb[k], k


def config_file(tmp_path, linker: str, min_pixels: int = 1):
    """configs/imaged11.toml with another [linker] criterion and label min_pixels."""
    text = (CONFIGS / "imaged11.toml").read_text()
    text = text.replace("min_pixels = 1 ", f"min_pixels = {min_pixels} ")
    text = text.replace('criterion = "any_pixel"', linker)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path
