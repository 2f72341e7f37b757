"""P8: live workers on another host (a network namespace) against local ones.

Two network namespaces joined by a veth pair (root and iproute2 needed): the
processor host runs `peakstream run` (processes, one local worker, [workers]
endpoint on the veth address with CurveZMQ keys) and the sender; the worker
host runs `peakstream worker --connect`. Each repeat is two sessions, a
warm-up scan and then the measured one sent as fast as the processor takes it:

* local:        one local worker process;
* local+remote: the same and one remote worker.

The sender (this script with `--send`) simulates a pool of 40 distinct points
first and then streams the scan from it as fast as the processor takes it (the
simulator itself makes only ~60 512x512 frames a second, which would cap the
figure). frames/s is the measured scan's points over its file's start..end
time. The
remote worker prints its process CPU per point (after its first); the local
reference is the same points through a `Worker` (the chain a worker thread
runs) in this process, CPU time of the calling thread, as the dispatcher
hands them out (the task message with the point's wire parts).

    python tools/bench_remote.py                  # 5 repeats, 512x512 bslz4
    python tools/bench_remote.py --points 400 --shape 1024 1024 --json p8.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.benchinfo import cpu_model, package_version  # noqa: E402


def wait_for(what, limit: float, why: str) -> None:
    deadline = time.monotonic() + limit
    while not what():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {why}")
        time.sleep(0.05)


def finished(path: Path) -> bool:
    from stream.store.reader import summary

    try:
        return path.exists() and summary(path)["status"] != "running"
    except (OSError, ValueError, KeyError):
        return False


def session(hosts, tmp: Path, config: Path, keys: Path, endpoint: str, sim: list[str],
            remote: bool, tag: str) -> dict:
    from stream.store.reader import summary

    out, log, wlog = tmp / f"out-{tag}", tmp / f"run-{tag}.log", tmp / f"worker-{tag}.log"
    run = hosts.popen(hosts.processor, ["run", str(config), "--listen",
                                        "tcp://127.0.0.1:5555", "--output", str(out),
                                        "--scans", "2", "--quiet"], log)
    worker = None
    try:
        wait_for(lambda: "listening on" in log.read_text() or run.poll() is not None, 300,
                 "run started")
        if remote:
            worker = hosts.popen(hosts.worker, ["worker", "--connect", endpoint, "--keys",
                                                str(keys), "--quiet"], wlog)
            wait_for(lambda: "joined" in log.read_text(), 300, "remote worker joined")
        for scan_id, points in (("warmup", "20"), ("bench", None)):
            args = [*sim, "--send", "tcp://127.0.0.1:5555", "--scan-id", scan_id]
            if points:
                args[args.index("--points") + 1] = points
            sender = send_from(hosts.processor, args, tmp / f"sender-{tag}.log")
            if sender.wait(600) != 0:
                raise RuntimeError((tmp / f"sender-{tag}.log").read_text())
            # the next scan only when this one is written: two senders' messages are
            # not ordered with each other
            wait_for(lambda sid=scan_id: finished(out / f"{sid}.h5") or run.poll() is not None,
                     600, f"scan {scan_id} written")
        if run.wait(600) != 0:
            raise RuntimeError(log.read_text())
        if worker is not None:
            worker.wait(120)
    finally:
        for p in (run, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    s = summary(out / "bench.h5")
    seconds = (datetime.fromisoformat(s["end_time"])
               - datetime.fromisoformat(s["start_time"])).total_seconds()
    result = {"frames_per_s": s["points_ok"] / seconds, "points_ok": s["points_ok"],
              "points": s["points"]}
    if remote:
        m = re.search(r"worker: (\d+) points, ([\d.]+) ms CPU per point", wlog.read_text())
        if m is None:
            raise RuntimeError(f"the remote worker printed no CPU figure:\n{wlog.read_text()}")
        result.update(remote_points=int(m.group(1)), remote_cpu_ms=float(m.group(2)))
    return result


POOL = 40  # distinct simulated points the sender cycles


def send_from(ns: str, args: list[str], log: Path):
    """This script as the sender (`--send`) in namespace `ns`."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def pool_points(sim_args: dict) -> tuple:
    """The simulation, and POOL of its points with bslz4 frames."""
    from stream.core.encoded import compress
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig

    sim = Simulation(SimConfig(**sim_args))
    pool = []
    for i in range(min(POOL, sim_args["npoints"])):
        point = sim.point(i, "pool")
        point.frames = {k: compress(f, "bslz4") for k, f in point.frames.items()}
        pool.append(point)
    return sim, pool


def send(args) -> int:
    """Stream a scan of args.points from a pool of simulated points, as fast as the
    processor takes it."""
    import dataclasses

    import zmq

    from stream.wire.codec import encode

    sim, pool = pool_points(dict(npoints=args.points, shape=tuple(args.shape),
                                 spots=args.spots, seed=7))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(args.send)
    sock.send_multipart(encode(sim.start(args.scan_id)))
    for i in range(args.points):
        k = i % len(pool)
        sock.send_multipart(encode(dataclasses.replace(pool[k], scan_id=args.scan_id,
                                                       point_id=i)), copy=False)
    sock.send_multipart(encode(sim.end(args.scan_id, args.points)))
    sock.close(linger=-1)
    ctx.term()  # returns once everything is delivered
    return 0


