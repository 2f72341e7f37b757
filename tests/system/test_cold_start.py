"""A cold start loses nothing: with an empty numba cache (a fresh install), `peakstream
run` and `peakstream daemon` compile their kernels before they bind the data socket, and
a sender that starts sending at once waits in ZeroMQ's queue: every point arrives and the
scan ends success. The daemon answers `status` with "warming" meanwhile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from stream.service.control import request
from stream.sources.simulate import Simulation, send_scan
from stream.sources.simulate.config import SimConfig
from stream.store.reader import load, summary
from tests.support.daemon import daemon_config, wait_until
from tests.support.paths import ROOT
from tests.support.ports import free_port

pytestmark = pytest.mark.system
SIM = SimConfig(npoints=120, shape=(128, 160), spots=30, seed=4)
WARMUP = '[source]\nwarmup = ["uint16/raw"]\n'


def cold_env(tmp_path) -> dict[str, str]:
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache)}


def send_early(endpoint: str) -> tuple[threading.Thread, list[int]]:
    """Send the scan from a thread, as a detector would: its PUSH socket queues the
    messages until the processor binds, and keeps them (linger) for as long as a
    cold compile may take."""
    sent: list[int] = []
    thread = threading.Thread(target=lambda: sent.append(send_scan(
        Simulation(SIM), endpoint, "cold", linger_ms=1_800_000)), daemon=True)
    thread.start()
    return thread, sent


def check_whole(path) -> None:
    s = summary(path)
    assert s["status"] == "success", s
    assert (s["points"], s["points_ok"]) == (SIM.npoints, SIM.npoints)
    assert np.array_equal(load(path)["points"]["point_id"], np.arange(SIM.npoints))


def test_run_cold_start_loses_no_point(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = daemon_config(tmp_path, WARMUP)
    err = tmp_path / "run.stderr"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", str(cfg),
                                 "--listen", endpoint, "--output", str(tmp_path / "out"),
                                 "--scans", "1"], cwd=ROOT, env=cold_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            sender, sent = send_early(endpoint)  # at once: nothing is bound yet
            assert proc.wait(1800) == 0, err.read_text()
            sender.join(60)
        finally:
            proc.kill()
    assert sent == [SIM.npoints]
    text = err.read_text()
    assert re.search(r"run: \d+ kernels ready in [\d.]+ s \(\d+ compiled", text), text
    assert text.index("kernels ready") < text.index("listening on")
    check_whole(tmp_path / "out" / "cold.h5")


def test_daemon_says_warming_and_loses_no_point(tmp_path):
    endpoint, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    cfg = daemon_config(tmp_path, WARMUP)
    err = tmp_path / "daemon.stderr"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "daemon", str(cfg),
                                 "--listen", endpoint, "--control", control, "--live", "",
                                 "--output", str(tmp_path / "out")], cwd=ROOT,
                                env=cold_env(tmp_path), stdout=subprocess.DEVNULL,
                                stderr=stderr)
        try:
            wait_until(lambda: "status: warming" in err.read_text() or proc.poll() is not None,
                       600, 0.05, "the control socket")
            assert request(control, {"cmd": "status"}, timeout=30)["state"] == "warming"
            sender, sent = send_early(endpoint)
            wait_until(lambda: request(control, {"cmd": "status"}, timeout=30)["scans_done"]
                       >= 1, 1800, 0.5, "the scan to end")
            proc.terminate()
            assert proc.wait(120) == 0
            sender.join(60)
        finally:
            proc.kill()
    assert sent == [SIM.npoints]
    check_whole(tmp_path / "out" / "cold.h5")


def test_cluster_replay_compiles_once_with_a_line_before_forking_its_workers(tmp_path):
    """A cold `replay --cluster local:2`: the command warms the kernels up itself (its
    line before the cluster's), the forked workers start with them, the files equal a
    serial replay's, and a second run (the cache warm) says nothing of kernels."""
    from stream.sources.simulate import write_scan
    from tests.support.flow import assert_same_tables, tables

    cfg = daemon_config(tmp_path, WARMUP, name="replay.toml")
    inputs = []
    for i in range(2):
        path = tmp_path / f"c{i}.h5"
        write_scan(Simulation(SimConfig(npoints=30, shape=(96, 128), spots=6, seed=i)), path,
                   f"c{i}")
        inputs.append(str(path))
    env = cold_env(tmp_path)

    def replay(out: str, *extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "stream.cli", "replay", *inputs,
                               "--config", str(cfg), "--output", str(tmp_path / out), *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr
        return done.stderr

    err = replay("cluster", "--cluster", "local:2")
    assert re.search(r"peakstream replay: \d+ kernels ready in [\d.]+ s \(\d+ compiled", err), err
    assert err.index("kernels ready") < err.index("dashboard http")
    replay("serial")
    for name in ("c0.h5", "c1.h5"):
        assert_same_tables(tables(tmp_path / "serial" / name), tables(tmp_path / "cluster" / name))
    err = replay("again", "--cluster", "local:2")
    assert "kernels" not in err and "dashboard http" in err
