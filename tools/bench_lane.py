"""Lane capacity: how many worker cores the serial part of the lane can feed.

    python tools/bench_lane.py                          # 1, 2, 4, 8 simulated worker cores
    python tools/bench_lane.py --workers 4 8 16 --points 4000 --json lane.json
    python tools/bench_lane.py --pin                    # the lane on one core of its own

The stream of tools/bench_stream.py (bslz4 EIGER2 4M frames over tcp loopback into
`peakstream run`, the built-in defaults), but the processor's worker threads are
simulated worker cores: a simulated worker holds each point for the chain's kernel
time (`--work-ms`; by default the threshold, label and properties measured in this
process on the same frames, as bench_stream's kernels' sum) without using a CPU
(it sleeps, GIL released), then hands back the result that its chain computed for
the same frame earlier in the scan (the first `--distinct` points of each scan are
processed for real; the sender cycles that many frames). Everything else is real:
the sender process, ZeroMQ's tcp receive, the runner's decode and dispatch, the
reorder buffer, the linker, the stores and their checkpoints, on this machine's
cores. So N simulated workers are N cores' worth of chain that cost the machine
nothing, and the frames/s a scan reaches with them is what the lane (and the
sender, which shares the machine) can carry: where it falls short of N workers'
rate (N x 1000 / work-ms), the lane caps.

`--pin` puts the processor (the whole lane: every thread of it) on the first core
and the sender (and this script) on the others (taskset / sched_setaffinity): the
frames/s are then what the lane carries on one core of its own, the other cores
being the worker cores it would feed.

Per count: the later scans' median frames/s against the N workers' rate, the
processor's CPU per frame (the lane's, the simulated workers use next to none),
the main thread's and the I/O thread's share of a core, and 0 lost. The first scan
of each processor (its kernels load, its cache of results fills) is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def serve(argv: list[str]) -> int:
    """The processor with simulated workers: `bench_lane.py --serve WORK_MS DISTINCT`
    followed by the `peakstream` arguments."""
    import threading

    import numpy as np

    import stream.run.threadpool as threadpool
    from stream.cli.main import main
    from stream.core.item import Item, SparseFrame
    from stream.core.messages import Point
    from stream.run.tasks import Result

    work_s, distinct = float(argv[0]) / 1e3, int(argv[1])
    done: dict[tuple[int, int], Result] = {}  # (scan, frame) -> the chain's result
    lock = threading.Lock()

    class SimulatedWorker(threadpool.Worker):
        def run(self, seq, scan, pid, point, params=None, preview=0):
            with lock:
                first = done.get((scan, pid % distinct))
            if first is None or preview or not isinstance(point, Point):
                out = super().run(seq, scan, pid, point, params, preview)
                if out.status == "ok" and not preview:
                    with lock:
                        done[(scan, pid % distinct)] = out
                return out
            time.sleep(work_s)  # the chain's time on a core of its own
            sp = first.item.sparse
            item = Item(pid, self.detector, point.time, point.motors, point.counters)
            item.sparse = SparseFrame(sp.shape, sp.row.copy(), sp.col.copy(),
                                      sp.intensity.copy(),
                                      None if sp.label is None else sp.label.copy(),
                                      sp.npeaks, None if sp.runs is None else sp.runs.copy())
            item.peaks = {k: np.copy(v) for k, v in first.item.peaks.items()}
            item.outputs = {k: np.copy(v) for k, v in first.item.outputs.items()}
            return Result(seq, scan, pid, item, "ok")

    threadpool.Worker = SimulatedWorker
    return main(argv[2:])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8],
                    help="simulated worker cores, one processor each (default 1 2 4 8)")
    ap.add_argument("--points", type=int, default=3000, help="points per scan (default 3000)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="later scans per count, after the first (default 2)")
    ap.add_argument("--work-ms", type=float, default=0.0,
                    help="ms a simulated worker holds a point (default: the chain's kernels, "
                         "threshold + label + properties, measured in this process)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames cycled (default 8)")
    ap.add_argument("--spots", type=int, default=600, help="spots of the simulated scan")
    ap.add_argument("--pin", action="store_true",
                    help="the processor on core 0, the sender on the others")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    return ap.parse_args()


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2:])
    args = parse_args()
    import bench_stream as bs
    from benchinfo import cpu_model

    from stream.config.schema import Config

    frames_file = bs.make_frames(args.distinct, args.spots, Path(tempfile.gettempdir()))
    frames, monitors, _, _, step = bs.load_frames(frames_file)
    print(f"machine  {os.cpu_count()} cores, {cpu_model()}, load {os.getloadavg()[0]:.1f}")
    kernels = bs.kernels_sum(Config.load(None), frames, monitors, step)
    chain_ms = kernels["sum_ms"] - kernels["ms_per_frame"]["linker"]
    work_ms = args.work_ms or chain_ms
    print(f"kernels  chain {chain_ms:.2f} ms a frame, linker "
          f"{kernels['ms_per_frame']['linker']:.2f} (thread CPU, in this process); a simulated "
          f"worker holds a point {work_ms:.2f} ms: {1e3 / work_ms:.0f} frames/s per worker")
    print(f"stream   {args.points} points a scan, {args.repeats} later scans per count, "
          f"bslz4 EIGER2 4M over tcp, the built-in chain", flush=True)
    pin: list[str] = []
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            print("bench_lane: --pin needs 2 cores", file=sys.stderr)
            return 2
        os.sched_setaffinity(0, cores[1:])  # the sender, started from here, inherits it
        pin = ["taskset", "-c", str(cores[0])]
        print(f"pinned   the processor on core {cores[0]}, the sender on "
              f"{','.join(map(str, cores[1:]))}")
    rows = []
    for n in args.workers:
        ns = argparse.Namespace(chain="defaults", max_lag=1000, split=None,
                                workers_kind="threads", workers=n, queue=0,
                                points=args.points, timeout=args.timeout)
        with tempfile.TemporaryDirectory(prefix="bench-lane-") as tmp:
            tmp = Path(tmp)
            config = bs.write_config(tmp, None, None, ns)
            proc = bs.Processor(config, tmp / "out", args.repeats + 1,
                                command=[*pin, sys.executable, __file__, "--serve", f"{work_ms}",
                                         str(args.distinct)])
            try:
                scans = [bs.one_scan(proc, ns, frames_file, tmp, scan_id)
                         for scan_id in ["first", *(f"lane-{r}" for r in range(args.repeats))]]
            finally:
                proc.close()
        rows.append(row_of(n, work_ms, scans[1:] or scans))
    print_rows(rows, args.pin)
    if args.json:
        Path(args.json).write_text(json.dumps({"work_ms": work_ms, "kernels": kernels,
                                               "counts": rows}, indent=2))
    return 0


def row_of(n: int, work_ms: float, later: list[dict]) -> dict:
    """The later scans' medians for `n` simulated workers."""
    def med(key: str) -> float:
        return statistics.median(s[key] for s in later)

    def thread(prefix: str, key: str) -> float:
        return statistics.median(sum(v[key] for name, v in s["threads"].items()
                                     if name.startswith(prefix)) for s in later)

    fps = med("frames_per_s")
    return {"workers": n, "workers_rate": n * 1e3 / work_ms, "frames_per_s": fps,
            "lost": max(s["lost"] for s in later), "max_lag": max(s["max_lag"] for s in later),
            "processor_cpu_ms": med("processor_cpu_ms"), "sender_cpu_ms": med("sender_cpu_ms"),
            "main_core_pct": thread("python", "core_pct"),
            "main_ms": thread("python", "ms_per_frame"),
            "io_core_pct": thread("ZMQbg/IO", "core_pct"),
            "workers_ms": thread("worker-", "ms_per_frame"),
            "machine_core_pct": fps * (med("processor_cpu_ms") + med("sender_cpu_ms")) / 10}


