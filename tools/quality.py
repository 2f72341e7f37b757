"""Linking quality (TARGETS.md Q1): true spots found as exactly one clique, per criterion.

Simulated scans with known truth (touching spot pairs included) are processed
once, point by point as a live run would (configs/simulated.toml), then their
cliques are made again with each linker setting (`peakstream relink`: the same
labelled pixels and 2D peaks). A true spot is found when exactly one clique
has its centroid within 1 px and 0.5 point and no other clique lies in its
footprint (`stream.truth.match_truth`), over ALL spots, touching included.

    python tools/quality.py                       # the default table
    python tools/quality.py --seeds 0 1 2 3 --json q1.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.config import DEFAULTS, Config  # noqa: E402
from stream.inspect import load  # noqa: E402
from stream.message import encode  # noqa: E402
from stream.relink import relink  # noqa: E402
from stream.runner import ScanRunner  # noqa: E402
from stream.sources.simulate import SimConfig, Simulation  # noqa: E402
from stream.truth import match_truth  # noqa: E402

SETTINGS = [
    {"criterion": "any_pixel"},
    {"criterion": "fraction", "fraction": 0.2},
    {"criterion": "fraction", "fraction": 0.5},
    {"criterion": "distance", "distance": 1.5},
    {"criterion": "distance", "distance": 3.0},
    {"criterion": ["fraction", "distance"], "fraction": 0.2, "distance": 3.0},
    {"criterion": ["any_pixel", "distance"], "distance": 1.5},
    {"criterion": ["any_pixel", "distance"], "distance": 2.0},
]


def process(sim: Simulation, path: Path) -> None:
    """One simulated scan through the per-point chain (inline, wire-encoded)."""
    runner = ScanRunner(Config.load(ROOT / "configs" / "simulated.toml"), output_file=path)
    sid = "q1"
    runner.handle(encode(sim.start(sid)))
    for i in range(sim.config.npoints):
        runner.handle(encode(sim.point(i, sid)))
    runner.handle(encode(sim.end(sid)))
    runner.close()


def label(setting: dict) -> str:
    names = setting["criterion"]
    names = [names] if isinstance(names, str) else names
    parts = [f"{n} {setting[n]:g}" if n in setting else n for n in names]
    return " and ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--points", type=int, default=120)
    p.add_argument("--shape", type=int, nargs=2, default=[512, 512])
    p.add_argument("--spots", type=int, default=120)
    p.add_argument("--touching", type=float, default=0.3,
                   help="fraction of spots placed as touching pairs (default 0.3)")
    p.add_argument("--json", help="write the table to this JSON file")
    args = p.parse_args(argv)
    settings = SETTINGS
    default = {k: v for k, v in DEFAULTS["linker"].items()}
    if all(label(default) != label(s) for s in settings):
        settings = [*settings, default]
    found = {label(s): np.zeros(3, int) for s in settings}
    totals = np.zeros(3, int)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            sim = Simulation(SimConfig(npoints=args.points, shape=tuple(args.shape),
                                       spots=args.spots, seed=seed,
                                       touching_fraction=args.touching))
            truth = sim.truth
            groups = [np.ones(len(truth["s"]), bool), truth["touching"], truth["clean"]]
            totals += [g.sum() for g in groups]
            base = Path(tmp) / f"seed{seed}.h5"
            process(sim, base)
            for k, s in enumerate(settings):
                out = Path(tmp) / f"seed{seed}-{k}.h5"
                relink(base, out, s["criterion"], s.get("fraction"), s.get("distance"))
                hit = match_truth(load(out)["cliques"], truth)["found"]
                found[label(s)] += [int(hit[g].sum()) for g in groups]
    rows = [{"criterion": name, "found": f.tolist(), "total": totals.tolist(),
             "percent_all": 100.0 * f[0] / max(totals[0], 1),
             "default": name == label(default)} for name, f in found.items()]
    print(f"Q1 linking quality: {len(args.seeds)} simulated scans (seeds "
          f"{' '.join(map(str, args.seeds))}), {args.points} points x {args.shape[0]}x"
          f"{args.shape[1]}, {args.spots} spots each, touching_fraction {args.touching}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} python "
          f"{platform.python_version()}; {time.perf_counter() - t0:.0f} s")
    print(f"{'linker criterion':<32} {'all spots':>16} {'touching':>14} {'isolated':>14}")
    for r in rows:
        f, t = r["found"], r["total"]
        cells = [f"{f[i]}/{t[i]} {100.0 * f[i] / max(t[i], 1):5.1f}%" for i in range(3)]
        mark = "  (default)" if r["default"] else ""
        print(f"{r['criterion']:<32} {cells[0]:>16} {cells[1]:>14} {cells[2]:>14}{mark}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
