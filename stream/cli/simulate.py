"""`peakstream simulate`: a synthetic scan with known truth, written to HDF5 or sent
(`stream.sources.simulate`); its options and how they make a SimConfig (`demo` uses
them too)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from stream.cli.codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from stream.cli.send import add_send_options


def add_sim_options(p: argparse.ArgumentParser, grids: bool = False) -> None:
    """The simulated scan's options; `grids`: --points may size a grid or snake itself."""
    p.add_argument("--points", type=int, default=None if grids else 90,
                   help="scan points (default 90; a grid or snake: its rows x the points a "
                        "row its spots need)" if grids else "scan points (default 90)")
    p.add_argument("--shape", type=int, nargs=2, default=[256, 256], metavar=("NY", "NX"),
                   help="frame shape (default 256 256)")
    p.add_argument("--spots", type=int, default=40, help="true spots (default 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scan-id", default="sim-0001", help="scan_id (default sim-0001)")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """`peakstream simulate`: register the subcommand (its function is `cmd_simulate`)."""
    p = sub.add_parser("simulate", help="a synthetic scan with known truth: write or send it",
                       description="Make a synthetic scan (Poisson background, hot and dead "
                                   "pixels, a detector gap, 3D Gaussian spots, some touching) "
                                   "and write it to HDF5 with its truth table, or send it over "
                                   "ZeroMQ as an acquisition would.")
    add_sim_options(p, grids=True)
    p.add_argument("--output", help="write the scan (frames, motors, truth) to FILE.h5")
    add_send_options(p)
    p.add_argument("--trajectory", choices=("sweep", "interlaced", "grid", "snake", "free"),
                   help="scan kind (default sweep): interlaced = two passes offset by half a "
                        "step; grid / snake = dty x omega rows; free = continuous omega with "
                        "sinusoidal dty")
    p.add_argument("--rows", dest="nrows", type=int,
                   help="grid / snake: number of rows (npoints / rows points each; default: "
                        "the fewest whose dty span holds the spots, a divisor of --points)")
    p.add_argument("--wrap", action="store_true", default=None,
                   help="one whole turn of omega over the points (over each row of a grid "
                        "or snake): the last point neighbours the first")
    p.add_argument("--iflip", action="store_true", default=None,
                   help="interlaced: the second pass runs backwards")
    p.add_argument("--touching", dest="touching_fraction", type=float,
                   help="fraction of spots placed as touching pairs (default 0.2)")
    p.add_argument("--sigma-dty", dest="sigma_dty", type=float, nargs=2, metavar=("LO", "HI"),
                   help="2D scans: the spots' widths in dty (sigma, in dty steps: rows of a "
                        "grid or snake; default 0.8 1.5); narrower spots fit fewer rows")
    p.add_argument("--rate", type=float, help="points per second when sending (default: as "
                                              "fast as the receiver takes them)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_simulate)
    return p


def cmd_simulate(args: argparse.Namespace) -> int:
    """`peakstream simulate ...`: 0 written or sent, 1 the send failed, 2 bad usage."""
    from stream.cli.progress import ProgressLine
    from stream.sources.simulate import Simulation, write_scan
    from stream.sources.simulate.config import SimConfig

    if not args.output and not args.send:
        print("peakstream simulate: give --output FILE.h5 or --send ENDPOINT", file=sys.stderr)
        return EXIT_USAGE
    try:
        sim = Simulation(sim_config(args, SimConfig))
    except ValueError as exc:  # e.g. more spots than the scan has room for
        print(f"peakstream simulate: {option_words(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    npoints = sim.config.npoints
    progress = ProgressLine("simulate", npoints, quiet=args.quiet)
    if args.output:
        if Path(args.output).exists():
            print(f"peakstream simulate: {args.output} exists", file=sys.stderr)
            return EXIT_USAGE
        write_scan(sim, args.output, args.scan_id, progress=progress)
        progress(npoints, force=True)
        progress.done()
        rows = f" ({sim.config.nrows} rows)" if sim.config.trajectory in ("grid", "snake") else ""
        print(f"wrote {args.output}: {npoints} points{rows} {args.shape[0]}x{args.shape[1]}, "
              f"{len(sim.truth['s'])} spots ({int(sim.truth['clean'].sum())} clean)")
    if args.send:
        from stream.cli.send import send

        return EXIT_FAILED if send(args, sim, progress) else EXIT_OK
    return EXIT_OK


SIM_KINDS = ("trajectory", "nrows", "wrap", "iflip", "touching_fraction", "sigma_dty")


def sim_config(args: argparse.Namespace, cls: Any) -> Any:
    """SimConfig from the options; the scan-kind options only where given. A grid or
    snake without --rows gets the fewest rows whose dty span holds its spots (a divisor
    of --points), without --points as many points a row as its spots need in omega."""
    kinds = {k: getattr(args, k) for k in SIM_KINDS if getattr(args, k, None) is not None}
    if "sigma_dty" in kinds:
        kinds["sigma_dty"] = tuple(kinds["sigma_dty"])
    points, grid = args.points, kinds.get("trajectory") in ("grid", "snake")
    common = {"shape": tuple(args.shape), "spots": args.spots, "seed": args.seed}
    if grid and (points is None or "nrows" not in kinds):
        from stream.sources.simulate.layout import grid_size

        spots = {k: v for k, v in kinds.items() if k in ("touching_fraction", "sigma_dty")}
        rows, per_row = grid_size(cls(npoints=1, **common, **spots))
        if "nrows" in kinds:
            rows = kinds["nrows"]  # given: checked (and refused if too few) as given
        elif points is not None:
            fits = [r for r in range(rows, points + 1) if points % r == 0]
            if not fits:
                raise ValueError(f"a {kinds['trajectory']} of {points} points cannot have "
                                 f"the {rows} rows or more its spots need: give more "
                                 f"--points (or --rows)")
            rows = fits[0]
        kinds["nrows"] = rows
        points = rows * per_row if points is None else points
    points = 90 if points is None else points
    if kinds.get("wrap"):  # one turn over the points (of each row of a grid or snake)
        per_turn = points // kinds.get("nrows", cls.nrows) if grid else points
        kinds["omega_step"] = 360.0 / max(per_turn, 1)
    return cls(npoints=points, **common, **kinds)


SIM_OPTIONS = {"npoints": "--points", "nrows": "--rows", "touching_fraction": "--touching",
               "spots": "--spots", "shape": "--shape", "seed": "--seed",
               "trajectory": "--trajectory", "wrap": "--wrap", "iflip": "--iflip",
               "sigma_dty": "--sigma-dty"}


def option_words(message: str) -> str:
    """SimConfig's "SimConfig.wrap: is for ..., got True" in the command line's words:
    "--wrap is for ..." (the value only where the option takes one)."""
    m = re.fullmatch(r"SimConfig\.(\w+): (.*?)(?:, got (.*))?", message, re.S)
    if m is None or m[1] not in SIM_OPTIONS:
        return message
    flag = m[1] in ("wrap", "iflip")
    return f"{SIM_OPTIONS[m[1]]} {m[2]}" + ("" if flag or m[3] is None else f", got {m[3]}")
