"""The same scan live (a daemon over sockets) and replayed from its file gives the
same per-point patterns in the output file and the same diff_map-style map."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from stream.maps.build import build_maps
from stream.maps.grid import RESULT_PATH, MapGrid
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.file import write_scan
from tests.support.daemon import (
    Sender,
    completed,
    daemon_config,
)
from tests.support.paths import CONFIGS, ROOT

pytestmark = pytest.mark.system  # a `peakstream daemon` subprocess

SIM = SimConfig(npoints=40, shape=(128, 160), spots=12, seed=4)


def test_live_and_replay_give_the_same_map(daemon, tmp_path):
    cfg = daemon_config(tmp_path, '[workers]\nkind = "threads"\ncount = 2\n',
                        base=CONFIGS / "diffmap.toml")
    sim = Simulation(SIM)
    d = daemon(cfg, output=tmp_path / "live")
    s = Sender(d.endpoint, sim)
    s.scan("m")
    s.close()
    live = tmp_path / "live" / "m.h5"
    assert completed(live) == "success"
    rec = tmp_path / "rec.h5"
    write_scan(sim, rec, "m")
    replayed = tmp_path / "replay.h5"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "replay", str(rec), "--config",
                        str(cfg), "--output", str(replayed), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    patterns = []
    for path in (live, replayed):
        with h5py.File(path, "r") as f:
            det = f["entry/points"].parent[next(k for k in f["entry"]
                                                if k not in ("process", "points"))]
            patterns.append((det["integrate1d"][()], det["integrate1d_radial"][()],
                             det["integrate1d_radial"].attrs["units"]))
    (a, ra, ua), (b, rb, ub) = patterns
    assert a.shape == (SIM.npoints, 1000) and np.isfinite(a).all() and a.max() > 0
    assert np.array_equal(a, b) and np.array_equal(ra, rb) and ua == ub
    maps = []
    for path in (live, replayed):
        out = path.with_suffix(".map.h5")
        build_maps(path, out, grid=MapGrid(nfast=8))
        with h5py.File(out, "r") as f:
            res = f[RESULT_PATH]
            maps.append((res["intensity"][()], res["map_ptr"][()]))
    assert maps[0][0].shape == (5, 8, 1000)
    assert np.array_equal(maps[0][0], maps[1][0]) and np.array_equal(maps[0][1], maps[1][1])
    assert np.array_equal(maps[0][0].reshape(-1, 1000), a)  # point i at row i // 8, col i % 8
