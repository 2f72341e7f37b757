"""P7: batch replay of many scans, serial against `--cluster local:N`, side by side.

Each repeat runs, one after the other on the same recorded scans (simulated,
written once):

* serial: `peakstream replay SCANS... --output DIR` (one process);
* cold:   the same with `--cluster local:N` (the command starts its LocalCluster,
          N processes, and each loads the numba cache: what a user sees);
* warm:   the same with `--cluster tcp://...`, a scheduler and N workers started
          once by this script (a cluster that is up already, as at a beamline).

Every command is a subprocess timed from start to exit. Every cluster output
file is compared table by table with the serial one (byte-identical or the
benchmark says so). Ratios are serial time / cluster time of the same repeat.

    python tools/bench_cluster.py                       # 8 scans, local:2, 5 repeats
    python tools/bench_cluster.py --points 300 --shape 1024 1024 --json p7.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.benchinfo import cpu_model, package_version  # noqa: E402


def make_scans(directory: Path, n: int, points: int, shape: tuple[int, int],
               spots: int) -> list[Path]:
    from stream.sources.simulate import Simulation, write_scan
    from stream.sources.simulate.config import SimConfig

    out = []
    for i in range(n):
        path = directory / f"scan{i:02d}.h5"
        write_scan(Simulation(SimConfig(npoints=points, shape=shape, spots=spots, seed=i)),
                   path, f"scan{i:02d}")
        out.append(path)
    return out


def replay(inputs: list[Path], out: Path, config: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "stream.cli", "replay", *map(str, inputs), "--output",
           str(out), "--config", str(config), "--quiet", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds


def identical(a: Path, b: Path) -> bool:
    from tests.support.flow import assert_same_tables, tables

    try:
        for f in sorted(a.glob("*.h5")):
            assert_same_tables(tables(f), tables(b / f.name))
    except AssertionError:
        return False
    return sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def stats(values: list[float]) -> str:
    return (f"min {min(values):.3g}  median {statistics.median(values):.3g}  "
            f"max {max(values):.3g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scans", type=int, default=8)
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--shape", type=int, nargs=2, default=[512, 512])
    p.add_argument("--spots", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-warm", action="store_true", help="skip the warm-cluster runs")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from dask.distributed import Client, LocalCluster

    config = ROOT / "configs" / "simulated.toml"
    tmp = Path(tempfile.mkdtemp(prefix="bench_cluster-"))
    try:
        inputs = make_scans(tmp, args.scans, args.points, tuple(args.shape), args.spots)
        frames = args.scans * args.points
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}, {platform.platform()}")
        print(f"versions: python {platform.python_version()}, numpy {np.__version__}, "
              f"distributed {package_version('distributed')}, numba "
              f"{package_version('numba')}")
        print(f"scans: {args.scans} x {args.points} points of {args.shape[0]}x"
              f"{args.shape[1]} uint16, {args.spots} spots each ({frames} frames), config "
              f"configs/simulated.toml; cluster: local:{args.workers}, one thread per "
              f"worker; {args.repeats} repeats; load average {os.getloadavg()[0]:.1f}",
              flush=True)
        replay(inputs, tmp / "warmup", config, [])  # the numba cache, once
        subprocess.run([sys.executable, "-m", "stream.cli", "warmup", str(config)], cwd=ROOT,
                       check=True, capture_output=True)  # and its record (a warm cache)
        kinds = ["serial", "cold"] + ([] if args.no_warm else ["warm"])
        times: dict[str, list[float]] = {k: [] for k in kinds}
        same = True
        warm = None if args.no_warm else LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            dashboard_address=":0")
        client = None if warm is None else Client(warm)
        try:
            if warm is not None:  # its workers import and load the numba cache, once
                replay(inputs[:args.workers], tmp / "warmup", config,
                       ["--cluster", warm.scheduler_address])
            for _ in range(args.repeats):
                times["serial"].append(replay(inputs, tmp / "serial", config, []))
                times["cold"].append(replay(inputs, tmp / "cold", config,
                                            ["--cluster", f"local:{args.workers}"]))
                same &= identical(tmp / "serial", tmp / "cold")
                if warm is not None:
                    times["warm"].append(replay(inputs, tmp / "warm", config,
                                                ["--cluster", warm.scheduler_address]))
                    same &= identical(tmp / "serial", tmp / "warm")
                print("repeat: " + ", ".join(f"{k} {times[k][-1]:.1f} s" for k in kinds)
                      + f"; identical so far: {same}", flush=True)
        finally:
            if client is not None:
                client.close()
                warm.close()
        print(f"\n{'run':<8} {'seconds':<40} {'frames/s':<40}")
        for k in kinds:
            print(f"{k:<8} {stats(times[k]):<40} {stats([frames / t for t in times[k]])}")
        ratios = {k: [s / t for s, t in zip(times["serial"], times[k], strict=True)]
                  for k in kinds[1:]}
        for k, r in ratios.items():
            print(f"ratio serial/{k}: {stats(r)}  (P7 target >= 1.7)")
        print(f"tables byte-identical to the serial replay in every repeat: {same}")
        if args.json:
            Path(args.json).write_text(json.dumps({"frames": frames, "times": times,
                                                   "ratios": ratios, "identical": same,
                                                   "load": os.getloadavg()}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
