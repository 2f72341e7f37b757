"""Soak: many short scans back to back into one daemon subprocess (thread workers, control
requests and a live subscriber all the while): its open files, threads and memory do not
grow between the early and the late scans. Bounded to about 70 s."""

from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time

import psutil
import zmq

from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import encode
from tests.support.daemon import (  # noqa: F401 (daemon_fixture: the daemon fixture)
    daemon_config,
    daemon_fixture,
    scans_done,
)

CONF = SimConfig(npoints=30, shape=(96, 128), spots=4, seed=11)
WARMUP = 40  # scans before the first measurement (numba, HDF5, allocator pools warm up)
WINDOW = 10  # scans measured at each end
BUDGET = 55.0  # s of scans after the warm-up


def measure(pid: int) -> tuple[int, int, int]:
    """Open file descriptors, threads, RSS of the daemon process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return fds, threads, psutil.Process(pid).memory_info().rss


def test_many_scans_no_growth_in_files_threads_memory(daemon, tmp_path):
    config = daemon_config(tmp_path, '[workers]\nkind = "threads"\ncount = 2\n'
                                     "[live]\ninterval = 0.05\nframe_rate = 20.0\n"
                                     "[output]\nflush_interval = 0.2\n")
    d = daemon(config)
    sim = Simulation(CONF)
    points = [sim.point(i, "x") for i in range(CONF.npoints)]  # frames made once
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(d.endpoint)
    received = {"n": 0}
    stop = threading.Event()

    def watch() -> None:  # a live viewer reading everything
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(d.live)
        while not stop.is_set():
            if sub.poll(100):
                sub.recv()
                received["n"] += 1
        sub.close()

    viewer = threading.Thread(target=watch)
    viewer.start()
    samples: list[tuple[int, int, int]] = []
    t_warm = None
    n = 0
    try:
        while True:
            n += 1
            sid = f"soak-{n:04d}"
            push.send_multipart(encode(sim.start(sid)))
            for p in points:
                push.send_multipart(encode(dataclasses.replace(p, scan_id=sid)), copy=False)
            push.send_multipart(encode(sim.end(sid)))
            status = scans_done(d, n)
            assert status["last_scan"]["status"] == "success", status["last_scan"]
            assert status["last_scan"]["linked"] == CONF.npoints
            samples.append(measure(d.pid))
            if n == WARMUP:
                t_warm = time.monotonic()
            if t_warm is not None and time.monotonic() - t_warm > BUDGET and \
                    n >= WARMUP + 4 * WINDOW:
                break
    finally:
        stop.set()
        viewer.join()
        push.close()
    assert received["n"] > n * CONF.npoints  # the viewer saw peaks of every scan, and more
    assert len(list((tmp_path / "out").glob("soak-*.h5"))) == n
    # the allocators' pools (Python, HDF5's free lists, ZeroMQ) still grow a little, ever
    # more slowly, for the first few hundred scans (measured: +3 MiB from scan 40 to 250,
    # +0.5 MiB from 250 to 800); keeping a scan's data (its frames' pixels, its linker,
    # its file) would add > 25 kB a scan, 4 MiB over the second half
    mid = len(samples) // 2
    early, middle, late = (samples[WARMUP:WARMUP + WINDOW], samples[mid - WINDOW:mid],
                           samples[-WINDOW:])
    fds0, fds1 = max(s[0] for s in early), max(s[0] for s in late)
    th0, th1 = max(s[1] for s in early), max(s[1] for s in late)
    rss0, rss_mid, rss1 = (statistics.median(s[2] for s in w) for w in (early, middle, late))
    report = (f"{n} scans: fds {fds0} -> {fds1}, threads {th0} -> {th1}, RSS "
              f"{rss0 / 2**20:.1f} -> {rss_mid / 2**20:.1f} (scan {mid}) -> "
              f"{rss1 / 2**20:.1f} MiB")
    print(report)
    assert fds1 <= fds0, report
    assert th1 <= th0, report
    assert rss1 <= rss0 * 1.05 + 8 * 2**20, report
    assert rss1 <= rss_mid + 4 * 2**20, report  # the second half: flat
