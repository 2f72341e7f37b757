"""P4 soak: memory over a 100,000-point scan through collector, linker and store; and
memory, open files and threads of a daemon over many short scans (`--daemon`).

    python tools/bench_soak.py [--points 100000] [--peaks 50] [--through collector|runner]
                               [--trace] [--json out.json] [--check]
    python tools/bench_soak.py --daemon [--scans 250] [--json out.json]

Small labelled sparse frames (512 x 512, ~`--peaks` 2D peaks of ~20 pixels each;
every spot lives on 3 consecutive points, so the linker joins and closes cliques
all the time) from a cyclic pool of 300 distinct frames go, inline in one
process, either straight into the scan's collector (reorder buffer -> linker ->
HDF5 store; the default) or through `ScanRunner.handle` on the wire encoding
(decode, label, properties, result encoding, collector: `--through runner`).
Prints RSS after 10k points and at each further 10k, the growth from 10k to the
end (P4: below 10 %), points/s per 10k block (min / median / max), and with
`--trace` the Python allocations that grew most between 10k and the end. The
exit status is 0 whether P4 is met or not (a short run's growth is mostly
warm-up); `--check` makes a miss exit 1.

With `--daemon` (the soak test's growth check, which a busy CI machine cannot
time): `peakstream daemon` in a subprocess (thread workers, a live subscriber
in this process) takes `--scans` short simulated scans back to back; printed
are its open files, threads and RSS (min / median / max over 10 scans) after
the warm-up, in the middle and at the end, and the growth of the median RSS
over the second half (measured before: +3 MiB from scan 40 to 250, +0.5 MiB
from 250 to 800; keeping a scan's data would add > 25 kB a scan).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchinfo import cpu_model  # noqa: E402
from soak_daemon import soak_daemon  # noqa: E402

from nodes.properties import Properties  # noqa: E402
from stream.config.schema import Config  # noqa: E402
from stream.core.item import Item, SparseFrame  # noqa: E402
from stream.core.messages import DetectorInfo, End, Point, Start  # noqa: E402
from stream.run.runner import ScanRunner  # noqa: E402
from stream.wire.codec import encode  # noqa: E402

SHAPE = (512, 512)
POOL = 300  # distinct frames, cycled
LIFE = 3  # points each spot lives on
CELL = 32  # one spot per 32 x 32 cell, so spots of one frame never touch


def frame_pool(peaks: int, seed: int = 0) -> list[tuple[SparseFrame, dict]]:
    """POOL labelled sparse frames (and their 2D peak tables), cyclic in time."""
    rng = np.random.default_rng(seed)
    ncells = (SHAPE[0] // CELL) * (SHAPE[1] // CELL)
    busy = np.zeros((POOL, ncells), bool)
    spots: list[list[tuple[int, int, int, float]]] = [[] for _ in range(POOL)]
    for f in range(POOL):
        frames = [(f + k) % POOL for k in range(LIFE)]
        free = np.flatnonzero(~busy[frames].any(axis=0))
        for cell in rng.choice(free, size=min(len(free), peaks // LIFE), replace=False):
            r0 = (cell // (SHAPE[1] // CELL)) * CELL + rng.integers(2, CELL - 8)
            c0 = (cell % (SHAPE[1] // CELL)) * CELL + rng.integers(2, CELL - 8)
            busy[frames, cell] = True
            for k, g in enumerate(frames):
                spots[g].append((int(r0), int(c0), k, float(rng.uniform(200, 2000))))
    props = Properties()
    pool = []
    for f in range(POOL):
        image = np.zeros(SHAPE, np.float32)
        for r0, c0, k, peak in spots[f]:  # a rocking curve: brightest in the middle
            rr, cc = np.mgrid[0:4 + k % 2, 0:5]
            image[r0:r0 + rr.shape[0], c0:c0 + 5] = peak * (0.5 + 0.5 * (k == 1)) * np.exp(
                -((rr - 1.5) ** 2 + (cc - 2) ** 2) / 4)
        row, col = np.nonzero(image)
        blob = np.zeros(SHAPE, np.int32)
        for n, (r0, c0, _, _) in enumerate(sorted(spots[f]), start=1):
            blob[r0:r0 + 5, c0:c0 + 5] = n
        first = {}
        label = np.array([first.setdefault(b, len(first) + 1) for b in blob[row, col]],
                         np.int32)  # numbered in raster order of each blob's first pixel
        sparse = SparseFrame(SHAPE, row.astype(np.uint16), col.astype(np.uint16),
                             image[row, col], label, len(first))
        item = props.process(Item(0, "eiger", sparse=sparse))
        pool.append((sparse, item.peaks))
    return pool


def start_message(npoints: int) -> Start:
    return Start("soak", {"eiger": DetectorInfo(SHAPE, "float32")}, ["omega"], ["monitor"],
                 npoints, {"kind": "sweep"})


def config_text(through: str) -> str:
    chain = "" if through == "collector" else (
        '[[node]]\nkind = "label"\nmin_pixels = 2\n\n[[node]]\nkind = "properties"\n')
    return f'{chain}\n[linker]\ncriterion = "any_pixel"\n\n[output]\nflush_interval = 1.0\n'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--peaks", type=int, default=50, help="2D peaks per frame (default 50)")
    ap.add_argument("--through", choices=("collector", "runner"), default="collector")
    ap.add_argument("--every", type=int, default=10_000, help="RSS every N points")
    ap.add_argument("--trace", action="store_true", help="tracemalloc: what grew (slower)")
    ap.add_argument("--output", help="the HDF5 file (default: a temporary one)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--daemon", action="store_true",
                    help="many short scans into a `peakstream daemon` subprocess instead")
    ap.add_argument("--scans", type=int, default=250, help="with --daemon (default 250)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when the growth misses P4 (a short run's growth is mostly "
                         "warm-up: check on the default 100,000 points)")
    args = ap.parse_args()
    if args.daemon:
        return soak_daemon(args.scans, args.json)

    pool = frame_pool(args.peaks)
    npx = [sp.nnz for sp, _ in pool]
    npk = [sp.npeaks for sp, _ in pool]
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.output or Path(tmp.name) / "soak.h5")
    config = Config.from_text(config_text(args.through), "<soak>")
    runner = ScanRunner(config, output_file=path)
    runner.handle(encode(start_message(args.points)))
    collector = runner.current.collector
    proc = psutil.Process()
    if args.trace:
        tracemalloc.start(8)
    marks: list[dict] = []
    snap = None
    t0 = t_block = time.perf_counter()
    for pid in range(args.points):
        sparse, peaks = pool[pid % POOL]
        motors, counters = {"omega": pid * 0.05}, {"monitor": 1e4}
        if args.through == "collector":
            collector.add(Item(pid, "eiger", float(pid), motors, counters, sparse=sparse,
                               peaks=peaks))
        else:
            plain = SparseFrame(SHAPE, sparse.row, sparse.col, sparse.intensity)
            runner.handle(encode(Point("soak", pid, float(pid), motors, counters,
                                       {"eiger": plain})))
        if (pid + 1) % args.every == 0:
            now = time.perf_counter()
            marks.append({"points": pid + 1, "rss": proc.memory_info().rss,
                          "points_per_s": args.every / (now - t_block)})
            t_block = now
            if args.trace and pid + 1 == args.every:
                snap = tracemalloc.take_snapshot()
            m = marks[-1]
            print(f"  {m['points']:>7d} points  RSS {m['rss'] / 2**20:7.1f} MiB  "
                  f"{m['points_per_s']:8.0f} points/s", file=sys.stderr, flush=True)
    grew = []
    if args.trace and snap is not None:
        stats = tracemalloc.take_snapshot().compare_to(snap, "lineno")
        grew = [str(s) for s in stats[:12]]
    runner.handle(encode(End("soak", "success", args.points)))
    runner.close()
    total = time.perf_counter() - t0
    result = runner.results[0]

    first, last = marks[0], marks[-1]
    growth = 100.0 * (last["rss"] - first["rss"]) / first["rss"]
    rates = [m["points_per_s"] for m in marks]
    import h5py
    import numba

    print(f"machine     {psutil.cpu_count()} cores, {cpu_model()}")
    print(f"versions    python {platform.python_version()}, numpy {np.__version__}, "
          f"numba {numba.__version__}, h5py {h5py.__version__}")
    print(f"frames      {SHAPE[0]} x {SHAPE[1]}, pool of {POOL}; per frame 2D peaks "
          f"{min(npk)}..{max(npk)} (mean {np.mean(npk):.1f}), pixels kept {min(npx)}.."
          f"{max(npx)} (mean {np.mean(npx):.0f}); spots live {LIFE} points")
    print(f"path        {args.through}: {result['status']}, {result['linked']} points linked, "
          f"{result['cliques']} cliques, file {path.stat().st_size / 2**20:.1f} MiB")
    print("points      RSS MiB")
    for m in marks:
        print(f"  {m['points']:>7d}   {m['rss'] / 2**20:8.1f}")
    print(f"growth      {growth:+.2f} % from {first['points']} to {last['points']} points "
          f"(P4 target: below 10 %: {'met' if growth < 10.0 else 'NOT met'})")
    print(f"rate        points/s per {args.every} block: min / median / max "
          f"{min(rates):.0f} / {statistics.median(rates):.0f} / {max(rates):.0f}; "
          f"overall {args.points / total:.0f}")
    for line in grew:
        print(f"  grew: {line}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"through": args.through, "points": args.points, "marks": marks,
                       "growth_percent": growth, "points_per_s": args.points / total,
                       "cliques": int(result["cliques"]), "grew": grew}, f, indent=2)
    tmp.cleanup()
    return 1 if args.check and growth >= 10.0 else 0


if __name__ == "__main__":
    sys.exit(main())
