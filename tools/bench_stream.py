"""P2: bslz4 EIGER2 4M frames streamed over tcp loopback into `peakstream run`.

    python tools/bench_stream.py                       # 5000 frames, 5 later scans
    python tools/bench_stream.py --points 1000 --repeats 1 --json p2.json
    python tools/bench_stream.py --chain corrected     # flat + mask, normalise, cut 40
    python tools/bench_stream.py --workers-kind processes --workers 1
    python tools/bench_stream.py --profile             # py-spy (pip install .[bench])

What a user gets: by default the processor is `peakstream run` with no config file,
the built-in defaults (threshold cut 50, label min_pixels 2, properties, the linker's
criterion "fraction" with split "local_max", `[workers]` threads one per core).
`--chain corrected` is the chain of a beamline config instead: correct (flat + mask),
normalise, threshold cut 40, label, properties, linker "any_pixel". `--workers-kind`
(with `--workers`, `--queue`) writes a `[workers]` table, and `--max-lag` other than
1000 a `[source]` one; with `--chain defaults` the config file holds only those.

A separate sender process (this script with --send) streams the points with
PROTOCOL.md at full speed: `--distinct` simulated frames (Poisson background
10, flat gain, monitor drift, ~300 spots a frame; made once and cached in the
temp directory) are compressed once with bitshuffle-LZ4 and cycled, each
point with its own point_id, omega and monitor, so the sender is not the
bottleneck. The processor runs in a subprocess and writes HDF5.

Scans: the first scan of the fresh processor (numba caches, first files: what a
user's first scan gets) is measured and reported on its own, then `--repeats`
later scans (min / median / max), all of `--points` points. Per scan: sustained
frames/s (points / (the file's end_time - the first point sent)), lost points
(missing in the file), bad points, max lag (the runner's `max_lag` counter:
newest received - newest linked), the processor's peak RSS and CPU per frame
(psutil, its worker processes included) and minor page faults per frame
(/proc/PID/stat: pages the kernel maps for the first time), and its CPU per thread name
(/proc/PID/task/*: utime + stime between the scan's start and end, threads of
worker processes too), as ms per frame and % of a core.

In this process, on the same frames, in the same run (before the stream):

* the decode paths: the corrected dense pass on the raw frame, bslz4 decoded then
  the dense pass, straight to sparse, and the C references (bitshuffle's full
  decompress, bslz4_to_sparse's raw cut);
* the kernels' sum: the processor's own chain, built from the same config and fused
  as a worker fuses it, each node's `process` timed per frame (thread CPU time),
  plus the linker's per-point add as the collector calls it, in scan order; the
  processor's CPU per frame over this sum says what the machinery around the
  kernels costs (target <= 1.3);
* ImageD11's bslz4 path, compute only, one core (one OpenMP thread):
  bslz4_to_sparse's chunk2sparse on the compressed frame, lima_segmenter.clean,
  sparse_connected_pixels, sparse_moments and overlaps_linear against the frame
  before, at the chain's cut and mask; the later scans' median end-to-end frames/s
  over its frames/s is the target >= 1.5 (`--no-imaged11` skips it).

The kernels' sum and ImageD11 are measured again after the stream (`--no-after`:
not), and both ratios use the mean of before and after: a shared machine's speed
moves by 10-50% within minutes (seen: ImageD11 4.5 then 5.3 ms a frame, the kernels'
sum 2.4 then 3.7 ms, in runs a minute apart), and a reference taken in one such
moment alone made P2b read 1.2 or 1.8 on the same code.

`--profile` records the processor with py-spy during the first later scan and
prints, per thread name, the share of samples by innermost frame of our own code
(stream/, nodes/). `--json FILE` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from benchinfo import (
    cpu_model,
    package_version,
    profile_summary,
    py_spy,
    thread_cpu,
    thread_ticks,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = (2162, 2068)
CUT = 40.0  # the corrected chain's cut (the defaults' is the built-in 50)
CHAINS = ("defaults", "corrected")
KERNEL_POINTS, KERNEL_REPEATS = 40, 5  # in-process passes: points each, passes timed


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


def start_message(scan_id: str, npoints: int):
    """The sender's start message (the in-process passes set their chain up with it)."""
    from stream.core.messages import DetectorInfo, Start

    return Start(scan_id, {"eiger": DetectorInfo(SHAPE, "uint16")}, ["omega"], ["monitor"],
                 npoints, {"kind": "sweep", "fast": "omega"})


# ------------------------------------------------------------------ the sender


