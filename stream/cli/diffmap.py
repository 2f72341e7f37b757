"""`peakstream diffmap`'s command line: pyFAI `diff_map --no-gui`'s options (same
strings, destinations and defaults, `DiffMap.parse`), its JSON configuration file, its
inputs (sorted by the numbers in their names; an HDF5 file given without a path as the
FILE::/path stacks replay takes from it), into `stream.maps.diffmap.Settings` for
`run_diffmap`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

import numpy as np

from stream import __version__
from stream.cli.progress import ProgressLine
from stream.maps.diffmap import ENGINES, Settings, run_diffmap

log = logging.getLogger("stream.maps.diffmap")


# ------------------------------------------------------------------ command line


def build_parser(prog: str = "peakstream diffmap", parser: Any = None) -> argparse.ArgumentParser:
    """diff_map's options (same strings, dests and defaults) plus --engine."""
    p = parser or argparse.ArgumentParser(prog=prog)
    p.usage = f"{prog} [options] -p ponifile imagefiles*"
    p.description = ("Azimuthal integration for diffraction mapping, a drop-in for pyFAI's "
                     "diff_map --no-gui: the 2D scan's frames are integrated into a "
                     "(slow, fast, npt) map written as diff_map's NeXus layout while they "
                     "arrive.")
    p.add_argument("-V", "--version", action="version", version=f"peakstream {__version__}")
    p.add_argument("args", metavar="FILE", nargs="*", help="files to integrate (globs, "
                   "directories with -P/-e, multi-frame files, FILE.h5::/path; an HDF5 "
                   "file's frames are found as replay finds them)")
    p.add_argument("-o", "--output", dest="outfile", metavar="FILE", default=None,
                   help="HDF5 file for the map (mandatory)")
    p.add_argument("-v", "--verbose", action="store_true", dest="verbose", default=False,
                   help="debug output")
    p.add_argument("-P", "--prefix", dest="prefix", metavar="FILE", default="", type=str,
                   help="only files starting so (in a directory given as input)")
    p.add_argument("-e", "--extension", dest="extension", default="",
                   help="only files with this extension")
    p.add_argument("-t", "--fast", dest="fast", default=None, type=int,
                   help="points along the fast motion (mandatory)")
    p.add_argument("-r", "--slow", dest="slow", default=None, type=int,
                   help="points along the slow motion: the map's rows (default: as many "
                        "as the frames fill); inputs with more frames than -t x -r are "
                        "refused")
    p.add_argument("--zigzag", dest="zigzag", default=False, action="store_true",
                   help="back-and-forth scan: odd rows run backwards")
    p.add_argument("-c", "--npt", dest="npt_rad", default=None, type=int,
                   help="points of the powder pattern (default 1000)")
    p.add_argument("--npt-azim", dest="npt_azim", default=None, type=int,
                   help="azimuthal points, 1 for 1D integration (default)")
    p.add_argument("-d", "--dark", dest="dark", metavar="FILE", default=None,
                   help="dark images to average and subtract (comma separated)")
    p.add_argument("-f", "--flat", dest="flat", metavar="FILE", default=None,
                   help="flat images to average and divide by (comma separated)")
    p.add_argument("-m", "--mask", dest="mask", metavar="FILE", default=None,
                   help="mask file (nonzero: masked; FILE::N a frame, FILE.h5::/path); "
                        "no mask by default")
    p.add_argument("-p", "--poni", dest="poni", metavar="FILE", default=None,
                   help="the geometry (PONI file; mandatory unless in --config)")
    p.add_argument("-O", "--offset", dest="offset", default=None, type=int,
                   help="frames at the start that are not part of the map")
    p.add_argument("-g", "--gpu", dest="gpu", action="store_true", default=False,
                   help="accepted for diff_map compatibility; ignored")
    p.add_argument("-S", "--stats", dest="stats", action="store_true", default=False,
                   help="print timing statistics at the end")
    p.add_argument("--gui", dest="gui", action="store_true", default=True,
                   help="accepted for diff_map compatibility; there is no GUI")
    p.add_argument("--no-gui", dest="gui", action="store_false", default=True,
                   help="no GUI (always the case)")
    p.add_argument("--config", dest="config", default=None,
                   help="diff_map's JSON configuration file")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="integrator: peakstream (our integrate node, default) or pyfai")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`peakstream diffmap`: register the subcommand (its function is `run`)."""
    p = subparsers.add_parser("diffmap", help="drop-in for pyFAI's diff_map --no-gui",
                              add_help=True)
    build_parser(parser=p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 written, 2 bad usage or input (also: no frame could be integrated)."""
    if getattr(args, "verbose", False):
        logging.getLogger("stream").setLevel(logging.DEBUG)
    if getattr(args, "gpu", False):
        log.warning("diffmap: -g/--gpu is ignored (the integrate node runs on the CPU)")
    try:
        settings = settings_from(args)
    except (OSError, ValueError) as exc:
        print(f"peakstream diffmap: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    progress = ProgressLine("diffmap", interval=2.0)
    try:
        from stream.run.warmup import compile_notices

        with compile_notices(progress.compiled):  # a new install: the integrate kernels
            summary = run_diffmap(settings, progress=lambda done, total: progress(
                done, total, "frames"))
    except (OSError, ValueError) as exc:
        progress.done()
        print(f"peakstream diffmap: {exc}", file=sys.stderr)
        return 2
    progress.done()
    dt = time.perf_counter() - t0
    n = summary["frames"]
    print(f"peakstream diffmap: {n} frames in {dt:.3f} s ({1000 * dt / max(n, 1):.1f} ms/frame);"
          f" {summary['bad']} unreadable, {summary['outside']} outside the map (before -O, or "
          f"past -r); wrote {settings.output}", file=sys.stderr)
    if settings.stats and summary["times"]:
        t = np.array(summary["times"]) * 1000
        print(f"integration ms/frame: min {t.min():.2f} median {np.median(t):.2f} "
              f"max {t.max():.2f}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


# ------------------------------------------------------------------ settings


def to_tuple(name: str) -> tuple[int, ...]:
    """The numbers in a name, as diff_map sorts its inputs ("a06/b_1_14.edf" -> (6, 1, 14))."""
    out, cur = [], ""
    for c in name:
        if c.isdigit():
            cur += c
        elif cur:
            out.append(int(cur))
            cur = ""
    if cur:  # diff_map drops trailing digits; they never occur before an extension
        out.append(int(cur))
    return tuple(out)


def input_files(args: list[str], prefix: str = "", extension: str = "") -> list[str]:
    """diff_map's inputs: files, directories (filtered by prefix and extension), globs;
    `FILE::/path` stacks kept as they are; sorted by the numbers in their names."""
    import glob

    files: list[str] = []
    for fn in args:
        if "::" in fn and os.path.isfile(fn.split("::")[0]):
            files.append(fn)
        elif os.path.isfile(fn) and fn.endswith(extension):
            files.append(os.path.abspath(fn))
        elif os.path.isdir(fn):
            files += [os.path.abspath(os.path.join(fn, g)) for g in os.listdir(fn)
                      if g.endswith(extension) and g.startswith(prefix)]
        else:
            found = glob.glob(fn)
            if not found:
                raise FileNotFoundError(f"{fn}: no such file")
            files += [os.path.abspath(g) for g in found]
    files.sort(key=to_tuple)
    return files


def hdf5_frames(inputs: list[str]) -> list[str]:
    """Each HDF5 file given without a path as the FILE::/path stacks a replay takes from
    it (`stream.sources.files.frame_inputs`), said on stderr; other inputs as they are. A
    file of several stacks is refused, naming them, unless fabio reads it (an EIGER
    master file, whose data_000001, data_000002 ... fabio joins)."""
    from stream.sources.files import frame_inputs

    out, said = frame_inputs(inputs, readable=_fabio_reads)
    for line in said:
        print(f"peakstream diffmap: {line}", file=sys.stderr)
    return out


def _fabio_reads(name: str) -> bool:
    import fabio

    try:
        with fabio.open(name):
            return True
    except Exception:  # fabio raises many kinds on a layout it does not know
        return False


def read_config(path: str) -> dict[str, Any]:
    """diff_map's JSON configuration (DiffmapConfig, either version) as Settings fields."""
    try:
        with open(path) as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {path}: cannot read: {exc}") from None
    ai = d.get("ai") or {}
    out: dict[str, Any] = {}
    for axis in ("fast", "slow"):
        motor = d.get(f"{axis}_motor") or {}
        points = motor.get("points") or d.get(f"nbpt_{axis}") or d.get(f"npt_{axis}") \
            or d.get(f"{axis}_motor_points")
        if points:
            out["nfast" if axis == "fast" else "nslow"] = int(points)
        name = motor.get("name") or d.get(f"{axis}_motor_name")
        if name:
            out[f"{axis}_name"] = str(name)
        rng = ([motor["start"], motor["stop"]] if motor.get("start") is not None
               and motor.get("stop") is not None else d.get(f"{axis}_motor_range"))
        if rng:
            out[f"{axis}_range"] = [float(rng[0]), float(rng[-1])]
    for key, name in (("offset", "offset"), ("zigzag_scan", "zigzag"),
                      ("experiment_title", "title"), ("output_file", "output")):
        if d.get(key) not in (None, ""):
            out[name] = d[key]
    if d.get("input_data"):
        out["inputs"] = [i[0] if isinstance(i, list | tuple) else i["path"]
                         for i in d["input_data"]]
    poni = ai.get("poni")
    if isinstance(poni, str):
        out["poni_file"] = poni
    elif isinstance(poni, dict):
        out["poni"] = poni
    elif "dist" in ai:  # old worker configs: the geometry at the top of "ai"
        out["poni"] = {k: ai[k] for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                          "wavelength", "detector", "detector_config",
                                          "pixel1", "pixel2") if k in ai}
    simple = {"nbpt_rad": "npt", "nbpt_azim": "npt_azim", "unit": "unit",
              "correct_solid_angle": "correct_solid_angle", "do_solid_angle":
              "correct_solid_angle", "error_model": "error_model", "method": "method",
              "radial_range": "radial_range", "azimuth_range": "azimuth_range",
              "val_dummy": "dummy", "delta_dummy": "delta_dummy", "mask_file": "mask"}
    for key, name in simple.items():
        if ai.get(key) is not None:
            out[name] = ai[key]
    pol = ai.get("polarization_description") or ai.get("polarization_factor")
    if isinstance(pol, list | tuple) and pol and pol[0] is not None:
        out["polarization_factor"] = float(pol[0])
    elif isinstance(pol, int | float):
        out["polarization_factor"] = float(pol)
    for key, name in (("dark_current", "dark"), ("flat_field", "flat")):
        value = ai.get(key) or ai.get(f"{key}_image")
        if value:
            out[name] = value.split(",") if isinstance(value, str) else list(value)
    if out.get("mask"):
        out["mask"] = from_fabio_url(str(out["mask"]))
    if str(out.get("error_model", "poisson")).lower() in ("no", "none", "errormodel.no"):
        out["error_model"] = "poisson"  # diff_map's default "no": we always give errors
    return out


def from_fabio_url(spec: str) -> str:
    """diff_map records a mask frame as fabio:///path?slice=N; ours is path::N."""
    if not spec.startswith("fabio:"):
        return spec
    from urllib.parse import parse_qs, urlparse

    url = urlparse(spec)
    frame = parse_qs(url.query).get("slice", [""])[0]
    return f"{url.path}::{frame}" if frame else url.path


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from parsed options over the --config file (as diff_map does)."""
    conf = read_config(args.config) if args.config else {}
    cli = {"output": args.outfile, "nfast": args.fast, "nslow": args.slow,
           "npt": args.npt_rad, "npt_azim": args.npt_azim, "offset": args.offset,
           "poni_file": args.poni, "mask": from_fabio_url(args.mask) if args.mask else None,
           "dark": args.dark.split(",") if args.dark else None,
           "flat": args.flat.split(",") if args.flat else None,
           "engine": getattr(args, "engine", None), "stats": args.stats or None}
    values = {**conf, **{k: v for k, v in cli.items() if v is not None}}
    if args.zigzag:
        values["zigzag"] = True
    inputs = input_files(list(args.args), args.prefix, args.extension) if args.args else \
        list(conf.get("inputs", []))
    values["inputs"] = inputs = hdf5_frames(inputs)
    if not inputs:
        raise ValueError("no input files")
    if not values.get("output"):
        raise ValueError("give the output HDF5 file (-o FILE)")
    if not values.get("nfast"):
        raise ValueError("give the points along the fast motion (-t N)")
    if not values.get("poni_file") and not values.get("poni"):
        raise ValueError("give the geometry (-p FILE.poni, or 'poni' in --config)")
    for key in ("dark", "flat"):
        for name in values.get(key) or []:
            if not os.path.isfile(name.split("::")[0]):
                raise FileNotFoundError(f"{key} file {name}: no such file")
    if values.get("mask") and not os.path.isfile(values["mask"].split("::")[0]):
        raise FileNotFoundError(f"mask file {values['mask']}: no such file")
    values.setdefault("engine", "peakstream")
    known = Settings.__dataclass_fields__
    return Settings(**{k: v for k, v in values.items() if k in known})


if __name__ == "__main__":
    sys.exit(main())