def print_rows(rows: list[dict], pinned: bool) -> None:
    print(f"{'workers':>7}{'their rate':>12}{'frames/s':>10}{'of rate':>9}{'lost':>6}"
          f"{'lag':>5}{'CPU ms':>8}{'main %':>8}{'main ms':>9}{'I/O %':>7}{'workers ms':>12}"
          f"{'machine %':>11}")
    for r in rows:
        print(f"{r['workers']:>7}{r['workers_rate']:>12.0f}{r['frames_per_s']:>10.1f}"
              f"{100 * r['frames_per_s'] / r['workers_rate']:>8.0f}%{r['lost']:>6}"
              f"{r['max_lag']:>5}{r['processor_cpu_ms']:>8.2f}{r['main_core_pct']:>8.1f}"
              f"{r['main_ms']:>9.2f}{r['io_core_pct']:>7.1f}{r['workers_ms']:>12.2f}"
              f"{r['machine_core_pct']:>11.0f}")
    print(f"(their rate: N x 1000 / work-ms; CPU ms: the processor's per frame; main / I/O "
          f"%: of a core; machine %: processor + sender CPU, in cores x 100, of "
          f"{100 * os.cpu_count()}%"
          + ("; pinned: the processor on one core, so frames/s x CPU ms <= 1000)" if pinned
             else ")"))


if __name__ == "__main__":
    sys.exit(main())
