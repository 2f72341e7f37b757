"""P2: bslz4 EIGER2 4M frames streamed over tcp loopback into `peakstream run`.

    python tools/bench_stream.py                       # 5000 frames, 5 repeats
    python tools/bench_stream.py --points 1000 --repeats 1 --json p2.json
    python tools/bench_stream.py --workers-kind processes --workers 1

A separate sender process (this script with --send) streams the points with
PROTOCOL.md at full speed: `--distinct` simulated frames (Poisson background
10, flat gain, monitor drift, ~300 spots a frame; made once and cached in the
temp directory) are compressed once with bitshuffle-LZ4 and cycled, each
point with its own point_id, omega and monitor, so the sender is not the
bottleneck. The processor is `peakstream run` in a subprocess, with a config
of correct (flat + mask) + normalise + threshold + label + properties, the
linker and HDF5 output, and the built-in `[workers]` defaults as a user gets
them (threads, one per core, a queue of 5 points: points at a worker or held
behind one, so the lag stays within P2's 5), or those given with
`--workers-kind`. One warm-up scan
(numba caches, first files), then `--repeats` scans of `--points` points.

Per scan: sustained frames/s (points / (the file's end_time - the first point
sent)), lost points (missing in the file), bad points, max lag (the runner's
`max_lag` counter: newest received - newest linked), and the processor's peak
RSS (psutil, its workers included, polled every 50 ms). Before the stream,
the per-frame decode paths on the same frames in this process: dense pass on
the raw frame, bslz4 decoded then the dense pass, straight to sparse, and the
C references (bitshuffle's full decompress, bslz4_to_sparse's raw cut).
"""

from __future__ import annotations

import argparse
import datetime
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
from pathlib import Path

import numpy as np
from benchinfo import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = (2162, 2068)
CUT = 40.0


def make_frames(distinct: int, spots: int, cache: Path) -> Path:
    """Compressed frames, monitors, flat and mask of a simulated scan (cached)."""
    path = cache / f"peakstream-bench-stream-{distinct}-{spots}.npz"
    if path.exists():
        return path
    from stream.core.encoded import compress
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig

    npoints = max(distinct + 14, 20)  # the simulator keeps spots off the scan ends
    sim = Simulation(SimConfig(npoints=npoints, shape=SHAPE, spots=spots, seed=1,
                               sigma_points=(0.7, 1.2)))
    first = (npoints - distinct) // 2
    print(f"making {distinct} frames {SHAPE[0]}x{SHAPE[1]} uint16 ...", file=sys.stderr)
    frames = [compress(sim.frame(i), "bslz4") for i in range(first, first + distinct)]
    sizes = np.cumsum([0] + [f.buffer.nbytes for f in frames])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, data=np.frombuffer(b"".join(bytes(f.buffer) for f in frames), np.uint8),
             sizes=sizes, monitors=[sim.monitor_value(i) for i in range(first, first + distinct)],
             flat=sim.flat, mask=sim.mask, omega_step=sim.config.omega_step)
    os.replace(tmp, path)
    return path


def load_frames(path: Path):
    from stream.core.encoded import EncodedFrame

    z = np.load(path)
    data, sizes = z["data"].tobytes(), z["sizes"]
    frames = [EncodedFrame.from_buffer("bslz4", SHAPE, np.dtype(np.uint16),
                                       data[sizes[k]:sizes[k + 1]]) for k in range(len(sizes) - 1)]
    return frames, z["monitors"], z["flat"], z["mask"], float(z["omega_step"])


# ------------------------------------------------------------------ the sender


def send(args) -> int:
    import zmq

    from stream.core.messages import DetectorInfo, End, Point, Start
    from stream.wire.codec import encode

    frames, monitors, _, _, step = load_frames(Path(args.frames_file))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.connect(args.send)
    sock.send_multipart(encode(Start(args.scan_id, {"eiger": DetectorInfo(SHAPE, "uint16")},
                                     ["omega"], ["monitor"], args.points,
                                     {"kind": "sweep", "fast": "omega"})))
    sys.stdin.readline()  # "go": the processor has set the scan up
    t_first = time.time()
    for i in range(args.points):
        k = i % len(frames)
        p = Point(args.scan_id, i, t_first + 0.005 * i, {"omega": i * step},
                  {"monitor": float(monitors[k])}, {"eiger": frames[k]})
        sock.send_multipart(encode(p), copy=False)
    t_last = time.time()
    sock.send_multipart(encode(End(args.scan_id, "success", args.points)))
    sock.close(linger=-1)
    ctx.term()  # returns once everything queued is delivered
    cpu = sum(os.times()[:2])
    print(json.dumps({"t_first": t_first, "t_last": t_last, "sent": args.points, "cpu": cpu}),
          flush=True)
    return 0


