"""Radial integration per frame: our integrate node against pyFAI's CSR integrate1d (issue 7).

    python tools/bench_integrate.py [--frames 3] [--repeats 5] [--npt 1000] [--unit 2th_deg]
                                    [--shapes 2048x2048 2162x2068] [--json out.json]

Frames: uint16, Poisson background 10 plus powder rings and ~300 spots, on a
tilted detector (dist 0.2 m, PONI near the middle, 75 um pixels), for each
shape (default 2048 x 2048 and EIGER2 4M, 2162 x 2068). Every case integrates
the same frames into `npt` bins with the solid-angle and polarisation (0.99)
corrections and Poisson errors, in the same run, case after case within each
repeat:

* peakstream: the `integrate` node (one thread; its matrix built in setup),
  split "no" and "bbox"; and "no" with correct (dark, flat) + normalise
  fused into its pass ("no+corr", the raw frame in);
* pyFAI: `integrate1d` with method ("no", "csr", "cython") and ("bbox",
  "csr", "cython"), OpenMP limited to 1 and to 2 threads (threadpoolctl);
  its matrix is built on the first call, outside the timing.

Prints min / median / max ms per frame over the repeats (cases 0.3 s apart,
so that OpenMP threads left spinning by one do not slow the next), the setup
(matrix) time of each, the largest relative difference from pyFAI's pattern,
the ratio pyFAI / peakstream of the medians and of the minima (target >= 5
for the same split, against pyFAI's faster thread count), the machine and
versions; `--json FILE` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from benchinfo import cpu_model, package_version

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes import Correct, FusedIntegrate, Integrate, Normalise  # noqa: E402
from stream.core.item import Item  # noqa: E402
from stream.core.messages import DetectorInfo, Start  # noqa: E402
from stream.core.scan import Scan  # noqa: E402

PIXEL = 75e-6
TARGET = 5.0
PAUSE = 0.3  # s between cases, untimed


def geometry(shape: tuple[int, int]) -> dict[str, float]:
    return {"dist": 0.2, "poni1": shape[0] * PIXEL * 0.47, "poni2": shape[1] * PIXEL * 0.52,
            "rot1": 0.012, "rot2": -0.008, "rot3": 0.0}


def make_frames(shape: tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """Background 10 + rings every 1.5 deg in 2theta + 300 spots, uint16."""
    from nodes.geometry import Geometry

    rng = np.random.default_rng(seed)
    tth = np.degrees(Geometry(**geometry(shape), pixel1=PIXEL, pixel2=PIXEL).tth(shape))
    rings = 40.0 * np.exp(-0.5 * ((np.mod(tth, 1.5) - 0.75) / 0.05) ** 2)
    frames = []
    for _ in range(n):
        frame = rng.poisson(10.0 + rings).astype(np.float64)
        rows, cols = rng.integers(3, shape[0] - 3, 300), rng.integers(3, shape[1] - 3, 300)
        for r, c in zip(rows, cols, strict=True):
            frame[r - 2:r + 3, c - 2:c + 3] += rng.uniform(100, 2000)
        frames.append(np.minimum(frame, 65534).astype(np.uint16))
    return frames


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ours(shape, npt, unit, split, fused: bool):
    """A set-up integrate node (or the fused correct + normalise + integrate) and its setup time."""
    t = time.perf_counter()
    node = Integrate(**geometry(shape), pixel1=PIXEL, pixel2=PIXEL, wavelength=3.1e-11, npt=npt,
                     unit=unit, split=split, polarization_factor=0.99)
    scan = Scan.from_start(Start("bench", {"d": DetectorInfo(shape, "uint16")}))
    if fused:
        rng = np.random.default_rng(1)
        correct = Correct(dark=rng.uniform(0, 2, shape).astype(np.float32),
                          flat=rng.uniform(0.9, 1.1, shape).astype(np.float32))
        node = FusedIntegrate(node, correct=correct, normalise=Normalise(reference=1e4))
    node.setup(scan)
    setup = time.perf_counter() - t

    def run(frame):
        item = node.process(Item(0, "d", frame=frame, counters={"monitor": 9876.0}))
        return item.outputs["integrate1d"]
    return run, setup


def theirs(shape, npt, unit, split, threads: int, frame):
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    from threadpoolctl import threadpool_limits

    ai = AzimuthalIntegrator(detector=Detector(PIXEL, PIXEL, max_shape=shape),
                             wavelength=3.1e-11, **geometry(shape))
    kw = dict(unit=unit, method=(split, "csr", "cython"), error_model="poisson",
              polarization_factor=0.99)
    t = time.perf_counter()
    ai.integrate1d(frame, npt, **kw)  # builds the CSR matrix
    setup = time.perf_counter() - t

    def run(frame):
        with threadpool_limits(threads, user_api="openmp"):
            return ai.integrate1d(frame, npt, **kw).intensity
    return run, setup


def bench_shape(shape, args) -> dict:
    frames = make_frames(shape, args.frames)
    cases = {}
    for split in ("no", "bbox"):
        cases[f"peakstream {split}"] = ours(shape, args.npt, args.unit, split, False)
    cases["peakstream no+corr"] = ours(shape, args.npt, args.unit, "no", True)
    have_pyfai = package_version("pyFAI") != "not installed"
    if have_pyfai:
        for split in ("no", "bbox"):
            for threads in (1, 2):
                cases[f"pyFAI {split} {threads}t"] = theirs(shape, args.npt, args.unit, split,
                                                           threads, frames[0])
    times = {name: [] for name in cases}
    results = {}
    for _ in range(args.repeats):
        for name, (run, _) in cases.items():
            time.sleep(PAUSE)  # OpenMP threads of the case before stop spinning
            t = time.perf_counter()
            for frame in frames:
                results[name] = run(frame)
            times[name].append(1e3 * (time.perf_counter() - t) / len(frames))
    report = {"ms_per_frame": {k: stats(v) for k, v in times.items()},
              "setup_s": {k: round(v[1], 3) for k, v in cases.items()}}
    if have_pyfai:
        diff, ratio = {}, {}
        ms = report["ms_per_frame"]
        for split in ("no", "bbox"):
            ref, mine = results[f"pyFAI {split} 1t"], results[f"peakstream {split}"]
            ok = ref != 0
            diff[split] = float(np.max(np.abs(mine[ok] - ref[ok]) / np.abs(ref[ok])))
            ratio[split] = {s: min(ms[f"pyFAI {split} {t}t"][s] for t in (1, 2))
                            / ms[f"peakstream {split}"][s] for s in ("min", "median")}
        report["max_rel_diff_vs_pyfai"] = diff
        report["ratio_pyfai_over_peakstream"] = ratio
        report["target_ok"] = all(r["median"] >= TARGET for r in ratio.values())
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--npt", type=int, default=1000)
    p.add_argument("--unit", default="2th_deg")
    p.add_argument("--shapes", nargs="+", default=["2048x2048", "2162x2068"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    report = {
        "machine": {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                    "cpu": cpu_model(), "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "pyFAI": package_version("pyFAI"),
                     "peakstream": package_version("peakstream")},
        "settings": {"npt": args.npt, "unit": args.unit, "frames": args.frames,
                     "repeats": args.repeats, "dtype": "uint16", "polarization_factor": 0.99,
                     "solid_angle": True, "error_model": "poisson"},
        "shapes": {},
    }
    m = report["machine"]
    print(f"machine   {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, "
          f"Python {m['python']}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"settings  npt {args.npt}, {args.unit}, solid angle + polarisation 0.99, Poisson "
          f"errors, {args.frames} uint16 frames x {args.repeats} repeats")
    for text in args.shapes:
        shape = tuple(int(v) for v in text.lower().split("x"))
        r = report["shapes"][text] = bench_shape(shape, args)
        print(f"\n{shape[0]} x {shape[1]}: ms per frame (min / median / max), setup s")
        for name, s in r["ms_per_frame"].items():
            print(f"  {name:22s} {s['min']:8.2f} {s['median']:8.2f} {s['max']:8.2f}"
                  f"   setup {r['setup_s'][name]:6.2f}")
        if "ratio_pyfai_over_peakstream" in r:
            for split, ratio in r["ratio_pyfai_over_peakstream"].items():
                print(f"  {split:5s} pyFAI (faster thread count) / peakstream: median "
                      f"{ratio['median']:5.1f}x, min {ratio['min']:5.1f}x (target >= "
                      f"{TARGET:g}), max rel diff {r['max_rel_diff_vs_pyfai'][split]:.1e}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