def send(args) -> int:
    import zmq

    from stream.core.messages import End, Point
    from stream.wire.codec import encode

    frames, monitors, _, _, step = load_frames(Path(args.frames_file))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.connect(args.send)
    sock.send_multipart(encode(start_message(args.scan_id, args.points)))
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


def decode_paths(frames, monitors, flat, mask, repeats: int, cut: float = CUT) -> dict:
    from nodes import Correct, Normalise, Threshold, decode, fuse
    from stream.core.item import Item
    from stream.core.messages import DetectorInfo, Start
    from stream.core.scan import Scan

    dense = fuse([Correct(flat=flat, mask=mask), Normalise(reference=1e4),
                  Threshold(cut=cut)])[0]
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
        paths["C: bslz4_to_sparse raw cut"] = lambda f, k: c2s(f.data, int(cut))[0]
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
    return {"kept_mean": int(np.mean(kept)), "cut": cut,
            "ms_per_frame": {n: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                             for n, v in times.items()}}


# ------------------------------------------------------------------ the kernels' sum, in process


def node_name(node) -> str:
    """A fused node's kind with its parts: "dense (correct+normalise+threshold)"."""
    parts = getattr(node, "nodes", None)
    if node.kind == "dense" and parts:
        return f"dense ({'+'.join(n.kind for n in parts)})"
    return node.kind


def chain_figures(config) -> tuple[float, int]:
    """The chain's threshold cut and label min_pixels (ImageD11 uses the same)."""
    tables = {t["kind"]: t for t in config["node"]}
    return float(tables["threshold"].get("cut", 0.0)), int(tables["label"].get("min_pixels", 1))


def point_items(frames, monitors, step: float, npoints: int):
    """The points as a worker hands them to its chain: the frame as it arrived."""
    from stream.core.item import Item

    for i in range(npoints):
        k = i % len(frames)
        yield Item(i, "eiger", frame=frames[k], counters={"monitor": float(monitors[k])},
                   motors={"omega": i * step})


def kernel_pass(pipeline, linker, names, items, scan_id: str, npoints: int) -> dict:
    """One scan through the fused chain and the linker: CPU seconds per step."""
    from stream.core.scan import Scan

    scan = Scan.from_start(start_message(scan_id, npoints))
    pipeline.setup(scan)
    linker.setup(scan)
    spent = dict.fromkeys([*names, "linker"], 0.0)
    clock = time.thread_time
    for item in items:
        for name, node in zip(names, pipeline.chain, strict=True):
            t0 = clock()
            item = node.process(item)
            spent[name] += clock() - t0
        item.frame = None  # as Pipeline.process: only sparse results travel on
        t0 = clock()  # the collector's _link_point: the trajectory, then the linker
        linker.trajectory.observe(item.point_id, item.motors)
        linker.add_point(item.point_id, item.sparse, item.peaks, item.motors)
        spent["linker"] += clock() - t0
    t0 = clock()
    linker.finish()  # the cliques still open at the end, as the collector closes them
    spent["linker"] += clock() - t0
    return spent


def kernels_sum(config, frames, monitors, step: float, npoints: int = KERNEL_POINTS,
                repeats: int = KERNEL_REPEATS) -> dict:
    """Each step of the processor's chain (built and fused as a worker does) and the
    linker (as the collector builds it), thread CPU ms per frame: the median over
    `repeats` passes of `npoints` cycled frames (one pass more first, not counted)."""
    from nodes.link.linker import Linker
    from stream.run.pipeline import Pipeline

    pipeline = Pipeline(config.build_nodes())
    linker = Linker(**config["linker"])
    names = [node_name(n) for n in pipeline.chain]
    if len(set(names)) != len(names):
        names = [f"{k + 1} {n}" for k, n in enumerate(names)]
    per: dict[str, list[float]] = {name: [] for name in [*names, "linker"]}
    for r in range(repeats + 1):
        spent = kernel_pass(pipeline, linker, names,
                            point_items(frames, monitors, step, npoints), f"k{r}", npoints)
        if r:
            for name, s in spent.items():
                per[name].append(1e3 * s / npoints)
    ms = {name: statistics.median(v) for name, v in per.items()}
    return {"ms_per_frame": ms, "sum_ms": sum(ms.values()), "points": npoints,
            "repeats": repeats, "linker": dict(config["linker"])}


# ------------------------------------------------------------------ ImageD11, in process


