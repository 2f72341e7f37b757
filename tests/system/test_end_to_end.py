"""End to end with real parts: a sender process streams a simulated scan over tcp
loopback into `peakstream run` (a subprocess); the HDF5 file is read back."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from stream.sources.simulate import Simulation, send_scan, write_scan
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.truth import score
from stream.store.reader import load, summary
from tests.support.paths import CONFIGS, ROOT
from tests.support.processes import simulate_send

pytestmark = pytest.mark.system  # `peakstream run` and `simulate --send` subprocesses

SIM = ["--points", "60", "--shape", "128", "160", "--spots", "24", "--seed", "3"]
SIMCONF = SimConfig(npoints=60, shape=(128, 160), spots=24, seed=3)


def same_tables(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


def test_live_scan_finds_every_isolated_spot(run_process, tmp_path):
    run = run_process(CONFIGS / "simulated.toml", "--scans", "1")
    sent = simulate_send(run.endpoint, *SIM, "--scan-id", "e2e-1", "--rate", "500")
    assert sent.returncode == 0, sent.stderr
    rc, out, err = run.wait()
    assert rc == 0, err
    path = tmp_path / "out" / "e2e-1.h5"
    s = summary(path)
    assert (s["status"], s["points"], s["points_ok"], s["points_missing"]) == \
        ("success", 60, 60, 0)
    assert "e2e-1" in out and "cliques" in out
    t = load(path)
    # every kept pixel belongs to one 2D peak, every 2D peak to one clique
    assert t["sparse"]["nnz"].sum() == len(t["sparse"]["row"]) == t["peaks2d"]["npx"].sum()
    assert (t["peaks2d"]["clique_id"] >= 0).all()
    assert t["cliques"]["n2d"].sum() == len(t["peaks2d"]["npx"])
    assert np.array_equal(np.sort(t["cliques"]["clique_id"]), np.arange(s["cliques"]))
    # clique moments are the sums of their members'
    sums = np.bincount(t["peaks2d"]["clique_id"], weights=t["peaks2d"]["s_I"])
    np.testing.assert_allclose(sums[t["cliques"]["clique_id"]], t["cliques"]["s_I"], rtol=1e-12)
    truth = Simulation(SIMCONF).truth
    found, total = score(t["cliques"], truth, "clean")
    assert total >= 10
    assert found == total, f"{found}/{total} isolated spots found as exactly one clique"


def test_shuffled_live_and_replayed_give_identical_cliques(run_process, tmp_path):
    sim = Simulation(SIMCONF)
    # one processor per scan: two senders' messages would interleave on one PULL socket
    first = run_process(CONFIGS / "simulated.toml", "--scans", "1")
    send_scan(sim, first.endpoint, "in-order")
    rc, out, err = first.wait()
    assert rc == 0, err
    order = list(range(SIMCONF.npoints))
    rng = random.Random(7)
    for i in range(0, len(order) - 8, 8):  # shuffled within blocks of 8 < reorder window
        block = order[i:i + 8]
        rng.shuffle(block)
        order[i:i + 8] = block
    assert order != sorted(order)
    second = run_process(CONFIGS / "simulated.toml", "--scans", "1")
    send_scan(sim, second.endpoint, "shuffled", order=order)
    rc, out, err = second.wait()
    assert rc == 0, err

    recorded = tmp_path / "scan.h5"
    write_scan(sim, recorded, "replayed")
    replayed = tmp_path / "replayed.h5"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "replay", str(recorded), "--config",
                        str(CONFIGS / "simulated.toml"), "--output", str(replayed), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr

    a = load(tmp_path / "out" / "in-order.h5")
    b = load(tmp_path / "out" / "shuffled.h5")
    c = load(replayed)
    assert len(a["cliques"]["clique_id"]) > 10
    for other in (b, c):
        same_tables(a["cliques"], other["cliques"])
        same_tables(a["peaks2d"], other["peaks2d"])
        same_tables(a["overlaps"], other["overlaps"])
        same_tables(a["sparse"], other["sparse"])