def local_thread_cpu_ms(config: Path, sim_args: dict) -> float:
    """CPU per point of the chain in this thread, on the tasks a worker gets."""
    import dataclasses

    from stream.config.schema import Config
    from stream.run.tasks import encode_scan, encode_task
    from stream.run.workers import Worker
    from stream.wire.codec import encode

    sim, pool = pool_points(sim_args)
    worker = Worker(Config.load(config))
    start = sim.start("local")
    det = next(iter(start.detectors))
    worker.handle(encode_scan(1, encode(start), det, 64 << 20))
    tasks = [encode_task(i, 1, i, encode(dataclasses.replace(pool[i % len(pool)],
                                                             scan_id="local", point_id=i)))
             for i in range(sim_args["npoints"])]
    worker.handle(tasks[0])  # kernels loaded
    t0 = time.thread_time()
    for task in tasks[1:]:
        worker.handle(task)
    return (time.thread_time() - t0) / (len(tasks) - 1) * 1e3


def stats(values: list[float]) -> str:
    return (f"min {min(values):.3g}  median {statistics.median(values):.3g}  "
            f"max {max(values):.3g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--shape", type=int, nargs=2, default=[512, 512])
    p.add_argument("--spots", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json")
    p.add_argument("--send", help=argparse.SUPPRESS)  # sender mode: the endpoint
    p.add_argument("--scan-id", default="bench", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.send:
        sys.exit(send(args))
    from stream.run.curve import make_keys
    from tests.support.netns import make_hosts, remove_hosts

    tmp = Path(tempfile.mkdtemp(prefix="bench_remote-"))
    hosts = make_hosts(f"b{os.getpid() % 10000}")
    try:
        keys = tmp / "keys"
        make_keys(keys)
        endpoint = f"tcp://{hosts.processor_ip}:7100"
        config = tmp / "remote.toml"
        config.write_text((ROOT / "configs" / "simulated.toml").read_text()
                          + f'\n[workers]\nkind = "processes"\ncount = 1\n'
                            f'endpoint = "{endpoint}"\nkeys = "{keys}"\n')
        sim = ["--points", str(args.points), "--shape", *map(str, args.shape), "--spots",
               str(args.spots)]
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}, {platform.platform()}")
        print(f"versions: python {platform.python_version()}, numpy {np.__version__}, "
              f"pyzmq {package_version('pyzmq')}, numba {package_version('numba')}")
        print(f"scan: {args.points} points of {args.shape[0]}x{args.shape[1]} uint16 bslz4, "
              f"{args.spots} spots; processor and sender in netns {hosts.processor} "
              f"({hosts.processor_ip}), remote worker in {hosts.worker} ({hosts.worker_ip}), "
              f"CurveZMQ; {args.repeats} repeats; load average {os.getloadavg()[0]:.1f}")
        rows: dict[str, list] = {"local": [], "remote": [], "thread_ms": []}
        sim_args = dict(npoints=args.points, shape=tuple(args.shape), spots=args.spots,
                        seed=7)
        for i in range(args.repeats):
            rows["local"].append(session(hosts, tmp, config, keys, endpoint, sim, False,
                                         f"l{i}"))
            rows["remote"].append(session(hosts, tmp, config, keys, endpoint, sim, True,
                                          f"r{i}"))
            rows["thread_ms"].append(local_thread_cpu_ms(ROOT / "configs" / "simulated.toml",
                                                         sim_args))
        local = [r["frames_per_s"] for r in rows["local"]]
        both = [r["frames_per_s"] for r in rows["remote"]]
        remote_ms = [r["remote_cpu_ms"] for r in rows["remote"]]
        lost = sum(r["points"] - r["points_ok"] for r in rows["local"] + rows["remote"])
        print(f"\nframes/s, 1 local worker:            {stats(local)}")
        print(f"frames/s, 1 local + 1 remote worker: {stats(both)}")
        print(f"ratio (local+remote)/local:          "
              f"{stats([b / a for a, b in zip(local, both, strict=True)])}")
        share = [r["remote_points"] / (args.points + 20) for r in rows["remote"]]
        print(f"remote worker CPU per point, ms:     {stats(remote_ms)}  (its share of the "
              f"points: {stats(share)})")
        print(f"local thread CPU per point, ms:      {stats(rows['thread_ms'])}")
        ratio = [r / t for r, t in zip(remote_ms, rows["thread_ms"], strict=True)]
        print(f"ratio remote/local thread CPU:       {stats(ratio)}  (P8 target <= 1.1)")
        print(f"points lost or bad in all sessions:  {lost}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    finally:
        remove_hosts(hosts)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
