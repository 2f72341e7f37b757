"""Workers: inline, threads and processes give the same file, bit for bit, over a real
socket into `peakstream run`; a worker killed (or hung) mid-scan loses no point."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from stream.config import Config
from stream.dispatch import InlineExecutor, default_count, queue_bound
from stream.item import Item, SparseFrame, empty_peaks
from stream.sources.simulate import Simulation, send_scan
from stream.workers import decode_result, encode_result

from .conftest import ROOT
from .flow_support import (
    SIMCONF,
    assert_same_tables,
    reference_tables,
    run_scan,
    tables,
    workers_config,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_tables(tmp_path_factory.mktemp("ref"))


def test_result_encoding_round_trips_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 50
    sparse = SparseFrame((64, 80), np.sort(rng.integers(0, 64, n)).astype(np.uint16),
                         rng.integers(0, 80, n).astype(np.uint16),
                         rng.normal(size=n).astype(np.float32),
                         rng.integers(1, 5, n).astype(np.int32), 4)
    peaks = {k: rng.normal(size=4).astype(v.dtype) for k, v in empty_peaks().items()}
    item = Item(7, "eiger", 1.5, {"omega": 0.25, "dty": float("nan")}, {"monitor": 1e4},
                sparse=sparse, peaks=peaks, outputs={"roi": np.arange(6.0).reshape(2, 3)},
                flags=["threshold raised"])
    res = decode_result([bytes(p) for p in encode_result(3, 1, item, "ok")])
    assert (res.seq, res.scan, res.point_id, res.status) == (3, 1, 7, "ok")
    got = res.item
    assert (got.time, got.counters, got.flags) == (1.5, {"monitor": 1e4}, ["threshold raised"])
    assert got.motors["omega"] == 0.25 and np.isnan(got.motors["dty"])
    for k in ("row", "col", "intensity", "label"):
        assert getattr(got.sparse, k).dtype == getattr(sparse, k).dtype
        assert np.array_equal(getattr(got.sparse, k), getattr(sparse, k)), k
    assert (got.sparse.shape, got.sparse.npeaks) == ((64, 80), 4)
    for k, v in peaks.items():
        assert got.peaks[k].dtype == v.dtype and np.array_equal(got.peaks[k], v), k
    assert np.array_equal(got.outputs["roi"], item.outputs["roi"])

    bad = decode_result(encode_result(4, 1, Item(8, "eiger", 2.0), "bad", "node label: boom"))
    assert (bad.status, bad.reason, bad.item.sparse, bad.item.time) == \
        ("bad", "node label: boom", None, 2.0)


def test_worker_counts_and_queue_bound():
    assert default_count() == max(1, len(os.sched_getaffinity(0)) - 1)
    config = Config({"workers": {"kind": "threads", "count": 3}})
    assert queue_bound(config) == 12
    assert queue_bound(Config({"workers": {"kind": "threads", "count": 1}})) == 8
    assert queue_bound(Config({"workers": {"kind": "threads", "queue": 2}})) == 2
    assert isinstance(InlineExecutor(Config({})).worker.pipeline.chain, list)


@pytest.mark.parametrize("kind", ["inline", "threads", "processes"])
def test_inline_threads_processes_write_identical_files(run_process, tmp_path, reference,
                                                        kind):
    err, t = run_scan(run_process, workers_config(tmp_path, kind), f"w-{kind}", rate=400)
    assert len(t["cliques"]["clique_id"]) > 10
    assert_same_tables(reference, t)
    c = t["counters"]
    assert c["received"] == c["accepted"] == c["processed"] == c["linked"] == c["written"] \
        == SIMCONF.npoints
    assert c["missing"] == c["bad"] == c["reassigned"] == 0


def _worker_pids(run, count: int, limit: float = 60.0) -> list[int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pids = [p.pid for p in psutil.Process(run.proc.pid).children()
                if "stream.workers" in " ".join(p.cmdline())]
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError("the worker processes did not start")


class LiveRun:
    """`peakstream -v run` whose log lines the test can wait for while it runs."""

    def __init__(self, config, output, *args: str):
        cmd = [sys.executable, "-m", "stream.cli", "-v", "run", str(config), "--listen",
               "tcp://127.0.0.1:0", "--output", str(output), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.endpoint = re.search(r"listening on (tcp://\S+),",
                                      self.wait_for(", writing to")).group(1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (it closes its workers and files), SIGKILL if that does not do."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its workers follow their parent

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, count: int = 1, limit: float = 120.0) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if text in line]
            if len(found) >= count:
                return found[-1]
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {text!r} in:\n{''.join(self.lines)}")

    def wait(self, limit: float = 120.0) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.reader.join(timeout=10)
            self.proc.stdout.close()
        return self.proc.returncode, "".join(self.lines)


def test_killed_and_hung_workers_lose_no_point(tmp_path, reference):
    config = workers_config(tmp_path, "processes",
                            "heartbeat = 0.1\nheartbeat_timeout = 1.0", name="kill")
    run = LiveRun(config, tmp_path / "out", "--scans", "1")
    killed = hung = None
    try:
        run.wait_for("ready (2 credits)", count=2)  # both workers up
        killed, hung = _worker_pids(run, 2)
        sender = threading.Thread(target=send_scan, args=(Simulation(SIMCONF), run.endpoint,
                                                          "w-kill"), kwargs={"rate": 30})
        sender.start()
        time.sleep(0.5)
        os.kill(killed, signal.SIGKILL)  # its process ends: seen at once
        time.sleep(0.5)
        os.kill(hung, signal.SIGSTOP)  # silent, holding points: seen when heartbeats stop
        sender.join(timeout=120)
        rc, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.stop()
        for pid in (killed, hung):  # a stopped worker would never see its parent go
            try:
                if pid is not None and "stream.workers" in psutil.Process(pid).cmdline():
                    os.kill(pid, signal.SIGKILL)
            except psutil.Error:
                pass  # gone
    assert rc == 0, err
    t = tables(tmp_path / "out" / "w-kill.h5")
    assert_same_tables(reference, t)
    c = t["counters"]
    assert c["linked"] == c["written"] == c["processed"] == SIMCONF.npoints
    assert c["missing"] == c["bad"] == 0
    assert c["restarted"] >= 1, c  # (the hung one is ended, and started again, later)
    assert c["reassigned"] >= 1, c  # the hung worker held points, another did them
    assert f"worker pid {killed} lost (its process ended" in err
    assert f"worker pid {hung} lost (no heartbeat" in err


def test_points_are_bad_not_lost_when_no_worker_is_left():
    from stream.dispatch import Dispatcher
    from stream.message import encode
    from stream.workers import decode_result

    sim = Simulation(SIMCONF)
    config = Config({})
    d = Dispatcher(config, "processes", 1, respawn=0, heartbeat=0.1, timeout=1.0)
    try:
        d.children[0].kill()  # before it ever said hello; no restarts allowed
        d.start_scan(1, encode(sim.start("gone")), "eiger", 1 << 26)
        d.submit(0, 1, 0, encode(sim.point(0, "gone")))
        results = []
        deadline = time.monotonic() + 30
        while not results and time.monotonic() < deadline:
            results = d.collect(timeout=0.2)
        (res,) = [decode_result(r) for r in results]
        assert (res.seq, res.point_id, res.status) == (0, 0, "bad")
        assert "no worker is left" in res.reason
        assert d.in_flight == 0 and d.status()["workers"] == 0
    finally:
        d.close()