@contextlib.contextmanager
def one_omp_thread():
    """OMP_NUM_THREADS=1 while ImageD11 loads, then as it was (the processor started
    later gets the environment a user has)."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


class ImageD11Bslz4:
    """ImageD11's own path for bslz4 chunks (lima_segmenter.reader with chunk2sparse):
    chunk2sparse(...).coo + clean, then sparse_connected_pixels, sparse_moments and
    overlaps_linear against the frame before (tools/bench_frame.py's ImageD11Path)."""

    def __init__(self, active: np.ndarray, cut: float, min_pixels: int):
        with one_omp_thread(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its multiprocessing start-method advice
            import bslz4_to_sparse
            import ImageD11.cImageD11
            from ImageD11 import sparseframe
            from ImageD11.sinograms import lima_segmenter
        if hasattr(ImageD11.cImageD11, "cimaged11_omp_set_num_threads"):
            ImageD11.cImageD11.cimaged11_omp_set_num_threads(1)
        self.sf, self.segmenter = sparseframe, lima_segmenter
        self.options = lima_segmenter.SegmenterOptions(cut=cut, howmany=100000,
                                                       pixels_in_spot=min_pixels)
        self.options.setup()
        self.options.mask = active  # 1 = active pixel
        self.chunk = bslz4_to_sparse.chunk2sparse(active, np.dtype(np.uint16))
        self.overlaps = sparseframe.overlaps_linear(SHAPE[0] * SHAPE[1] // 4)
        self.cut = int(cut)
        self.previous = None

    def process(self, frame) -> tuple[int, int]:
        """One compressed frame (its HDF5 chunk, 12-byte header included): pixels, peaks."""
        sf = self.sf
        npx, row, col, val = self.chunk.coo(frame.data, self.cut)
        if npx < 0:
            raise RuntimeError(f"bslz4_to_sparse: decoding error {npx}")
        spf = self.segmenter.clean(npx, row, col, val, self.options)
        if spf is None:
            self.previous = None
            return 0, 0
        npeaks = sf.sparse_connected_pixels(spf, label_name="labels", data_name="f32",
                                            threshold=0)
        sf.sparse_moments(spf, "f32", "labels")
        if self.previous is not None:
            prev, nprev = self.previous
            self.overlaps(spf.row, spf.col, spf.pixels["labels"], npeaks,
                          prev.row, prev.col, prev.pixels["labels"], nprev)
        self.previous = (spf, npeaks)
        return spf.nnz, int(npeaks)


def imaged11_path(frames, active: np.ndarray, cut: float, min_pixels: int,
                  npoints: int = KERNEL_POINTS, repeats: int = KERNEL_REPEATS) -> dict:
    """ImageD11's frames/s: 1 / the median over `repeats` passes of the mean wall time
    per frame over `npoints` cycled frames (one pass more first, not counted)."""
    path = ImageD11Bslz4(active, cut, min_pixels)
    ms: list[float] = []
    pixels = peaks = 0
    for r in range(repeats + 1):
        path.previous = None
        t0 = time.perf_counter()
        counts = [path.process(frames[i % len(frames)]) for i in range(npoints)]
        if r:
            ms.append(1e3 * (time.perf_counter() - t0) / npoints)
        pixels = int(np.mean([c[0] for c in counts]))
        peaks = int(np.mean([c[1] for c in counts]))
    med = statistics.median(ms)
    return {"frames_per_s": 1e3 / med, "ms_per_frame": {"min": min(ms), "median": med,
                                                        "max": max(ms)},
            "pixels_mean": pixels, "peaks_mean": peaks, "cut": int(cut),
            "pixels_in_spot": min_pixels, "omp_threads": 1, "masked": int((active == 0).sum())}


# ------------------------------------------------------------------ the processor


CORRECTED = """
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
cut = {cut}

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


def write_config(tmp: Path, flat, mask, args) -> Path | None:
    """The processor's config file, or None: the built-in defaults, no file at all.

    `args.chain` "corrected" (the default for callers without it: tools/bench_firstscan,
    tools/bench_latency) writes that chain and `[source] max_lag`; "defaults" writes no
    node, and a file only for `[workers]` (`args.workers_kind`) or a max_lag not 1000."""
    chain = getattr(args, "chain", "corrected")
    text = ""
    if chain == "corrected" or args.max_lag != 1000:
        text += f"\n[source]\nmax_lag = {args.max_lag}\n"
    if chain == "corrected":
        np.save(tmp / "flat.npy", flat)
        np.save(tmp / "mask.npy", mask)
        text += CORRECTED.format(cut=CUT)
    split = getattr(args, "split", None)
    if split:  # the linker's split ([linker] of the corrected chain, or a table alone)
        line = f'split = "{split}"\n'
        text = (text.replace("[linker]\n", "[linker]\n" + line) if "[linker]" in text
                else text + "\n[linker]\n" + line)
    if args.workers_kind:  # otherwise the defaults, as a user gets them
        text += (f'\n[workers]\nkind = "{args.workers_kind}"\ncount = {args.workers}\n'
                 f"queue = {args.queue}\n")
    if not text:
        return None
    path = tmp / "bench.toml"
    path.write_text(text)
    return path


class Processor:
    """`peakstream run` in a subprocess: its endpoint, finished scans, peak RSS, CPU."""

    def __init__(self, config: Path | None, output: Path, nscans: int,
                 command: list[str] | None = None):
        """`command`: what runs the `peakstream` CLI (default `python -m stream.cli`;
        tools/bench_lane.py runs it with simulated workers)."""
        cmd = [*(command or [sys.executable, "-m", "stream.cli"]), "-v", "run",
               *([str(config)] if config is not None else []), "--listen",
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
        self._seen: dict[int, tuple[str, int]] = {}  # every thread's last CPU ticks seen
        self._seen_lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._poll, daemon=True).start()
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

    def _poll(self):
        """Every 50 ms: the peak RSS, and each thread's CPU (a thread that ends, a
        checkpoint writer's, the workers' as the process exits, keeps its last figure)."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        while not self._stop:
            try:
                children = proc.children(recursive=True)
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in children)
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self._see_threads(children)
            time.sleep(0.05)

    def _see_threads(self, children: list) -> None:
        now = thread_ticks(self.proc.pid)
        for k, child in enumerate(sorted(children, key=lambda c: c.pid)):
            now.update(thread_ticks(child.pid, f"proc-{k}/"))
        with self._seen_lock:
            self._seen.update(now)

    def _children(self) -> list:
        import psutil

        try:
            return sorted(psutil.Process(self.proc.pid).children(recursive=True),
                          key=lambda c: c.pid)
        except psutil.Error:
            return []

    def cpu(self) -> float:
        """CPU seconds (user + system) of the processor and its workers so far."""
        import psutil

        procs = [psutil.Process(self.proc.pid), *self._children()]
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    def faults(self) -> int:
        """Minor page faults of the processor and its workers so far (a fault is a page
        the kernel maps for the first time: fresh allocations, page-cache growth)."""
        total = 0
        for pid in [self.proc.pid, *(c.pid for c in self._children())]:
            try:  # field 10 of /proc/PID/stat, counted after the name's closing ")"
                total += int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def threads(self) -> dict[int, tuple[str, int]]:
        """tid -> (thread name, CPU ticks) of every thread of the processor and its
        worker processes (named "proc-K/" + the thread's name, K in pid order) seen so
        far: those alive now, the others as last seen."""
        self._see_threads(self._children())
        with self._seen_lock:
            return dict(self._seen)

    def snapshot(self) -> dict:
        """What a scan's figures are the difference of: wall time, CPU, per-thread CPU."""
        return {"t": time.monotonic(), "cpu": self.cpu(), "faults": self.faults(),
                "threads": self.threads()}

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


def thread_figures(before: dict, after: dict, npoints: int) -> dict[str, dict]:
    """Per thread name: ms CPU per frame and % of a core over the scan."""
    wall = max(after["t"] - before["t"], 1e-9)
    return {name: {"ms_per_frame": 1e3 * v["cpu_s"] / npoints,
                   "core_pct": 100.0 * v["cpu_s"] / wall, "threads": v["threads"]}
            for name, v in thread_cpu(before["threads"], after["threads"]).items()}


# ------------------------------------------------------------------ py-spy


def start_profile(pid: int, seconds: float, out: Path, subprocesses: bool):
    """py-spy recording the processor for `seconds` (None without py-spy)."""
    exe = py_spy()
    if exe is None:
        print("  --profile: no py-spy (pip install .[bench]); not profiled", file=sys.stderr)
        return None
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--threads",
           "--nonblocking", "-o", str(out), "--duration", str(max(1, math.ceil(seconds)))]
    if subprocesses:
        cmd.append("--subprocesses")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_profile(spy, out: Path, names: dict[int, str]) -> dict | None:
    if spy is None:
        return None
    try:
        log, _ = spy.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        spy.kill()
        log, _ = spy.communicate()
    if spy.returncode != 0 or not out.exists():
        print(f"  --profile: py-spy failed ({spy.returncode}): {log.strip()[-500:]}",
              file=sys.stderr)
        return None
    return profile_summary(out.read_text(), names)


