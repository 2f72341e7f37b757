"""Per-frame cost of the chain on EIGER2 4M frames, stage by stage.

    python tools/bench_frame.py [--frames 8] [--repeats 5] [--spots 300] [--json out.json]

Frames come from the middle of a simulated 20-point scan (Poisson background
10, flat gain, monitor drift, ~300 spots per frame; the measured pixels and
2D peaks per frame are printed); the chain is correct (dark, flat, mask) + normalise +
threshold fused into one dense pass, then label, properties and link. Prints
min / median / max ms per frame over the repeats, with the machine, the
versions, the frame shape, spots and pixels kept, and scipy's
threshold + ndimage.label on the same frames as a floor reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numba
import numpy as np
import scipy
from scipy import ndimage

from nodes import NODES, fuse
from nodes.link import Linker
from stream.item import Item
from stream.scan import Scan
from stream.sources.simulate import SimConfig, Simulation


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6,
                    help="frames per repeat, from the middle of the scan (default 6)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats (default 5, at least 5)")
    ap.add_argument("--spots", type=int, default=600,
                    help="spots in the 20-point scan (default 600: ~300 per middle frame)")
    ap.add_argument("--cut", type=float, default=40.0, help="threshold (default 40)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    shape = (2162, 2068)
    npoints = max(args.frames + 14, 20)  # the simulator keeps spots off the scan ends
    sim = Simulation(SimConfig(npoints=npoints, shape=shape, spots=args.spots, seed=1,
                               sigma_points=(0.7, 1.2)))
    first = (npoints - args.frames) // 2
    print(f"making {args.frames} frames {shape[0]}x{shape[1]} uint16 ...", file=sys.stderr)
    frames = [(i, sim.frame(i), sim.monitor_value(i)) for i in range(first, first + args.frames)]
    dark = np.zeros(shape, np.float32)
    scan = Scan.from_start(sim.start("bench"))
    chain = fuse([NODES["correct"](dark=dark, flat=sim.flat, mask=sim.mask),
                  NODES["normalise"](counter="monitor", reference=sim.config.monitor),
                  NODES["threshold"](cut=args.cut)])
    dense = chain[0]
    label, props, linker = NODES["label"](min_pixels=2), NODES["properties"](), Linker()
    for node in (dense, label, props, linker):
        node.setup(scan)

    stages = ("dense", "label", "properties", "link", "total", "scipy_label")
    times: dict[str, list[float]] = {s: [] for s in stages}
    kept = peaks = 0  # summed over all frames and repeats
    for _ in range(max(args.repeats, 5)):
        linker.setup(scan)
        acc = dict.fromkeys(stages, 0.0)
        for i, frame, monitor in frames:
            item = Item(i, "eiger", frame=frame, counters={"monitor": monitor},
                        motors={"omega": sim.omega(i)})
            t0 = time.perf_counter()
            item = dense.process(item)
            t1 = time.perf_counter()
            item = label.process(item)
            t2 = time.perf_counter()
            item = props.process(item)
            t3 = time.perf_counter()
            linker.add_point(i - first, item.sparse, item.peaks, item.motors)
            t4 = time.perf_counter()
            ndimage.label(frame > args.cut, structure=np.ones((3, 3)))
            t5 = time.perf_counter()
            for s, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0, t5 - t4),
                             strict=True):
                acc[s] += dt
            kept += item.sparse.nnz
            peaks += len(item.peaks["npx"])
        for s in stages:
            times[s].append(1e3 * acc[s] / len(frames))
    nrun = len(frames) * len(times["total"])
    kept, peaks = kept // nrun, peaks // nrun

    report = {
        "machine": {"cores": numba.config.NUMBA_NUM_THREADS, "cpu": cpu_model(),
                    "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "scipy": scipy.__version__},
        "frame": {"shape": list(shape), "dtype": "uint16", "spots_in_scan": args.spots,
                  "pixels_kept_mean": kept, "peaks2d_mean": peaks, "frames": len(frames)},
        "ms_per_frame": {s: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                         for s, v in times.items()},
    }
    m = report["machine"]
    print(f"machine  {m['cores']} cores, {m['cpu']}, Python {m['python']}")
    print("versions " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"frame    {shape[0]}x{shape[1]} uint16, {args.spots} spots in scan, ~{kept} pixels "
          f"kept, ~{peaks} 2D peaks per frame, {len(frames)} frames x {len(times['total'])}")
    print(f"{'stage':<14}{'min ms':>9}{'median':>9}{'max':>9}")
    for s, v in report["ms_per_frame"].items():
        print(f"{s:<14}{v['min']:>9.2f}{v['median']:>9.2f}{v['max']:>9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
