"""Block replay of sparse recordings writes the file the point-by-point replay writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.config.schema import Config
from stream.core.trajectory import make_trajectory
from stream.offline.batch import TrajectoryWalker, blocks_between, open_blocks, replay_blocks
from stream.sources.files.imaged11 import read_imaged11_blocks
from tests.support.paths import CONFIGS
from tests.support.sparse import assert_same_file, config_file, flat_tables, write_sparse


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
    assert flat_tables(whole)["detector/cliques/clique_id"].shape[0] > 10


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


def test_a_range_of_points_replays_in_blocks_as_point_by_point(tmp_path):
    """--first/--last (a chunk of a cluster replay) keep the block replay, which went
    point by point (13x slower on a sparse scan in chunks) before."""
    src = write_sparse(tmp_path / "in.h5", nframes=90)
    config = config_file(tmp_path, 'criterion = "any_pixel"', 1)
    assert open_blocks([str(src)], Config.load(config), first=20, last=59) is not None
    args = ["replay", str(src), "--config", str(config), "--quiet", "--first", "20",
            "--last", "59"]
    assert main([*args, "--per-point", "--output", str(tmp_path / "pp.h5")]) == 0
    assert main([*args, "--output", str(tmp_path / "blocks.h5")]) == 0
    assert_same_file(tmp_path / "pp.h5", tmp_path / "blocks.h5")
    # small blocks whose borders fall inside and outside the range
    _, whole = read_imaged11_blocks(src, block_pixels=10**9)
    (whole,) = list(whole)
    _, small = read_imaged11_blocks(src, block_pixels=150)
    got = list(blocks_between(small, 20, 59))
    assert len(got) > 2 and got[0].first == 0
    assert [b.first for b in got[1:]] == list(np.cumsum([b.n for b in got])[:-1])
    ptr = np.concatenate([[0], np.cumsum(whole.nnz)])
    assert np.array_equal(np.concatenate([b.nnz for b in got]), whole.nnz[20:60])
    for key in ("row", "col", "intensity"):
        assert np.array_equal(np.concatenate([getattr(b, key) for b in got]),
                              getattr(whole, key)[ptr[20]:ptr[60]])