# ------------------------------------------------------------------ the stream


def run_sender(proc: Processor, args, frames_file: Path, scan_id: str, npoints: int):
    return subprocess.Popen(
        [sys.executable, __file__, "--send", proc.endpoint, "--frames-file", str(frames_file),
         "--points", str(npoints), "--scan-id", scan_id],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)


def one_scan(proc: Processor, args, frames_file: Path, tmp: Path, scan_id: str,
             profile_s: float = 0.0) -> dict:
    """Stream one scan; its figures (and py-spy's summary when `profile_s`)."""
    npoints = args.points
    proc.peak = 0
    sender = run_sender(proc, args, frames_file, scan_id, npoints)
    proc.wait_start(scan_id, args.timeout)  # setup is not part of the figure
    before = proc.snapshot()
    sender.stdin.write("go\n")
    sender.stdin.flush()
    spy_out = tmp / f"{scan_id}.pyspy.txt"
    spy = (start_profile(proc.proc.pid, profile_s, spy_out, args.workers_kind == "processes")
           if profile_s else None)
    out_text, err_text = sender.communicate(timeout=args.timeout)
    if sender.returncode != 0:
        raise RuntimeError(f"sender failed: {err_text}")
    sent = json.loads(out_text.strip().splitlines()[-1])
    status = proc.wait_scan(scan_id, args.timeout)
    after = proc.snapshot()
    figures = scan_figures(tmp / "out" / f"{scan_id}.h5", sent["t_first"], npoints)
    figures.update(scan=scan_id, status=status, peak_rss_mib=proc.peak / 2**20,
                   processor_cpu_ms=1e3 * (after["cpu"] - before["cpu"]) / npoints,
                   sender_cpu_ms=1e3 * sent["cpu"] / npoints,
                   processor_faults=(after["faults"] - before["faults"]) / npoints,
                   sender_frames_per_s=npoints / max(sent["t_last"] - sent["t_first"], 1e-9),
                   threads=thread_figures(before, after, npoints))
    if profile_s:
        names = {tid: name for tid, (name, _) in after["threads"].items()}
        figures["profiled"] = True  # py-spy's sampling ran during this scan
        figures["profile"] = finish_profile(spy, spy_out, names)
    print(f"  {scan_id}: {figures['frames_per_s']:.1f} frames/s, "
          f"{figures['lost']} lost, max lag {figures['max_lag']}, peak RSS "
          f"{figures['peak_rss_mib']:.0f} MiB, CPU {figures['processor_cpu_ms']:.1f} ms/frame "
          f"({status}{figures['reason'] and ': '}{figures['reason']})", file=sys.stderr)
    if status != "success":
        print("".join(line for line in proc.lines if "ERROR" in line
                      or "ended" in line)[-3000:], file=sys.stderr)
    return figures


