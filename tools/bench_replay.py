"""P3: replay of the real silicon sparse file, peakstream vs ImageD11, side by side.

Both run in this process, alternately, on the same file, from reading the file
to the 3D peaks:

* ImageD11 2.1.3: `sparseframe.SparseScan` (read), `sinograms.properties.props`
  with `cplabel` (8-connected labels, moments, `overlaps_linear` between
  consecutive frames in omega order), then connected components (scipy);
* peakstream: `peakstream replay FILE --preset imaged11` as the CLI runs it
  (block replay: read, label, properties, linker, HDF5 output file written).

Imports and numba compilation are outside the timings (one warm-up run each).

    python tools/bench_replay.py                  # 5 repeats
    python tools/bench_replay.py --repeats 7 --json p3.json
    python tools/bench_replay.py --per-point      # also once through the per-point path
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SILICON = ROOT.parent / "shared" / "data" / "silicon_fullscan_strong_sparse.h5"


def run_imaged11(path: Path) -> dict:
    import scipy.sparse
    from ImageD11 import sparseframe
    from ImageD11.sinograms import properties

    scan = sparseframe.SparseScan(str(path), "1.1")
    peaks, pairs = properties.props(scan, 0, algorithm="cplabel")
    first = sparseframe.nnz_to_pointer(scan.nlabels)
    a, b = [], []
    for (_, fa, _, fb), (n, ijn) in pairs.items():
        if n:
            a.append(first[fa] + ijn[:, 0] - 1)
            b.append(first[fb] + ijn[:, 1] - 1)
    a, b = np.concatenate(a), np.concatenate(b)
    npk = int(first[-1])
    ncc, _ = scipy.sparse.csgraph.connected_components(
        scipy.sparse.coo_matrix((np.ones(a.shape[0]), (a, b)), shape=(npk, npk)),
        directed=False)
    return {"peaks2d": npk, "overlaps": int(a.shape[0]), "cliques": int(ncc),
            "sum_intensity": int(peaks[1].sum())}


def run_peakstream(path: Path, out: Path, per_point: bool = False) -> dict:
    from stream.cli.main import main
    from stream.store.reader import summary

    args = ["replay", str(path), "--preset", "imaged11", "--quiet", "--output", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI's summary
        if main(args + (["--per-point"] if per_point else [])) != 0:
            raise RuntimeError("peakstream replay failed")
    s = summary(out)
    return {k: s[k] for k in ("peaks2d", "overlaps", "cliques")}


def timed(fn, *args) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def machine() -> str:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def versions() -> str:
    import h5py
    import numba

    import stream

    try:
        from importlib.metadata import version
        id11 = version("imaged11")
    except Exception:
        id11 = "?"
    return (f"python {platform.python_version()}, numpy {np.__version__}, numba "
            f"{numba.__version__}, h5py {h5py.__version__}, ImageD11 {id11}, "
            f"peakstream {stream.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", type=Path, default=SILICON)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--per-point", action="store_true",
                   help="also time one per-point replay (slow: ~40 s)")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    times: dict[str, list[float]] = {"ImageD11": [], "peakstream": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "warm.h5"
        counts = {"ImageD11": run_imaged11(args.file),
                  "peakstream": run_peakstream(args.file, out)}
        for k in range(args.repeats):
            t, _ = timed(run_imaged11, args.file)
            times["ImageD11"].append(t)
            out = Path(tmp) / f"r{k}.h5"
            t, _ = timed(run_peakstream, args.file, out)
            times["peakstream"].append(t)
            out.unlink()
        per_point = None
        if args.per_point:
            per_point, _ = timed(run_peakstream, args.file, Path(tmp) / "pp.h5", True)
    print(f"P3 replay of {args.file.name}: peakstream (--preset imaged11, block replay) vs "
          f"ImageD11 (SparseScan + props cplabel + connected components), same process, "
          f"alternating, {args.repeats} repeats after one warm-up each")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"{'':<12} {'min s':>8} {'median s':>9} {'max s':>8}   2D peaks  overlaps  cliques")
    for name, ts in times.items():
        c = counts[name]
        print(f"{name:<12} {min(ts):8.2f} {statistics.median(ts):9.2f} {max(ts):8.2f}   "
              f"{c['peaks2d']:8d} {c['overlaps']:9d} {c['cliques']:8d}")
    ratio = statistics.median(times["peakstream"]) / statistics.median(times["ImageD11"])
    print(f"ratio peakstream / ImageD11 (medians): {ratio:.2f}  (target P3: <= 0.5)")
    if per_point is not None:
        print(f"per-point replay (--per-point, one run): {per_point:.1f} s")
    same = all(counts["ImageD11"][k] == counts["peakstream"][k]
               for k in ("peaks2d", "overlaps", "cliques"))
    print(f"same counts as ImageD11: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"file": str(args.file), "machine": machine(), "versions": versions(),
             "times": times, "counts": counts, "ratio_median": ratio,
             "per_point": per_point}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
