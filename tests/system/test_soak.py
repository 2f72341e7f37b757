"""Soak: many short scans back to back into one daemon subprocess (thread workers, a live
subscriber all the while): every scan succeeds and the daemon's open files (sockets
included) and threads do not grow between the early and the late scans.

Counted in scans, never in seconds, so a busy machine only makes it slower. Memory
growth over many scans is a benchmark's business: `tools/bench_soak.py --daemon`."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest
import zmq

from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import encode
from tests.support.daemon import daemon_config, scans_done

CONF = SimConfig(npoints=30, shape=(96, 128), spots=4, seed=11)
SCANS = 60  # in all
WARMUP = 10  # scans before the first sample (numba, HDF5, pools warm up)
WINDOW = 10  # scans sampled at each end


def measure(pid: int) -> tuple[int, int]:
    """Open file descriptors (files and sockets) and threads of the daemon process."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.system
def test_many_scans_no_growth_in_files_or_threads(daemon, tmp_path):
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
    samples: list[tuple[int, int]] = []
    try:
        for n in range(1, SCANS + 1):
            sid = f"soak-{n:04d}"
            push.send_multipart(encode(sim.start(sid)))
            for p in points:
                push.send_multipart(encode(dataclasses.replace(p, scan_id=sid)), copy=False)
            push.send_multipart(encode(sim.end(sid)))
            status = scans_done(d, n)
            assert status["last_scan"]["status"] == "success", status["last_scan"]
            assert status["last_scan"]["linked"] == CONF.npoints
            samples.append(measure(d.pid))
    finally:
        stop.set()
        viewer.join()
        push.close()
    assert received["n"] >= SCANS  # the viewer was served all along (it may drop, not stop)
    assert len(list((tmp_path / "out").glob("soak-*.h5"))) == SCANS
    early, late = samples[WARMUP:WARMUP + WINDOW], samples[-WINDOW:]
    report = f"{SCANS} scans: (fds, threads) early {early}, late {late}"
    print(report)
    # a leak grows with every scan: the fewest of the late ones is above the most of the
    # early ones (a sample that happens to catch a checkpoint's open file cannot fail it)
    assert min(s[0] for s in late) <= max(s[0] for s in early), report
    assert min(s[1] for s in late) <= max(s[1] for s in early), report