def stream(args, frames_file: Path, config: Path | None, tmp: Path) -> tuple[dict, list[dict]]:
    """The first scan of a fresh processor, then `args.repeats` later scans."""
    scan_ids = ["first"] + [f"p2-{r}" for r in range(args.repeats)]
    proc = Processor(config, tmp / "out", len(scan_ids))
    scans = []
    try:
        for n, scan_id in enumerate(scan_ids):
            profile_s = 0.0
            if args.profile and n == 1:  # the first later scan, as long as the first took
                profile_s = scans[0]["seconds"]
            scans.append(one_scan(proc, args, frames_file, tmp, scan_id, profile_s))
    finally:
        proc.close()
    return scans[0], scans[1:]


# ------------------------------------------------------------------ the report


def versions() -> dict:
    import bitshuffle
    import numba
    import zmq

    from nodes.kernels.lz4 import DECODER
    from stream import __version__

    return {"peakstream": __version__, "lz4 decoder": DECODER, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "bitshuffle": bitshuffle.__version__,
            "ImageD11": package_version("ImageD11"),
            "bslz4_to_sparse": package_version("bslz4_to_sparse")}


def stats(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def median_of(scans: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in scans)


def print_paths(paths: dict) -> None:
    print(f"decode paths, ms per frame (min / median / max of 5), corrected dense pass at cut "
          f"{paths['cut']:g}, ~{paths['kept_mean']} pixels kept, same pixels on every path:")
    for name, t in paths["ms_per_frame"].items():
        print(f"  {name:<30}{t['min']:>7.2f}{t['median']:>7.2f}{t['max']:>7.2f}")


def print_kernels(kernels: dict, when: str = "") -> None:
    print(f"kernels  the processor's chain in this process{when}, thread CPU ms per frame "
          f"(median of {kernels['repeats']} passes x {kernels['points']} points):")
    for name, ms in kernels["ms_per_frame"].items():
        print(f"  {name:<40}{ms:>7.2f}")
    print(f"  {'kernels sum':<40}{kernels['sum_ms']:>7.2f}")


def print_imaged11(idx: dict, when: str = "") -> None:
    t = idx["ms_per_frame"]
    print(f"ImageD11 bslz4 path{when}, compute only, 1 thread, cut {idx['cut']}, pixels_in_spot "
          f"{idx['pixels_in_spot']}, {idx['masked']} pixels masked: ms per frame "
          f"{t['min']:.2f} / {t['median']:.2f} / {t['max']:.2f} -> "
          f"{idx['frames_per_s']:.1f} frames/s (~{idx['pixels_mean']} pixels, "
          f"~{idx['peaks_mean']} peaks per frame)")


def print_targets(first: dict, later: list[dict]) -> None:
    print(f"{'P2 figure':<24}{'first scan':>12}{'later min / median / max':>28}   target")
    rows = [("frames/s", "frames_per_s", ">= 200"), ("lost points", "lost", "0"),
            ("bad points", "bad", "0"), ("max lag (points)", "max_lag", "<= 5"),
            ("peak RSS (MiB)", "peak_rss_mib", "<= 1024"),
            ("sender frames/s", "sender_frames_per_s", ""),
            ("processor CPU ms/frame", "processor_cpu_ms", ""),
            ("page faults/frame", "processor_faults", ""),
            ("sender CPU ms/frame", "sender_cpu_ms", "")]
    for label, key, target in rows:
        later_text = stats([s[key] for s in later]) if later else "-"
        print(f"{label:<24}{first[key]:>12.1f}{later_text:>28}   {target}")


def thread_summary(first: dict, later: list[dict]) -> dict[str, dict]:
    """Per thread name: the first scan's ms/frame and % of a core, the later scans'
    medians (0 for a scan where no thread had the name)."""
    names = set(first["threads"]).union(*(s["threads"] for s in later))
    out = {}
    for name in names:
        row = {"first_ms_per_frame": first["threads"].get(name, {}).get("ms_per_frame", 0.0),
               "first_core_pct": first["threads"].get(name, {}).get("core_pct", 0.0),
               "threads": max(s["threads"].get(name, {}).get("threads", 0)
                              for s in [first, *later])}
        for key in ("ms_per_frame", "core_pct") if later else ():
            row[key] = statistics.median(s["threads"].get(name, {}).get(key, 0.0)
                                         for s in later)
        out[name] = row
    return dict(sorted(out.items(), key=lambda kv: -kv[1].get("ms_per_frame",
                                                              kv[1]["first_ms_per_frame"])))


def print_threads(summary: dict[str, dict], first: dict, later: list[dict]) -> None:
    print(f"processor CPU per thread{'ms/frame first':>22}{'later':>8}{'% core first':>14}"
          f"{'later':>8}")
    nan = float("nan")
    for name, r in summary.items():
        label = f"{name} x{r['threads']}" if r["threads"] > 1 else name
        print(f"  {label:<36}{r['first_ms_per_frame']:>8.2f}{r.get('ms_per_frame', nan):>8.2f}"
              f"{r['first_core_pct']:>14.1f}{r.get('core_pct', nan):>8.1f}")
    rows = summary.values()
    print(f"  {'all threads':<36}{sum(r['first_ms_per_frame'] for r in rows):>8.2f}"
          f"{sum(r.get('ms_per_frame', nan) for r in rows):>8.2f}"
          f"{sum(r['first_core_pct'] for r in rows):>14.1f}"
          f"{sum(r.get('core_pct', nan) for r in rows):>8.1f}")
    total = median_of(later, "processor_cpu_ms") if later else float("nan")
    print(f"  {'the process (psutil)':<36}{first['processor_cpu_ms']:>8.2f}{total:>8.2f}")


def print_profile(profile: dict) -> None:
    total = sum(t["samples"] for t in profile.values())
    print(f"profile  py-spy, first later scan, {total} samples (100/s, active threads only); "
          "per thread, share by innermost frame of stream/ or nodes/ (~: none, the leaf):")
    for name, t in profile.items():
        print(f"  {name}: {t['samples']} samples ({100 * t['samples'] / max(total, 1):.0f}%)")
        for func, share in t["top"]:
            print(f"    {100 * share:5.1f}%  {func}")


def reference(report: dict, name: str, key: str, digits: int = 2) -> tuple[float, str]:
    """A reference figure measured before the stream and, when it was, after it: their
    mean, and how they read ("2.44" or "mean of 2.44 before and 2.51 after")."""
    values = [r[name][key] for r in (report, report.get("after", {})) if r.get(name)]
    if len(values) == 1:
        return values[0], f"{values[0]:.{digits}f}"
    return (sum(values) / 2,
            f"mean of {values[0]:.{digits}f} before and {values[1]:.{digits}f} after")


def ratios(report: dict, later: list[dict]) -> dict:
    out = {}
    if "kernels" in report:
        out["processor_cpu_over_kernels"] = (median_of(later, "processor_cpu_ms")
                                             / reference(report, "kernels", "sum_ms")[0])
    if report.get("imaged11"):
        out["end_to_end_over_imaged11"] = (median_of(later, "frames_per_s")
                                           / reference(report, "imaged11", "frames_per_s")[0])
    return out


def print_ratios(r: dict, report: dict, later: list[dict]) -> None:
    if "processor_cpu_over_kernels" in r:
        print(f"{'processor CPU / kernels sum':<34}{r['processor_cpu_over_kernels']:>6.2f}   "
              f"target <= 1.3 ({median_of(later, 'processor_cpu_ms'):.2f} ms per frame, later "
              f"scans' median, / {reference(report, 'kernels', 'sum_ms')[1]} ms)")
    if "end_to_end_over_imaged11" in r:
        print(f"{'end to end / ImageD11 compute':<34}{r['end_to_end_over_imaged11']:>6.2f}   "
              f"target >= 1.5 ({median_of(later, 'frames_per_s'):.1f} frames/s, later scans' "
              f"median, / ImageD11 on one core "
              f"{reference(report, 'imaged11', 'frames_per_s', 1)[1]} frames/s)")


# ------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--points", type=int, default=5000, help="points per scan (default 5000)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="later scans, after the first scan (default 5)")
    ap.add_argument("--chain", choices=CHAINS, default="defaults",
                    help="defaults: no config file, the built-in chain (cut 50, label, "
                         "properties, linker fraction + local_max); corrected: flat + mask, "
                         "normalise, cut 40, label, properties, linker any_pixel")
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames cycled (default 8)")
    ap.add_argument("--spots", type=int, default=600,
                    help="spots of the simulated scan (default 600: ~300 per frame)")
    ap.add_argument("--split", choices=("none", "local_max", "pixels"),
                    help="[linker] split (default: the chain's: local_max)")
    ap.add_argument("--workers-kind", choices=("inline", "threads", "processes"),
                    help="a [workers] table of this kind (default: none, the built-in "
                         "defaults as a user gets them: threads, one per core)")
    ap.add_argument("--workers", type=int, default=0,
                    help="with --workers-kind: [workers] count (0: one per core)")
    ap.add_argument("--queue", type=int, default=0,
                    help="with --workers-kind: [workers] queue, points between receiver and "
                         "collector, which bounds the lag (0: 2 per worker and one more, at "
                         "least 5)")
    ap.add_argument("--max-lag", type=int, default=1000,
                    help="[source] max_lag (default 1000, the built-in: no [source] table)")
    ap.add_argument("--no-paths", action="store_true", help="skip the per-frame decode paths")
    ap.add_argument("--no-after", action="store_true",
                    help="measure the kernels' sum and ImageD11 before the stream only (by "
                         "default again after it: the ratios use the mean of both)")
    ap.add_argument("--no-imaged11", action="store_true",
                    help="skip ImageD11's bslz4 path (compute only, one core)")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the processor during the first later scan (pip install "
                         ".[bench]) and print, per thread, where its samples are")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--send", help=argparse.SUPPRESS)  # sender mode: the endpoint
    ap.add_argument("--frames-file", help=argparse.SUPPRESS)
    ap.add_argument("--scan-id", default="p2", help=argparse.SUPPRESS)
    return ap.parse_args()


def config_note(path: Path | None) -> str:
    """The config file in a line: its tables other than the chain and the linker."""
    if path is None:
        return "no config file (the built-in defaults)"
    import tomllib

    data = tomllib.loads(path.read_text())
    rest = "; ".join(f"[{group}] " + ", ".join(f"{k} = {v!r}" for k, v in table.items())
                     for group, table in data.items() if group not in ("node", "linker"))
    return f"config file with the chain and linker above{'; ' if rest else ''}{rest}" \
        if "node" in data else f"config file: {rest}"


def in_process(report: dict, args, config, frames, monitors, flat, mask, step) -> None:
    """The decode paths, the kernels' sum and ImageD11, on the same frames, before the
    stream (the same machine state, no processor running)."""
    cut, _ = chain_figures(config)
    if not args.no_paths:
        report["decode_paths"] = decode_paths(frames, monitors, flat, mask, 5, cut)
        print_paths(report["decode_paths"])
    report.update(references(args, config, frames, monitors, mask, step))


def references(args, config, frames, monitors, mask, step, when: str = "") -> dict:
    """The kernels' sum and ImageD11's rate (`--no-imaged11`: not), printed; measured
    before the stream and again after it (`when`), so that a machine that changes speed
    meanwhile shows, and the ratios use both."""
    cut, min_pixels = chain_figures(config)
    out = {"kernels": kernels_sum(config, frames, monitors, step)}
    print_kernels(out["kernels"], when)
    if not args.no_imaged11:
        # the processor's mask: the corrected chain's, none for the defaults (masked
        # pixels are 0 in these frames: the same pixels are kept either way)
        active = ((mask == 0) if args.chain == "corrected" else np.ones(SHAPE, bool))
        try:
            out["imaged11"] = imaged11_path(frames, active.astype(np.uint8), cut, min_pixels)
            print_imaged11(out["imaged11"], when)
        except ImportError as exc:
            print(f"ImageD11 bslz4 path skipped: {exc}")
    return out


def main() -> int:
    args = parse_args()
    if args.send:
        return send(args)
    from stream.config.schema import Config

    frames_file = make_frames(args.distinct, args.spots, Path(tempfile.gettempdir()))
    frames, monitors, flat, mask, step = load_frames(frames_file)
    ratio = np.mean([f.nbytes / f.buffer.nbytes for f in frames])
    report = {"machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
              "versions": versions(), "chain": args.chain,
              "frames": {"shape": list(SHAPE), "dtype": "uint16", "encoding": "bslz4",
                         "distinct": len(frames), "spots_in_scan": args.spots,
                         "compressed_mib": float(np.mean([f.buffer.nbytes for f in frames]))
                         / 2**20, "ratio": float(ratio)},
              "workers": {"kind": args.workers_kind, "count": args.workers,
                          "queue": args.queue}}
    m, v, fr = report["machine"], report["versions"], report["frames"]
    print(f"machine  {m['cores']} cores, {m['cpu']}, load {os.getloadavg()[0]:.1f}")
    print("versions " + ", ".join(f"{k} {x}" for k, x in v.items()))
    print(f"frames   {SHAPE[0]}x{SHAPE[1]} uint16 bslz4, {fr['compressed_mib']:.2f} MiB each "
          f"(ratio {ratio:.1f}), {len(frames)} distinct")
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        tmp = Path(tmp)
        config_path = write_config(tmp, flat, mask, args)
        config = Config.load(config_path)
        report["config"] = config_path.read_text() if config_path else None
        cut, min_pixels = chain_figures(config)
        print(f"chain    {args.chain}: " + ", ".join(t["kind"] for t in config["node"])
              + f" (cut {cut:g}, min_pixels {min_pixels}), linker "
              + ", ".join(f"{k} {x}" for k, x in config["linker"].items()))
        print(f"         {config_note(config_path)}")
        in_process(report, args, config, frames, monitors, flat, mask, step)
        how = (f"workers {args.workers_kind} x {args.workers or 'auto'}, queue "
               f"{args.queue or 'default'}" if args.workers_kind else "the default [workers]")
        print(f"stream   first scan + {args.repeats} later x {args.points} points, {how}",
              flush=True)
        first, later = stream(args, frames_file, config_path, tmp)
        if not args.no_after:
            report["after"] = references(args, config, frames, monitors, mask, step,
                                         " after the stream")
    report["first_scan"], report["later_scans"] = first, later
    print(f"         ~{first['kept_mean']:.0f} pixels kept, ~{first['peaks2d_mean']:.0f} "
          f"2D peaks per frame, {first['cliques']} cliques in the first scan")
    print_targets(first, later)
    report["threads"] = thread_summary(first, later)
    print_threads(report["threads"], first, later)
    if later:
        report["ratios"] = ratios(report, later)
        print_ratios(report["ratios"], report, later)
    profiled = next((s.pop("profile") for s in later if s.get("profile")), None)
    if profiled:
        report["profile"] = profiled
        print_profile(profiled)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
