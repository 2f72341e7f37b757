"""`tools/bench_soak.py --daemon`: many short scans back to back into one `peakstream
daemon` subprocess; its open files, threads and RSS early, in the middle and late."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import psutil
import zmq
from benchinfo import cpu_model, package_version

from stream.config.schema import dump_toml
from stream.service.control import request
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import encode

ROOT = Path(__file__).resolve().parent.parent
CONF = SimConfig(npoints=30, shape=(96, 128), spots=4, seed=11)
WARMUP = 40  # scans before the first window (numba, HDF5, allocator pools warm up)
WINDOW = 10  # scans in each window
READY = re.compile(r"listening on (\S+), control on (\S+), live on (\S+),")
EXTRA = {"workers": {"kind": "threads", "count": 2}, "output": {"flush_interval": 0.2},
         "live": {"interval": 0.05, "frame_rate": 20.0}}  # the soak test's settings


def start_daemon(tmp: Path) -> tuple[subprocess.Popen, list[str]]:
    """The daemon on ephemeral ports; (process, [data, control, live] endpoints)."""
    config = tmp / "soak.toml"
    data = tomllib.loads((ROOT / "configs" / "simulated.toml").read_text())
    for group, table in EXTRA.items():
        data[group] = {**data.get(group, {}), **table}
    config.write_text(dump_toml(data))
    log = tmp / "daemon.stderr"
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "daemon", str(config),
                             "--listen", "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0",
                             "--live", "tcp://127.0.0.1:0", "--output", str(tmp / "out")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    while proc.poll() is None:
        m = READY.search(log.read_text())
        if m:
            return proc, list(m.groups())
        time.sleep(0.1)
    raise SystemExit(f"peakstream daemon did not start:\n{log.read_text()}")


def measure(pid: int) -> tuple[int, int, int]:
    """Open file descriptors, threads, RSS of the daemon process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return fds, threads, psutil.Process(pid).memory_info().rss


def watch(endpoint: str, stop: threading.Event, received: list[int]) -> None:
    """A live viewer reading everything."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    while not stop.is_set():
        if sub.poll(100):
            sub.recv()
            received[0] += 1
    sub.close()


def scans_done(control: str, n: int) -> dict:
    while True:
        status = request(control, {"cmd": "status"}, timeout=30)
        if status["scans_done"] >= n:
            return status
        time.sleep(0.05)


def soak_daemon(scans: int, json_path: str | None = None) -> int:
    """Run the soak; print the table; 1 if a scan failed or files/threads grew."""
    least = 2 * (WARMUP + 2 * WINDOW)  # the middle window after the early one
    if scans < least:
        raise SystemExit(f"--scans must be at least {least}")
    tmp = tempfile.TemporaryDirectory()
    proc, (data, control, live) = start_daemon(Path(tmp.name))
    sim = Simulation(CONF)
    points = [sim.point(i, "x") for i in range(CONF.npoints)]
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(data)
    stop, received = threading.Event(), [0]
    viewer = threading.Thread(target=watch, args=(live, stop, received))
    viewer.start()
    samples, failed, t0 = [], 0, time.perf_counter()
    try:
        for n in range(1, scans + 1):
            sid = f"soak-{n:04d}"
            push.send_multipart(encode(sim.start(sid)))
            for p in points:
                push.send_multipart(encode(dataclasses.replace(p, scan_id=sid)), copy=False)
            push.send_multipart(encode(sim.end(sid)))
            failed += scans_done(control, n)["last_scan"]["status"] != "success"
            samples.append(measure(proc.pid))
            if n % 50 == 0:
                print(f"  {n} scans", file=sys.stderr, flush=True)
    finally:
        stop.set()
        viewer.join()
        push.close()
        proc.kill()
        proc.wait()
    total = time.perf_counter() - t0
    mid = len(samples) // 2
    windows = {"early": samples[WARMUP:WARMUP + WINDOW], "middle": samples[mid - WINDOW:mid],
               "late": samples[-WINDOW:]}
    print(f"machine     {psutil.cpu_count()} cores, {cpu_model()}")
    print(f"versions    python {platform.python_version()}, numpy "
          f"{package_version('numpy')}, numba {package_version('numba')}, h5py "
          f"{package_version('h5py')}, pyzmq {package_version('pyzmq')}")
    print(f"scans       {scans} of {CONF.npoints} points {CONF.shape[0]} x {CONF.shape[1]}, "
          f"{CONF.spots} spots; {failed} failed; {scans / total:.1f} scans/s; live "
          f"messages read {received[0]}")
    print("window      scans      fds min/med/max   threads min/med/max   RSS MiB min/med/max")
    rss = {}
    for name, w in windows.items():
        first = {"early": WARMUP, "middle": mid - WINDOW, "late": scans - WINDOW}[name] + 1
        cols = [sorted(s[k] for s in w) for k in range(3)]
        rss[name] = statistics.median(cols[2]) / 2**20
        print(f"{name:<11s} {first:>4d}-{first + WINDOW - 1:<4d}  "
              f"{cols[0][0]:>4d} {statistics.median(cols[0]):>5.1f} {cols[0][-1]:>4d}      "
              f"{cols[1][0]:>4d} {statistics.median(cols[1]):>5.1f} {cols[1][-1]:>4d}     "
              f"{cols[2][0] / 2**20:7.1f} {rss[name]:7.1f} {cols[2][-1] / 2**20:7.1f}")
    second_half = rss["late"] - rss["middle"]
    print(f"growth      median RSS early -> late {rss['late'] - rss['early']:+.1f} MiB "
          f"({100 * (rss['late'] / rss['early'] - 1):+.1f} %); second half "
          f"{second_half:+.1f} MiB ({1024 * second_half / (scans - mid):+.1f} kB a scan)")
    grew = (min(s[0] for s in windows["late"]) > max(s[0] for s in windows["early"])
            or min(s[1] for s in windows["late"]) > max(s[1] for s in windows["early"]))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"scans": scans, "failed": failed, "samples": samples,
                       "rss_mib": rss, "files_or_threads_grew": grew}, f, indent=2)
    tmp.cleanup()
    return 1 if failed or grew else 0
