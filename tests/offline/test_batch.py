"""Block replay of sparse recordings writes the file the point-by-point replay writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import ndimage

from stream.cli.main import main
from stream.config.schema import Config
from stream.core.trajectory import make_trajectory
from stream.offline.batch import TrajectoryWalker, replay_blocks
from stream.run.runner import GAUGES
from stream.sources.files.imaged11 import read_imaged11_blocks
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


def tables(path) -> dict[str, np.ndarray]:
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


def assert_same_file(a, b):
    ta, tb = tables(a), tables(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        if isinstance(ta[k], np.ndarray):
            assert ta[k].dtype == tb[k].dtype, k
            assert np.array_equal(ta[k], tb[k], equal_nan=ta[k].dtype.kind == "f"), k
        else:
            assert ta[k] == tb[k], k


def config_file(tmp_path, linker: str, min_pixels: int = 1):
    text = (CONFIGS / "imaged11.toml").read_text()
    text = text.replace("min_pixels = 1 ", f"min_pixels = {min_pixels} ")
    text = text.replace('criterion = "any_pixel"', linker)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("linker, min_pixels", [
    ('criterion = "any_pixel"', 1),
    ('criterion = "fraction"\nfraction = 0.4', 2),
    ('criterion = "distance"\ndistance = 2.5', 1),
    ('criterion = ["fraction", "distance"]\nfraction = 0.3\ndistance = 2.0', 3),
])
def test_blocks_write_the_per_point_file(tmp_path, linker, min_pixels):
    src = write_sparse(tmp_path / "in.h5", seed=min_pixels)
    config = config_file(tmp_path, linker, min_pixels)
    per_point = tmp_path / "pp.h5"
    assert main(["replay", str(src), "--config", str(config), "--per-point", "--quiet",
                 "--output", str(per_point)]) == 0
    whole = tmp_path / "whole.h5"
    assert main(["replay", str(src), "--config", str(config), "--quiet",
                 "--output", str(whole)]) == 0
    assert_same_file(per_point, whole)
    # small blocks: the frontier and open cliques carry over from block to block
    start, blocks = read_imaged11_blocks(src, block_pixels=150)
    blocks = list(blocks)
    assert len(blocks) > 5
    small = tmp_path / "small.h5"
    replay_blocks(Config.load(config), start, iter(blocks), small)
    assert_same_file(per_point, small)
    assert tables(whole)["detector/cliques/clique_id"].shape[0] > 10


def test_preset_replays_in_blocks_and_per_point(tmp_path):
    src = write_sparse(tmp_path / "in.h5", nframes=30)
    outs = []
    for extra in ([], ["--per-point"]):
        out = tmp_path / f"out{len(extra)}.h5"
        assert main(["replay", str(src), "--preset", "imaged11", "--quiet", "--output",
                     str(out), *extra]) == 0
        outs.append(out)
    assert_same_file(*outs)
    with h5py.File(outs[0]) as f:
        assert "any_pixel" in f["entry/process/config"].asstr()[()]
    assert main(["replay", str(src), "--preset", "nonesuch", "--output",
                 str(tmp_path / "x.h5")]) == 2
    assert main(["replay", str(src), "--preset", "imaged11", "--config",
                 str(CONFIGS / "imaged11.toml"), "--output", str(tmp_path / "y.h5")]) == 2


@pytest.mark.parametrize("npoints", [None, 90])
def test_sweep_walk_in_arrays_equals_the_trajectory_point_by_point(npoints):
    rng = np.random.default_rng(4)
    omega = 0.1 * np.arange(90)
    omega[rng.choice(90, 8, replace=False)] = np.nan  # flagged: never linked
    ok = rng.random(90) > 0.1  # missing or bad points
    spec = {"kind": "sweep", "fast": "omega"}
    fast = TrajectoryWalker(make_trajectory(spec, npoints, ["omega"]))
    slow = TrajectoryWalker(make_trajectory(spec, npoints, ["omega"]))
    for first, last in ((0, 1), (1, 40), (40, 41), (41, 90)):
        s = slice(first, last)
        a = fast.block(first, ok[s], {"omega": omega[s]})
        b = slow._any_block(first, ok[s], {"omega": omega[s]})
        assert a.flags == b.flags
        assert np.array_equal(a.link_a, b.link_a) and np.array_equal(a.link_b, b.link_b)
        assert a.kind == b.kind
        assert np.array_equal(a.close_at, b.close_at)
    assert any(a.flags)