# ------------------------------------------------------------------ decode paths, in process


def decode_paths(frames, monitors, flat, mask, repeats: int) -> dict:
    from nodes import Correct, Normalise, Threshold, decode, fuse
    from stream.core.item import Item
    from stream.core.messages import DetectorInfo, Start
    from stream.core.scan import Scan

    dense = fuse([Correct(flat=flat, mask=mask), Normalise(reference=1e4),
                  Threshold(cut=CUT)])[0]
    dense.setup(Scan.from_start(Start("b", {"eiger": DetectorInfo(SHAPE, "uint16")})))
    raws = [decode.dense(f) for f in frames]
    paths = {"dense pass, raw frame": lambda f, k: run(raws[k], k, True),
             "bslz4 decode + dense pass": lambda f, k: run(f, k, False),
             "bslz4 straight to sparse": lambda f, k: run(f, k, True),
             "C: bitshuffle decompress": lambda f, k: bshuf(f)}

    def run(frame, k, straight):
        dense.straight_to_sparse = straight
        item = dense.process(Item(k, "eiger", frame=frame, counters={"monitor": monitors[k]}))
        return item.sparse.nnz

    def bshuf(f):
        import bitshuffle

        return bitshuffle.decompress_lz4(f.data[12:], f.shape, f.dtype, f.block).size

    try:
        import bslz4_to_sparse

        c2s = bslz4_to_sparse.chunk2sparse((mask == 0).astype(np.uint8), np.dtype(np.uint16))
        paths["C: bslz4_to_sparse raw cut"] = lambda f, k: c2s(f.data, int(CUT))[0]
    except ImportError:
        pass
    kept = [run(f, k, True) for k, f in enumerate(frames)]
    assert kept == [run(f, k, False) for k, f in enumerate(frames)] == \
        [run(r, k, True) for k, r in enumerate(raws)]
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(max(repeats, 5)):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for k, f in enumerate(frames):
                fn(f, k)
            times[name].append(1e3 * (time.perf_counter() - t0) / len(frames))
    return {"kept_mean": int(np.mean(kept)),
            "ms_per_frame": {n: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                             for n, v in times.items()}}


# ------------------------------------------------------------------ the processor


def write_config(tmp: Path, flat, mask, args) -> Path:
    np.save(tmp / "flat.npy", flat)
    np.save(tmp / "mask.npy", mask)
    text = f"""
[source]
max_lag = {args.max_lag}

[[node]]
kind = "correct"
flat = "flat.npy"
mask = "mask.npy"

[[node]]
kind = "normalise"
counter = "monitor"
reference = 10000.0

[[node]]
kind = "threshold"
cut = {CUT}

[[node]]
kind = "label"
min_pixels = 2

[[node]]
kind = "properties"

[linker]
criterion = "any_pixel"

[output]
flush_interval = 1.0
"""
    if args.workers_kind:  # otherwise the defaults, as a user gets them
        text += f"""
[workers]
kind = "{args.workers_kind}"
count = {args.workers}
queue = {args.queue}
"""
    path = tmp / "bench.toml"
    path.write_text(text)
    return path


