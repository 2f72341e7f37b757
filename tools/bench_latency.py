"""P5: live-lane latency, from a point's send to its `peaks` message, at 100 Hz.

    python tools/bench_latency.py                       # EIGER2 4M bslz4, 5 x 200 points
    python tools/bench_latency.py --rate 100 --points 500 --repeats 5 --json p5.json
    python tools/bench_latency.py --shape 1024 1024 --encoding raw

A separate sender process (this script with --send) streams PROTOCOL.md
points at `--rate` Hz over tcp loopback: `--distinct` simulated frames
(bench_stream.py's: Poisson background 10, ~300 spots a frame, made once and
cached in the temp directory), compressed once and cycled; each point's
`time` is the wall clock right before its send. The processor is
`peakstream daemon` in a subprocess (correct with flat and mask, normalise,
threshold, label, properties, the linker, HDF5 output; `--workers-kind`
workers; the live lane on with its default frame previews). A SUB in this
process takes every `peaks` message; the latency of a point is the wall
clock at its arrival minus the point's `time` (one machine, one clock). One
warm-up scan, then `--repeats` scans of `--points` points.

Printed: machine, versions, frame shape, pixels kept, 2D peaks, then per scan
and over all points min / median / p99 / max latency (ms), points without a
peaks message (the live lane may drop; processing never waits for it) and the
achieved send rate. Target (TARGETS.md P5): <= 100 ms at 100 Hz.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import bench_stream  # noqa: E402  (frames, config, machine and versions, shared with P2)


def make_frames(args) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """(frames as sent, monitors, flat, mask): EIGER2 4M from bench_stream's cache, or
    another shape simulated here."""
    if tuple(args.shape) == bench_stream.SHAPE and args.encoding == "bslz4":
        path = bench_stream.make_frames(args.distinct, args.spots, Path(tempfile.gettempdir()))
        frames, monitors, flat, mask, _ = bench_stream.load_frames(path)
        return frames, monitors, flat, mask
    from stream.core.encoded import compress
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig

    n = max(args.distinct + 14, 20)
    spots = max(1, args.spots * args.shape[0] * args.shape[1] // (2162 * 2068))
    sim = Simulation(SimConfig(npoints=n, shape=tuple(args.shape), spots=spots, seed=1,
                               sigma_points=(0.7, 1.2)))
    first = (n - args.distinct) // 2
    ids = range(first, first + args.distinct)
    frames = [sim.frame(i) for i in ids]
    if args.encoding != "raw":
        frames = [compress(f, args.encoding) for f in frames]
    return frames, np.array([sim.monitor_value(i) for i in ids]), sim.flat, sim.mask


# ------------------------------------------------------------------ the sender


def send(args) -> int:
    import zmq

    from stream.core.messages import DetectorInfo, End, Point, Start
    from stream.wire.codec import encode

    frames, monitors, _, _ = make_frames(args)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 64)
    sock.connect(args.send)
    shape = tuple(args.shape)
    sock.send_multipart(encode(Start(args.scan_id, {"eiger": DetectorInfo(shape, "uint16")},
                                     ["omega"], ["monitor"], args.points,
                                     {"kind": "sweep", "fast": "omega"})))
    sys.stdin.readline()  # "go": the processor has set the scan up, the SUB is there
    period = 1.0 / args.rate
    t0 = time.perf_counter()
    late = 0
    for i in range(args.points):
        delay = t0 + i * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
        k = i % len(frames)
        p = Point(args.scan_id, i, time.time(), {"omega": 0.25 * i},
                  {"monitor": float(monitors[k])}, {"eiger": frames[k]})
        sock.send_multipart(encode(p), copy=False)
    elapsed = time.perf_counter() - t0
    sock.send_multipart(encode(End(args.scan_id, "success", args.points)))
    sock.close(linger=-1)
    ctx.term()
    print(json.dumps({"rate": args.points / max(elapsed, 1e-9), "late": late}), flush=True)
    return 0


# ------------------------------------------------------------------ the processor


class Daemon:
    """`peakstream daemon` in a subprocess; stderr to a file, endpoints from its first line."""

    def __init__(self, config: Path, output: Path):
        self.err = open(output.parent / "daemon.stderr", "w+")  # noqa: SIM115
        cmd = [sys.executable, "-m", "stream.cli", "daemon", str(config), "--listen",
               "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0", "--live",
               "tcp://127.0.0.1:0", "--output", str(output)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.err.seek(0)
            m = re.search(r"listening on (\S+), control on (\S+), live on (\S+),",
                          self.err.read())
            if m:
                self.data, self.control, self.live = m.groups()
                return
            time.sleep(0.05)
        self.close()
        raise RuntimeError("peakstream daemon did not start")

    def status(self) -> dict:
        from stream.service.control import request

        return request(self.control, {"cmd": "status"}, timeout=30)

    def wait_scans(self, n: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if s["scans_done"] >= n:
                return s
            time.sleep(0.1)
        raise RuntimeError(f"scan {n} did not end within {timeout:g} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def write_config(tmp: Path, flat, mask, args) -> Path:
    ns = argparse.Namespace(max_lag=1000, workers_kind=args.workers_kind,
                            workers=args.workers, queue=args.queue)
    path = bench_stream.write_config(tmp, flat, mask, ns)
    text = path.read_text().replace("flush_interval = 1.0",
                                    f"flush_interval = {args.flush_interval}")
    path.write_text(text + "\n[live]\nsndhwm = 1000\n")  # keep every peaks message
    return path


def one_scan(d: Daemon, sub, args, frames_args: list[str], scan_id: str, npoints: int,
             done: int) -> dict:
    """Send one scan at the rate; latency per point from the peaks messages."""
    from stream.service.live import unpack

    sender = subprocess.Popen([sys.executable, __file__, "--send", d.data, "--points",
                               str(npoints), "--scan-id", scan_id, *frames_args],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + args.timeout
    while (d.status().get("scan") or {}).get("scan_id") != scan_id:  # set up, not timed
        if time.monotonic() > deadline or sender.poll() is not None:
            raise RuntimeError(f"scan {scan_id} did not start: {sender.stderr.read()}")
        time.sleep(0.05)
    sender.stdin.write("go\n")
    sender.stdin.flush()
    latency: dict[int, float] = {}
    npeaks: list[int] = []
    while len(latency) < npoints and time.monotonic() < deadline:
        if not sub.poll(200):
            if sender.poll() is not None and d.status()["scans_done"] > done:
                break  # the scan ended; the rest of its peaks messages were dropped
            continue
        arrived = time.time()
        topic, body = unpack(sub.recv())
        if body.get("scan_id") == scan_id and body["status"] == "ok":
            latency[body["point_id"]] = 1e3 * (arrived - body["time"])
            npeaks.append(body["npeaks"])
    out, err = sender.communicate(timeout=args.timeout)
    if sender.returncode != 0:
        raise RuntimeError(f"sender failed: {err}")
    status = d.wait_scans(done + 1, args.timeout)
    sent = json.loads(out.strip().splitlines()[-1])
    ms = sorted(latency.values())
    return {"scan": scan_id, "status": status["last_scan"]["status"], "points": npoints,
            "by_point": [round(latency.get(i, float("nan")), 2) for i in range(npoints)],
            "received": len(ms), "no_peaks_msg": npoints - len(ms),
            "send_rate": sent["rate"], "late_sends": sent["late"],
            "npeaks_mean": float(np.mean(npeaks)) if npeaks else 0.0,
            "ms": ms, **summarise(ms)}


def summarise(ms: list[float]) -> dict:
    if not ms:
        return {"min": float("nan"), "median": float("nan"), "p99": float("nan"),
                "max": float("nan")}
    return {"min": ms[0], "median": statistics.median(ms),
            "p99": float(np.percentile(ms, 99)), "max": ms[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="points per second (default 100)")
    ap.add_argument("--points", type=int, default=200, help="points per scan (default 200)")
    ap.add_argument("--repeats", type=int, default=5, help="measured scans (default 5)")
    ap.add_argument("--shape", type=int, nargs=2, default=list(bench_stream.SHAPE),
                    metavar=("NY", "NX"), help="frame shape (default EIGER2 4M 2162 2068)")
    ap.add_argument("--encoding", default="bslz4", choices=("raw", "bslz4", "lz4"))
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames cycled")
    ap.add_argument("--spots", type=int, default=600,
                    help="spots of the simulated 4M scan (default 600: ~300 per frame)")
    ap.add_argument("--workers-kind", default="threads", choices=("inline", "threads",
                                                                  "processes"))
    ap.add_argument("--workers", type=int, default=0, help="[workers] count (0: automatic)")
    ap.add_argument("--queue", type=int, default=0, help="[workers] queue (0: automatic)")
    ap.add_argument("--flush-interval", type=float, default=0.25,
                    help="[output] flush_interval, s (default 0.25): the HDF5 writes hold the "
                         "main thread, a flush of 1 s of 4M frames' pixels takes ~50-80 ms")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--send", help=argparse.SUPPRESS)  # sender mode: the endpoint
    ap.add_argument("--scan-id", default="p5", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        return send(args)
    import zmq

    frames_args = ["--shape", *map(str, args.shape), "--encoding", args.encoding,
                   "--distinct", str(args.distinct), "--spots", str(args.spots),
                   "--rate", str(args.rate)]
    frames, _, flat, mask = make_frames(args)  # made (and cached) before the clock starts
    nbytes = [getattr(f, "buffer", f).nbytes for f in frames]
    report = {"machine": {"cores": os.cpu_count(), "cpu": bench_stream.cpu_model()},
              "versions": bench_stream.versions(),
              "frames": {"shape": list(args.shape), "dtype": "uint16",
                         "encoding": args.encoding, "distinct": len(frames),
                         "mib_each": float(np.mean(nbytes)) / 2**20},
              "rate": args.rate, "flush_interval": args.flush_interval,
              "workers": {"kind": args.workers_kind,
                                             "count": args.workers, "queue": args.queue}}
    m, fr = report["machine"], report["frames"]
    print(f"machine  {m['cores']} cores, {m['cpu']}")
    print("versions " + ", ".join(f"{k} {x}" for k, x in report["versions"].items()))
    print(f"frames   {args.shape[0]}x{args.shape[1]} uint16 {args.encoding}, "
          f"{fr['mib_each']:.2f} MiB each on the wire, {len(frames)} distinct")
    print(f"stream   {args.repeats} x {args.points} points at {args.rate:g} Hz, workers "
          f"{args.workers_kind} x {args.workers or 'auto'}, flush every "
          f"{args.flush_interval:g} s", flush=True)
    scans = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        tmp = Path(tmp)
        d = Daemon(write_config(tmp, flat, mask, args), tmp / "out")
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"peaks ")
        sub.connect(d.live)
        try:
            time.sleep(0.5)  # the subscription reaches the PUB
            runs = [("warmup", min(args.points, 100))] + [(f"p5-{r}", args.points)
                                                          for r in range(args.repeats)]
            for k, (scan_id, n) in enumerate(runs):
                r = one_scan(d, sub, args, frames_args, scan_id, n, k)
                print(f"  {scan_id}: latency ms min {r['min']:.1f} median {r['median']:.1f} "
                      f"p99 {r['p99']:.1f} max {r['max']:.1f}; {r['received']}/{n} peaks "
                      f"messages, sent at {r['send_rate']:.1f} Hz, ~{r['npeaks_mean']:.0f} "
                      f"2D peaks/point ({r['status']})", flush=True)
                if scan_id != "warmup":
                    scans.append(r)
        finally:
            sub.close(linger=0)
            d.close()
    every = sorted(x for s in scans for x in s["ms"])
    total = summarise(every)
    print(f"{'P5 latency (ms)':<22}{'min':>8}{'median':>8}{'p99':>8}{'max':>8}   target")
    print(f"{'all points':<22}{total['min']:>8.1f}{total['median']:>8.1f}{total['p99']:>8.1f}"
          f"{total['max']:>8.1f}   <= 100 at 100 Hz")
    for key in ("median", "p99"):
        vals = [s[key] for s in scans]
        print(f"  {key} of each scan: min {min(vals):.1f} / median "
              f"{statistics.median(vals):.1f} / max {max(vals):.1f} over {len(scans)} scans")
    print(f"points {len(every)} with a peaks message of {sum(s['points'] for s in scans)}")
    report["scans"] = [{k: v for k, v in s.items() if k != "ms"} for s in scans]  # by_point:
    # each point's latency in point order (NaN: no peaks message), to see where tails fall
    report["all_points"] = {**total, "n": len(every)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
