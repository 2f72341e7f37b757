"""Crowded scans (BENCHMARKS.md, Q3): thousands of spots on 512 x 512 x 120, some touching.

A simulated scan with `--spots` spots, a `--touching` fraction of them (default
0.2, the simulator's) placed against a neighbour so that their pixels touch
(the rest are kept at least 4 sigma units from the next; `--touching 0`: none
touch, and every split finds the same) goes through the per-point chain once with the
label node's defaults (as tools/quality.py does), and its cliques are made
again with each linker setting (`peakstream relink`). Per setting: true
spots found (exactly one clique within 1 px and 0.5 point, none other in the
footprint), *merged* (no clique within tolerance: the spot went into a clique
with another), *cut* (a clique within tolerance but another in its
footprint), the cliques, and for split "pixels" how many cliques were
separated. Q3: merged < 0.5% of spots.

    python tools/crowded.py --spots 3000 --seeds 0 1 --touching 0.2
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from quality import process  # noqa: E402

from stream.offline.relink import relink  # noqa: E402
from stream.sources.simulate import Simulation  # noqa: E402
from stream.sources.simulate.config import SimConfig  # noqa: E402
from stream.sources.simulate.truth import match_truth  # noqa: E402
from stream.store.reader import load  # noqa: E402

SETTINGS = {
    "fraction 0.2, split none": {"criterion": "fraction", "fraction": 0.2, "split": "none"},
    "fraction 0.2, split local_max (default)": {"criterion": "fraction", "fraction": 0.2,
                                                "split": "local_max"},
    "fraction 0.2, split pixels": {"criterion": "fraction", "fraction": 0.2,
                                   "split": "pixels"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--spots", type=int, default=3000)
    p.add_argument("--points", type=int, default=120)
    p.add_argument("--shape", type=int, nargs=2, default=[512, 512])
    p.add_argument("--touching", type=float, default=0.2, metavar="FRACTION",
                   help="fraction of spots placed touching a neighbour (default %(default)s; "
                        "0: none, the splits then do not differ)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = {name: np.zeros(5, np.int64) for name in SETTINGS}
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            sim = Simulation(SimConfig(npoints=args.points, shape=tuple(args.shape),
                                       spots=args.spots, seed=seed,
                                       touching_fraction=args.touching))
            truth = sim.truth
            total += len(truth["s"])
            base = Path(tmp) / f"seed{seed}.h5"
            process(sim, base, "local_max")
            for k, (name, setting) in enumerate(SETTINGS.items()):
                out = Path(tmp) / f"seed{seed}-{k}.h5"
                relink(base, out, **setting)
                data = load(out)
                m = match_truth(data["cliques"], truth)
                shares = data["shares"]
                split = int(np.unique(shares["clique_id"][shares["share"] < 1]).shape[0]) \
                    if len(shares.get("share", ())) else 0
                rows[name] += [int(m["found"].sum()), int((m["n_near"] == 0).sum()),
                               int(((m["n_near"] >= 1) & ~m["found"]).sum()),
                               len(data["cliques"]["clique_id"]), split]
    print(f"Q3 crowded scans: {len(args.seeds)} simulated scans (seeds "
          f"{' '.join(map(str, args.seeds))}), {args.points} points x {args.shape[0]}x"
          f"{args.shape[1]}, {args.spots} spots each, a fraction {args.touching:g} touching; "
          f"labels: the label "
          f"node's defaults")
    print(f"machine: {platform.machine()} {platform.processor() or ''} python "
          f"{platform.python_version()}; {time.perf_counter() - t0:.0f} s")
    print(f"{'linker':<40}{'found':>16}{'merged':>14}{'cut':>12}{'cliques':>9}"
          f"{'in split':>10}")
    for name, (found, merged, cut, ncl, split) in rows.items():
        print(f"{name:<40}{found:>7}/{total} {100 * found / total:5.1f}%"
              f"{merged:>6} {100 * merged / total:5.2f}%{cut:>5} {100 * cut / total:5.2f}%"
              f"{ncl:>9}{split:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