class Processor:
    """`peakstream run` in a subprocess: its endpoint, finished scans and peak RSS."""

    def __init__(self, config: Path, output: Path, nscans: int):
        cmd = [sys.executable, "-m", "stream.cli", "-v", "run", str(config), "--listen",
               "tcp://127.0.0.1:0", "--output", str(output), "--scans", str(nscans), "--quiet"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.endpoint: str | None = None
        self.started: set[str] = set()
        self.ended: dict[str, str] = {}
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.peak = 0
        self._stop = False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._poll_rss, daemon=True).start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.endpoint or self.proc.poll() is not None,
                                      1800):  # a cold start compiles the kernels first
                raise RuntimeError("peakstream run did not start")
        if self.endpoint is None:
            raise RuntimeError("peakstream run failed:\n" + "".join(self.lines))

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                m = re.search(r"listening on (tcp://\S+),", line)
                if m and self.endpoint is None:
                    self.endpoint = m.group(1)
                m = re.search(r"scan (\S+) started: ", line)
                if m:
                    self.started.add(m.group(1))
                m = re.search(r"scan (\S+) ended: (\w+)", line)
                if m:
                    self.ended[m.group(1)] = m.group(2)
                self.cond.notify_all()

    def _poll_rss(self):
        import psutil

        proc = psutil.Process(self.proc.pid)
        while not self._stop:
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss
                                                   for c in proc.children(recursive=True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.05)

    def cpu(self) -> float:
        """CPU seconds (user + system) of the processor and its workers so far."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    def wait_start(self, scan_id: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: scan_id in self.started or scan_id in self.ended
                                      or self.proc.poll() is not None, timeout)

    def wait_scan(self, scan_id: str, timeout: float) -> str:
        with self.cond:
            self.cond.wait_for(lambda: scan_id in self.ended or self.proc.poll() is not None,
                               timeout)
            return self.ended.get(scan_id, "not ended")

    def close(self) -> str:
        self._stop = True
        try:
            out, _ = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def scan_figures(path: Path, t_first: float, npoints: int) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        proc = f["entry/process"]
        end = datetime.datetime.fromisoformat(proc.attrs["end_time"]).timestamp()
        counters = dict(proc["counters"].attrs)
        status = f["entry/points/status"][()]
        ncliques = f["entry/eiger/cliques/clique_id"].size
        npeaks = f["entry/eiger/peaks2d/npx"].size
        nnz = f["entry/eiger/sparse/nnz"][()]
        reason = str(f["entry"].attrs.get("reason", ""))
    return {"reason": reason, "frames_per_s": npoints / (end - t_first), "seconds": end - t_first,
            "lost": int((status == 1).sum()) + max(npoints - status.size, 0),
            "bad": int((status == 2).sum()), "max_lag": int(counters.get("max_lag", -1)),
            "kept_mean": float(nnz.mean()) if nnz.size else 0.0,
            "peaks2d_mean": npeaks / max(npoints, 1), "cliques": int(ncliques)}


def stream(args, frames_file: Path, flat, mask) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        tmp = Path(tmp)
        config = write_config(tmp, flat, mask, args)
        scans = [("warmup", min(args.points, 200))] + [(f"p2-{r}", args.points)
                                                       for r in range(args.repeats)]
        proc = Processor(config, tmp / "out", len(scans))
        try:
            for scan_id, npoints in scans:
                proc.peak = 0
                sender = subprocess.Popen(
                    [sys.executable, __file__, "--send", proc.endpoint, "--frames-file",
                     str(frames_file), "--points", str(npoints), "--scan-id", scan_id],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, cwd=ROOT)
                proc.wait_start(scan_id, args.timeout)  # setup is not part of the figure
                cpu0 = proc.cpu()
                out_text, err_text = sender.communicate("go\n", timeout=args.timeout)
                if sender.returncode != 0:
                    raise RuntimeError(f"sender failed: {err_text}")
                sent = json.loads(out_text.strip().splitlines()[-1])
                status = proc.wait_scan(scan_id, args.timeout)
                cpu1 = proc.cpu()
                figures = scan_figures(tmp / "out" / f"{scan_id}.h5", sent["t_first"], npoints)
                figures.update(scan=scan_id, status=status, peak_rss_mib=proc.peak / 2**20,
                               processor_cpu_ms=1e3 * (cpu1 - cpu0) / npoints,
                               sender_cpu_ms=1e3 * sent["cpu"] / npoints,
                               sender_frames_per_s=npoints / max(sent["t_last"] - sent["t_first"],
                                                                 1e-9))
                print(f"  {scan_id}: {figures['frames_per_s']:.1f} frames/s, "
                      f"{figures['lost']} lost, max lag {figures['max_lag']}, peak RSS "
                      f"{figures['peak_rss_mib']:.0f} MiB ({status}{figures['reason'] and ': '}"
                      f"{figures['reason']})", file=sys.stderr)
                if status != "success":
                    print("".join(line for line in proc.lines if "ERROR" in line
                                  or "ended" in line)[-3000:], file=sys.stderr)
                if scan_id != "warmup":
                    out.append(figures)
        finally:
            proc.close()
    return out


def versions() -> dict:
    import bitshuffle
    import numba
    import zmq

    from stream import __version__

    return {"peakstream": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "bitshuffle": bitshuffle.__version__}


def stats(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=5000, help="points per scan (default 5000)")
    ap.add_argument("--repeats", type=int, default=5, help="measured scans (default 5)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames cycled (default 8)")
    ap.add_argument("--spots", type=int, default=600,
                    help="spots of the simulated scan (default 600: ~300 per frame)")
    ap.add_argument("--workers-kind", choices=("inline", "threads", "processes"),
                    help="a [workers] table of this kind (default: none, the built-in "
                         "defaults as a user gets them: threads, one per core, queue 5)")
    ap.add_argument("--workers", type=int, default=0,
                    help="with --workers-kind: [workers] count (0: one per core)")
    ap.add_argument("--queue", type=int, default=0,
                    help="with --workers-kind: [workers] queue, points between receiver and "
                         "collector, which bounds the lag (0: 2 per worker and one more, at "
                         "least 5)")
    ap.add_argument("--max-lag", type=int, default=1000, help="[source] max_lag")
    ap.add_argument("--no-paths", action="store_true", help="skip the per-frame decode paths")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--send", help=argparse.SUPPRESS)  # sender mode: the endpoint
    ap.add_argument("--frames-file", help=argparse.SUPPRESS)
    ap.add_argument("--scan-id", default="p2", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        return send(args)

    frames_file = make_frames(args.distinct, args.spots, Path(tempfile.gettempdir()))
    frames, monitors, flat, mask, _ = load_frames(frames_file)
    ratio = np.mean([f.nbytes / f.buffer.nbytes for f in frames])
    report = {"machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
              "versions": versions(),
              "frames": {"shape": list(SHAPE), "dtype": "uint16", "encoding": "bslz4",
                         "distinct": len(frames), "spots_in_scan": args.spots,
                         "compressed_mib": float(np.mean([f.buffer.nbytes for f in frames]))
                         / 2**20, "ratio": float(ratio)},
              "workers": {"kind": args.workers_kind, "count": args.workers,
                          "queue": args.queue}}
    m, v, fr = report["machine"], report["versions"], report["frames"]
    print(f"machine  {m['cores']} cores, {m['cpu']}")
    print("versions " + ", ".join(f"{k} {x}" for k, x in v.items()))
    print(f"frames   {SHAPE[0]}x{SHAPE[1]} uint16 bslz4, {fr['compressed_mib']:.2f} MiB each "
          f"(ratio {ratio:.1f}), {len(frames)} distinct, cut {CUT:g}")
    if not args.no_paths:
        paths = decode_paths(frames, monitors, flat, mask, 5)
        report["decode_paths"] = paths
        print(f"decode paths, ms per frame (min / median / max of 5), ~{paths['kept_mean']} "
              f"pixels kept, same pixels on every path:")
        for name, t in paths["ms_per_frame"].items():
            print(f"  {name:<30}{t['min']:>7.2f}{t['median']:>7.2f}{t['max']:>7.2f}")
    how = (f"workers {args.workers_kind} x {args.workers or 'auto'}, queue "
           f"{args.queue or 'default'}" if args.workers_kind else "the default [workers]")
    print(f"stream   {args.repeats} x {args.points} points, {how}", flush=True)
    scans = stream(args, frames_file, flat, mask)
    report["scans"] = scans
    if scans:
        k, p = scans[0]["kept_mean"], scans[0]["peaks2d_mean"]
        print(f"         ~{k:.0f} pixels kept, ~{p:.0f} 2D peaks per frame")
        print(f"{'P2 figure':<24}{'min / median / max':>24}   target")
        rows = [("frames/s", "frames_per_s", ">= 200"), ("lost points", "lost", "0"),
                ("bad points", "bad", "0"), ("max lag (points)", "max_lag", "<= 5"),
                ("peak RSS (MiB)", "peak_rss_mib", "<= 1024"),
                ("sender frames/s", "sender_frames_per_s", ""),
                ("processor CPU ms/frame", "processor_cpu_ms", ""),
                ("sender CPU ms/frame", "sender_cpu_ms", "")]
        for label, key, target in rows:
            print(f"{label:<24}{stats([s[key] for s in scans]):>24}   {target}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
