"""Replay a fixed set of scans and compare their tables byte for byte.

Used around refactors: `make DIR` writes the outputs of the silicon file
(`--preset imaged11`) and of a simulated scan of every trajectory kind (the
defaults and `--preset simulated`); `compare A B` compares every .h5 file of the two
directories (the recordings too) and reports every dataset (points, sparse, peaks2d,
overlaps, cliques, node outputs) that differs; exit 1 if one does, 2 if there is
nothing to compare (no such directory, no .h5 file).

    python tools/compare_outputs.py make /tmp/before
    cp /tmp/before/rec_*.h5 /tmp/after/   # (optional: the same recordings)
    python tools/compare_outputs.py make /tmp/after
    python tools/compare_outputs.py compare /tmp/before /tmp/after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SILICON = Path(os.environ.get("PEAKSTREAM_SILICON", ROOT.parent / "shared" / "data"
                               / "silicon_fullscan_strong_sparse.h5"))
BASE = {"shape": (96, 96), "sigma_px": (1.0, 1.5), "seed": 1, "hot_pixels": 3,
        "dead_pixels": 3}
TWO_D = {**BASE, "spots": 14, "sigma_dty": (0.7, 1.0)}
# SimConfig keywords of each recorded scenario (the trajectory kinds of the tests)
SCENARIOS = {
    "sweep": {**BASE, "npoints": 90, "spots": 20},
    "wrap": {**BASE, "npoints": 90, "spots": 20, "omega_step": 4.0, "wrap": True},
    "interlaced": {**BASE, "npoints": 120, "spots": 20, "trajectory": "interlaced"},
    "interlaced_iflip": {**BASE, "npoints": 120, "spots": 20, "trajectory": "interlaced",
                         "iflip": True},
    "snake_passes": {**BASE, "npoints": 120, "spots": 20, "trajectory": "snake", "nrows": 3,
                     "dty_step": 0.0},
    "grid": {**TWO_D, "npoints": 360, "trajectory": "grid", "nrows": 12, "omega_step": 0.25},
    "grid_dty": {**TWO_D, "npoints": 480, "trajectory": "grid", "nrows": 40, "fast": "dty",
                 "omega_step": 0.5},
    "snake": {**TWO_D, "npoints": 360, "trajectory": "snake", "nrows": 12, "omega_step": 0.25},
    "free": {**BASE, "npoints": 120, "spots": 20, "trajectory": "free"},
}
WRITE = """import sys, json
from stream.sources.simulate import SimConfig, Simulation, write_scan
kw = json.loads(sys.argv[2])
kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
write_scan(Simulation(SimConfig(**kw)), sys.argv[1], "cmp")
"""
# datasets that hold times, versions or paths rather than results
SKIP = ("time", "start_time", "end_time", "checkpoint", "config", "program", "events")


def peakstream(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "stream.cli", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def replay(source: Path, output: Path, *options: str) -> None:
    output.unlink(missing_ok=True)
    peakstream("replay", str(source), "--quiet", "--output", str(output), *options)


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if SILICON.exists():
        replay(SILICON, out / "silicon_imaged11.h5", "--preset", "imaged11")
    for name, extra in SCENARIOS.items():
        rec = out / f"rec_{name}.h5"
        if not rec.exists():
            subprocess.run([sys.executable, "-c", WRITE, str(rec), json.dumps(extra)], check=True,
                           cwd=ROOT)
        replay(rec, out / f"out_{name}.h5")
        replay(rec, out / f"out_{name}_simulated.h5", "--preset", "simulated")


def datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and not any(s in name.split("/") for s in SKIP):
            found[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def same(a, b) -> bool:
    """Byte-identical (variable-length strings by value: their buffers are pointers)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object or b.dtype == object:
        return a.dtype == b.dtype and a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def compare(a: Path, b: Path) -> int:
    """Every .h5 file of A (and of B: one that A lacks is a difference) against the
    one of that name in the other; 1 if any differs, 2 if there is nothing to compare
    (a path that is no directory, or no .h5 file in either)."""
    for d in (a, b):
        if not d.is_dir():
            print(f"{d}: no such directory", file=sys.stderr)
            return 2
    names = sorted({p.name for d in (a, b) for p in d.glob("*.h5")})
    if not names:
        print(f"nothing to compare: no .h5 file in {a} or {b}", file=sys.stderr)
        return 2
    bad = 0
    for name in names:
        fa, fb = a / name, b / name
        if not fa.exists() or not fb.exists():
            print(f"{name}: missing in {a if not fa.exists() else b}")
            bad += 1
            continue
        da, db = datasets(fa), datasets(fb)
        for key in sorted(set(da) | set(db)):
            if key not in da or key not in db:
                print(f"{name}: {key} only in {'A' if key in da else 'B'}")
                bad += 1
            elif not same(da[key], db[key]):
                print(f"{name}: {key} differs")
                bad += 1
        print(f"{name}: {len(da)} datasets compared")
    print(f"identical ({len(names)} files)" if not bad else f"{bad} differences")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write the outputs into DIR")
    m.add_argument("dir", type=Path)
    c = sub.add_parser("compare", help="compare two DIRs made by `make`")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "make":
        make(args.dir)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
