"""Linking quality (TARGETS.md Q1): true spots found as exactly one clique, per setting.

Simulated scans with known truth (touching spot pairs included) are processed
point by point as a live run would (configs/simulated.toml), twice: with
ImageD11's labelling (8-connected blobs, label split = "none") and with the
label node's defaults (split at local maxima). Their cliques are then made
again with each linker setting (`peakstream relink`: the same labelled pixels
and 2D peaks). A true spot is found when exactly one clique has its centroid
within 1 px and 0.5 point and no other clique lies in its footprint, cliques
that match another true spot aside (`stream.truth.match_truth`), over ALL
spots, touching included. The row marked (default) is the label node's and
[linker]'s defaults together; any_pixel on 8-connected blobs is ImageD11.

Intensities (the default row and split "pixels"; touching and isolated
spots apart; the frames flat-corrected with the simulator's gain map): per
found spot, its clique's sum_intensity less the simulator's flat background
under its pixels (background x npx) against the spot's true integrated
intensity (`total`); the share within 5% and the median error are printed,
and so is the same without subtracting the background. Pixels under
the threshold are lost to every pixel sum alike (the tails of a Gaussian): the
isolated spots show that floor. Split "pixels" also fits each spot a 3D
Gaussian (`fit_intensity`, relinked with background = the simulator's): its
error is printed too (a spot without a fit counts as outside 5%).

    python tools/quality.py                       # the default table
    python tools/quality.py --seeds 0 1 2 3 --touching 0.2 --json q1.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.label import Label  # noqa: E402
from stream.config.schema import DEFAULTS, Config  # noqa: E402
from stream.offline.relink import relink  # noqa: E402
from stream.run.runner import ScanRunner  # noqa: E402
from stream.sources.simulate import Simulation  # noqa: E402
from stream.sources.simulate.config import SimConfig  # noqa: E402
from stream.sources.simulate.truth import match_truth  # noqa: E402
from stream.store.reader import load  # noqa: E402
from stream.wire.codec import encode  # noqa: E402

NONE = {"split": "none"}
# (label split, [linker] settings); the [linker] defaults are added below
SETTINGS = [
    ("none", {"criterion": "any_pixel", **NONE}),
    ("none", {"criterion": "fraction", "fraction": 0.2, **NONE}),
    ("none", {"criterion": "fraction", "fraction": 0.5, **NONE}),
    ("none", {"criterion": "distance", "distance": 1.5, **NONE}),
    ("none", {"criterion": "distance", "distance": 3.0, **NONE}),
    ("none", {"criterion": ["fraction", "distance"], "fraction": 0.2, "distance": 3.0, **NONE}),
    ("none", {"criterion": ["any_pixel", "distance"], "distance": 2.0, **NONE}),
    ("local_max", {"criterion": "any_pixel", **NONE}),
    ("local_max", {"criterion": "fraction", "fraction": 0.2, **NONE}),
    ("local_max", {"criterion": "fraction", "fraction": 0.2, "split": "local_max",
                   "prominence": 0.0, "prominence_sigma": 1.0}),
    ("local_max", {"criterion": "fraction", "fraction": 0.2, "split": "pixels"}),
]


def process(sim: Simulation, path: Path, split: str) -> None:
    """One simulated scan through the per-point chain (inline, wire-encoded), with the
    label node's split set to `split` (its other parameters: the node's defaults) and
    the simulator's own gain map as the flat field (so that intensities can be held
    against the truth: the smooth part of the gain moves a spot by up to ~10%)."""
    config = Config.load(ROOT / "configs" / "simulated.toml")
    data = tomllib.loads(config.text())
    flat = path.with_suffix(".flat.npy")
    np.save(flat, sim.flat)
    for node in data["node"]:
        if node["kind"] == "label":
            node["split"] = split
        if node["kind"] == "correct":
            node["flat"] = str(flat)
    config = Config(data, "simulated.toml", ROOT / "configs")
    runner = ScanRunner(config, output_file=path)
    sid = "q1"
    runner.handle(encode(sim.start(sid)))
    for i in range(sim.config.npoints):
        runner.handle(encode(sim.point(i, sid)))
    runner.handle(encode(sim.end(sid)))
    runner.close()


def label(split: str, setting: dict) -> str:
    names = setting["criterion"]
    names = [names] if isinstance(names, str) else names
    parts = [f"{n} {setting[n]:g}" if n in setting else n for n in names]
    text = " and ".join(parts)
    if setting.get("split") == "pixels":
        text += ", split pixels"
    elif setting.get("split", "none") != "none":
        text += f", split {setting['split']} {setting['prominence']:g}/" \
                f"{setting['prominence_sigma']:g}"
    return f"{'2D max' if split != 'none' else '8-conn'} | {text}"


def linker_defaults() -> dict:
    """[linker]'s defaults as relink takes them: without the fraction or distance the
    default criterion does not use (relink refuses a setting that changes nothing)."""
    d = dict(DEFAULTS["linker"])
    used = [d["criterion"]] if isinstance(d["criterion"], str) else list(d["criterion"])
    for key in ("fraction", "distance"):
        if key not in used:
            d.pop(key, None)
    return d


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
    default_split = Label().split
    settings = [*SETTINGS, ("default", linker_defaults())]
    names = [label(default_split if sp == "default" else sp, st) for sp, st in settings]
    found = {n: np.zeros(3, int) for n in names}
    pixels = next(n for n in names if n.endswith("split pixels"))
    measured = {names[-1]: "default", pixels: "split pixels"}  # rows with intensities
    errors: dict[tuple, list[np.ndarray]] = {(r, g, k): [] for r in measured.values()
                                             for g in ("touching", "isolated")
                                             for k in ("net", "gross", "fit")}
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
            bases = {}
            for k, ((split, s), name) in enumerate(zip(settings, names, strict=True)):
                split = default_split if split == "default" else split
                if split not in bases:
                    bases[split] = Path(tmp) / f"seed{seed}-{split}.h5"
                    process(sim, bases[split], split)
                out = Path(tmp) / f"seed{seed}-{k}.h5"
                if s.get("split") == "pixels":
                    s = {**s, "background": sim.config.background}
                relink(bases[split], out, **s)
                cliques = load(out)["cliques"]
                hit = match_truth(cliques, truth)["found"]
                found[name] += [int(hit[g].sum()) for g in groups]
                if name in measured:
                    for g, which in (("touching", truth["touching"]),
                                     ("isolated", truth["clean"])):
                        errs = intensity_errors(cliques, truth, hit & which,
                                                sim.config.background)
                        for kind, e in zip(("net", "gross", "fit"), errs, strict=True):
                            errors[(measured[name], g, kind)].append(e)
    default = names[-1]
    rows = [{"setting": name, "found": f.tolist(), "total": totals.tolist(),
             "percent_all": 100.0 * f[0] / max(totals[0], 1),
             "default": name == default} for name, f in found.items()]
    print(f"Q1 linking quality: {len(args.seeds)} simulated scans (seeds "
          f"{' '.join(map(str, args.seeds))}), {args.points} points x {args.shape[0]}x"
          f"{args.shape[1]}, {args.spots} spots each, touching_fraction {args.touching}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} python "
          f"{platform.python_version()}; {time.perf_counter() - t0:.0f} s")
    print(f"{'labels | linker':<50} {'all spots':>16} {'touching':>14} {'isolated':>14}")
    for r in rows:
        f, t = r["found"], r["total"]
        cells = [f"{f[i]}/{t[i]} {100.0 * f[i] / max(t[i], 1):5.1f}%" for i in range(3)]
        mark = "  (default)" if r["default"] else ""
        print(f"{r['setting']:<50} {cells[0]:>16} {cells[1]:>14} {cells[2]:>14}{mark}")
    intensity: dict[str, dict] = {}
    print("intensity of the found spots: |sum_intensity - background x npx - total| / total "
          "(net; gross: without the background; fit: |fit_intensity - total| / total)")
    print(f"{'setting':<14} {'spots':<9} {'n':>5} {'net <= 5%':>10} {'median':>8} "
          f"{'gross <= 5%':>12} {'median':>8} {'fit <= 5%':>10} {'median':>8}")
    for (row, group, kind), parts in errors.items():
        e = np.concatenate(parts) if parts else np.empty(0)
        intensity.setdefault(row, {}).setdefault(group, {})[kind] = {
            "n": int(e.shape[0]),
            "within_5pc": float(np.mean(e <= 0.05)) if e.size else float("nan"),
            "median": float(np.median(e)) if e.size and np.isfinite(e).any()
            else float("nan")}
    for row, groups in intensity.items():
        for group, d in groups.items():
            net, gross, fit = d["net"], d["gross"], d["fit"]
            fitted = f"{100 * fit['within_5pc']:>9.1f}% {100 * fit['median']:>7.1f}%" \
                if np.isfinite(fit["median"]) else f"{'-':>10} {'-':>8}"
            print(f"{row:<14} {group:<9} {net['n']:>5} {100 * net['within_5pc']:>9.1f}% "
                  f"{100 * net['median']:>7.1f}% {100 * gross['within_5pc']:>11.1f}% "
                  f"{100 * gross['median']:>7.1f}% {fitted}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows,
                                               "intensity": intensity}, indent=2))
    return 0


def intensity_errors(cliques: dict, truth: dict, which: np.ndarray,
                     background: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative intensity errors of the spots `which` (found: one clique within
    tolerance): net of the flat background under the clique's pixels, gross, and of
    the fitted intensity (inf where none was fitted)."""
    s, f, p = (np.asarray(cliques[k], float)[None, :] for k in ("s_raw", "f_raw", "point"))
    idx = np.flatnonzero(which)
    near = ((np.abs(s - truth["s"][idx, None]) <= 1) & (np.abs(f - truth["f"][idx, None]) <= 1)
            & (np.abs(p - truth["point"][idx, None]) <= 0.5))
    k = near.argmax(axis=1)
    total = truth["total"][idx]
    gross = np.asarray(cliques["sum_intensity"], float)[k]
    net = gross - background * np.asarray(cliques["npx"], float)[k]
    fit = np.asarray(cliques.get("fit_intensity", np.full(len(cliques["npx"]), np.nan)),
                     float)[k]
    fit_err = np.where(np.isfinite(fit), np.abs(fit - total) / total, np.inf)
    return np.abs(net - total) / total, np.abs(gross - total) / total, fit_err


if __name__ == "__main__":
    sys.exit(main())
