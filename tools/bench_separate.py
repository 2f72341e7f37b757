"""Linker split "pixels" in the background: the lane's wait and the scaling with threads.

The frames of `tools/bench_frame.py` (EIGER2 4M, ~300 spots a frame, bright and
large) go through correct + threshold + label + properties once; their sparse
frames and peaks are then linked with split "pixels", repeatedly, in three ways:

* sync:          the separation inside `add_point` (replay, relink, bench_frame);
* background N:  `Linker.separate_in_background(threads=N)`, the live lane's way.

Per way: the lane's time, the calling thread's wall time in add_point per frame
(what holds up the next point), and the total wall time to the last clique
(finish() included), min / median / max over the repeats. Every way's cliques
are compared with sync's, column by column.

    python tools/bench_separate.py                  # 40 frames, threads 1 and 2, 5 repeats
    python tools/bench_separate.py --frames 60 --threads 1 2 4
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):  # as bench_frame, before numba loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_frame import Peakstream, make_frames  # noqa: E402
from benchinfo import cpu_model  # noqa: E402

from nodes.link.linker import Linker  # noqa: E402
from stream.core.item import Item  # noqa: E402


def items(ours: Peakstream, sim, points: list[int]) -> list[tuple]:
    """(sparse, peaks, motors) of each frame, through the per-frame chain once."""
    out = []
    for i in points:
        item = Item(i, "eiger", frame=sim.frame(i), counters={"monitor": sim.monitor_value(i)},
                    motors={"omega": sim.omega(i)})
        for node in (ours.dense, ours.label, ours.props):
            item = node.process(item)
        out.append((item.sparse, item.peaks, item.motors))
    return out


def link(scan, frames: list[tuple], threads: int) -> tuple[float, float, dict, int]:
    """(add_point wall s per frame, total wall s, cliques, separated) of one pass."""
    linker = Linker(criterion="any_pixel", split="pixels")
    if threads:
        linker.separate_in_background(threads=threads)
    linker.setup(scan)
    parts, in_add = [], 0.0
    t0 = time.perf_counter()
    for k, (sparse, peaks, motors) in enumerate(frames):
        a = time.perf_counter()
        parts.append(linker.add_point(k, sparse, peaks, motors).cliques)
        in_add += time.perf_counter() - a
    parts.append(linker.finish().cliques)
    total = time.perf_counter() - t0
    cliques = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return in_add / len(frames), total, cliques, linker.separator.nseparated


def fmt(values: list[float]) -> str:
    return (f"{min(values):8.2f}{statistics.median(values):8.2f}{max(values):8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="frames (default 40)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats (default 5)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="background thread counts to time (default 1 2)")
    ap.add_argument("--spots", type=int, default=300, help="true spots per frame (default 300)")
    ap.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    args = ap.parse_args()
    numba.set_num_threads(1)
    fargs = argparse.Namespace(frames=args.frames, spots=args.spots, seed=args.seed, cut=40.0,
                               sigma_px=[1.5, 3.5], amplitude=[3000.0, 30000.0])
    print(f"making {args.frames} frames ...", file=sys.stderr)
    sim, points, _ = make_frames(fargs)
    ours = Peakstream(sim, 40.0, 2, None, False, "pixels")
    frames = items(ours, sim, points)
    print(f"machine   {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
          f"numba {numba.__version__}")
    print(f"frames    {args.frames} x 2162x2068 (bench_frame's: ~{args.spots} spots, "
          f"{np.mean([f[0].nnz for f in frames]):,.0f} pixels kept a frame); "
          f"{args.repeats} repeats")
    ways = [("sync", 0)] + [(f"background {n}", n) for n in args.threads]
    link(ours.scan, frames, 0)  # compiled, cache loaded
    got: dict[str, tuple[list, list]] = {w: ([], []) for w, _ in ways}
    ref, same, nsep = None, True, 0
    for _ in range(args.repeats):
        for way, n in ways:  # interleaved: the machine's drift hits every way alike
            per, total, cliques, nsep = link(ours.scan, frames, n)
            got[way][0].append(1e3 * per)
            got[way][1].append(total)
            if ref is None:
                ref = cliques
            same &= all(np.array_equal(ref[k], cliques[k], equal_nan=True) for k in ref)
    print(f"cliques   {len(ref['clique_id'])}, separated {nsep}; every way's cliques equal "
          f"sync's: {same}")
    print(f"{'':16}{'add_point ms/frame (min med max)':>34}{'total s (min med max)':>28}")
    base = statistics.median(got["sync"][1])
    for way, _ in ways:
        per, total = got[way]
        print(f"{way:16}{fmt(per):>34}{fmt(total):>28}   x{base / statistics.median(total):.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
