"""First scan vs second scan of a fresh `peakstream run` process, with the defaults.

    python tools/bench_firstscan.py                    # 5 processes, 2 x 300 points each
    python tools/bench_firstscan.py --points 300 --repeats 5 --json first.json

Each repeat starts `peakstream run` (the config of tools/bench_stream.py: correct
with flat and mask, normalise, threshold, label, properties; no [workers] table,
so the built-in defaults), waits until it listens (it warms its kernels up
before binding), then streams two scans of `--points` EIGER2 4M bslz4 frames
from a separate sender and reports the frames/s of each: (points / (the
file's end_time - the first point sent)). The figure of interest is the ratio
first / second in the same process (issue 12 asks for >= 0.85). The numba
cache is the usual one (warm after the first repeat); with
`--cold` each process gets an empty NUMBA_CACHE_DIR (its warm-up then compiles).
Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_stream import (
    ROOT,
    Processor,
    load_frames,
    make_frames,
    scan_figures,
    versions,
    write_config,
)
from benchinfo import cpu_model


def one_process(args, frames_file: Path, flat, mask, tmp: Path, r: int) -> dict:
    out = tmp / f"out-{r}"
    config = write_config(tmp, flat, mask, args)
    if args.cold:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-", dir=tmp)
    t0 = time.perf_counter()
    proc = Processor(config, out, 2)
    ready = time.perf_counter() - t0
    figures = {"ready_s": ready}
    try:
        for name in ("first", "second"):
            sender = subprocess.Popen(
                [sys.executable, str(ROOT / "tools" / "bench_stream.py"), "--send",
                 proc.endpoint, "--frames-file", str(frames_file), "--points",
                 str(args.points), "--scan-id", name], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            proc.wait_start(name, args.timeout)
            out_text, err = sender.communicate("go\n", timeout=args.timeout)
            if sender.returncode != 0:
                raise RuntimeError(f"sender failed: {err}")
            sent = json.loads(out_text.strip().splitlines()[-1])
            status = proc.wait_scan(name, args.timeout)
            f = scan_figures(out / f"{name}.h5", sent["t_first"], args.points)
            figures[name] = f["frames_per_s"]
            figures[f"{name}_status"] = status
            figures[f"{name}_lost"] = f["lost"]
    finally:
        proc.close()
        if args.cold:
            os.environ.pop("NUMBA_CACHE_DIR", None)
    figures["ratio"] = figures["first"] / figures["second"]
    print(f"  process {r}: ready after {ready:.1f} s, first {figures['first']:.1f} frames/s, "
          f"second {figures['second']:.1f}, ratio {figures['ratio']:.3f} "
          f"({figures['first_status']}, {figures['second_status']}; lost "
          f"{figures['first_lost']} + {figures['second_lost']})", flush=True)
    return figures


def stats(values: list[float]) -> str:
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=300, help="points per scan (default 300)")
    ap.add_argument("--repeats", type=int, default=5, help="processes (default 5)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames cycled")
    ap.add_argument("--spots", type=int, default=600, help="spots (default 600)")
    ap.add_argument("--cold", action="store_true", help="an empty numba cache per process")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    args.workers_kind, args.max_lag = None, 1000  # bench_stream's config, default workers
    print(f"machine  {os.cpu_count()} cores, {cpu_model()}")
    print("versions " + ", ".join(f"{k} {x}" for k, x in versions().items()))
    print(f"load     {os.getloadavg()[0]:.1f} (1 min average at the start)")
    frames_file = make_frames(args.distinct, args.spots, Path(tempfile.gettempdir()))
    _, _, flat, mask, _ = load_frames(frames_file)
    print(f"runs     {args.repeats} processes x 2 scans of {args.points} EIGER2 4M bslz4 "
          f"frames, default [workers]{', cold numba cache' if args.cold else ''}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        for r in range(args.repeats):
            runs.append(one_process(args, frames_file, flat, mask, Path(tmp), r))
    print(f"{'figure':<28}{'min / median / max':>24}")
    for label, key in (("ready (s)", "ready_s"), ("first scan frames/s", "first"),
                       ("second scan frames/s", "second"), ("first / second", "ratio")):
        print(f"{label:<28}{stats([x[key] for x in runs]):>24}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
                       "versions": versions(), "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
