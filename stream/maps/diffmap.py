"""`peakstream diffmap`: a drop-in for pyFAI's `diff_map --no-gui`.

The options are diff_map's (pyFAI `src/pyFAI/diffmap.py`, `DiffMap.parse`), with the
same names, destinations and meaning, so a user switches by changing the command:

    peakstream diffmap -p geometry.poni -o map.h5 -t 41 -r 21 -c 1000 [--zigzag]
        [-d dark1.edf,dark2.edf] [-f flat.edf] [-m mask.edf] [-O 2] [-P PREFIX -e .edf]
        [--npt-azim 36] [--config diffmap.json] FILES...

Inputs are sorted as diff_map sorts them (by the numbers in their names); every
frame of every file (multi-frame EDF, HDF5 through fabio) is one map point,
frame k at row (k - offset) // fast. Differences: no mask is fine (diff_map
crashes); an unreadable file is logged and its points left empty (NaN,
map_ptr -1) instead of stopping the run; errors (Poisson) are always written;
places without a frame hold map_ptr -1. The file has diff_map's layout
(`stream.maps`) and is flushed after every row, so it can be opened while the
run goes on. `--gui`, `-g/--gpu` are accepted and ignored.

The integration is a callable `frame -> Pattern`; `--engine peakstream` (the
default) uses our `integrate` node, `--engine pyfai` pyFAI's own integrator
(with diff_map's default method, full pixel splitting, when none is configured).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream import __version__
from stream.maps.grid import MapGrid, MapWriter

log = logging.getLogger(__name__)

ENGINES = ("peakstream", "pyfai")


@dataclass
class Pattern:
    """One integrated frame: intensity (npt,) or (npt_azim, npt), its error, the axes."""

    radial: np.ndarray
    intensity: np.ndarray
    error: np.ndarray | None = None
    azimuthal: np.ndarray | None = None


Integrator = Callable[[np.ndarray], Pattern]


@dataclass
class Settings:
    """What a diff_map run needs (command line over --config, as in pyFAI)."""

    inputs: list[str]
    output: str
    nfast: int
    nslow: int | None = None
    poni_file: str | None = None
    poni: dict[str, Any] | None = None  # pyFAI's poni dict, from a --config
    npt: int = 1000
    npt_azim: int = 1
    unit: str = "2th_deg"
    dark: list[str] = field(default_factory=list)
    flat: list[str] = field(default_factory=list)
    mask: str | None = None
    offset: int = 0
    zigzag: bool = False
    correct_solid_angle: bool = True
    polarization_factor: float | None = None
    error_model: str = "poisson"
    method: Any = None
    radial_range: list[float] | None = None
    azimuth_range: list[float] | None = None
    dummy: float | None = None
    delta_dummy: float | None = None
    title: str = "Diffraction Mapping"
    slow_name: str = "slow"
    fast_name: str = "fast"
    slow_range: list[float] | None = None
    fast_range: list[float] | None = None
    engine: str = "peakstream"
    stats: bool = False


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
                   "directories with -P/-e, multi-frame files)")
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
                   help="points along the slow motion (default: as many rows as come)")
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
    progress = _ProgressLine()
    try:
        summary = run_diffmap(settings, progress=progress)
    except (OSError, ValueError) as exc:
        progress.done()
        print(f"peakstream diffmap: {exc}", file=sys.stderr)
        return 2
    progress.done()
    dt = time.perf_counter() - t0
    n = summary["frames"]
    print(f"peakstream diffmap: {n} frames in {dt:.3f} s ({1000 * dt / max(n, 1):.1f} ms/frame);"
          f" {summary['bad']} unreadable, {summary['outside']} before the offset; "
          f"wrote {settings.output}", file=sys.stderr)
    if settings.stats and summary["times"]:
        t = np.array(summary["times"]) * 1000
        print(f"integration ms/frame: min {t.min():.2f} median {np.median(t):.2f} "
              f"max {t.max():.2f}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


class _ProgressLine:
    """Frames done on stderr: in place on a terminal, a line every 2 s otherwise."""

    def __init__(self) -> None:
        self.tty, self.last, self.drawn = sys.stderr.isatty(), 0.0, False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 2.0) and done != total:
            return
        self.last, self.drawn = now, True
        line = f"diffmap: {done}{f'/{total}' if total else ''} frames"
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.drawn:
            sys.stderr.write("\n")
        self.drawn = False


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


def method3(method: Any) -> Any:
    """A pyFAI method as (split, algo, impl): 5-element (dim, split, algo, impl, target)
    lists from a config are cut down; strings and None are kept."""
    if isinstance(method, list | tuple):
        return tuple(method[1:4]) if len(method) == 5 else tuple(method)
    return method


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
    values["inputs"] = inputs
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


# ------------------------------------------------------------------ images


def read_frames(path: str) -> Iterator[np.ndarray]:
    """Every frame of one input: fabio for images, h5py for FILE.h5::/path datasets."""
    if "::" in path and not path.rsplit("::", 1)[1].isdigit():
        import h5py

        name, inner = path.split("::", 1)
        with h5py.File(name, "r") as f:
            ds = f[inner]
            if ds.ndim == 2:
                yield ds[()]
            else:
                for k in range(ds.shape[0]):
                    yield ds[k]
        return
    import fabio

    with fabio.open(path) as img:
        for j in range(max(int(img.nframes), 1)):
            frame = img if j == 0 else img.getframe(j)
            if frame.data is None:
                raise ValueError(f"frame {j}: no data")
            yield frame.data


def mean_image(files: list[str]) -> np.ndarray:
    """The mean of every frame of the files (diff_map averages darks and flats)."""
    from stream.offline.stats import frame_stats

    images, _ = frame_stats((f for name in files for f in read_frames(name)), ["mean"])
    return images["mean"]


def load_mask(spec: str) -> np.ndarray:
    """A mask image (nonzero: masked): fabio file, FILE::N frame, FILE.h5::/path, .npy."""
    if spec.endswith(".npy"):
        return np.load(spec, allow_pickle=False) != 0
    if "::" in spec and spec.rsplit("::", 1)[1].isdigit():
        import fabio

        name, n = spec.rsplit("::", 1)
        with fabio.open(name) as img:
            return (img.getframe(int(n)).data if int(n) else img.data) != 0
    return next(read_frames(spec)) != 0


# ------------------------------------------------------------------ integrators


def geometry_of(s: Settings) -> dict[str, Any]:
    """Geometry values (the integrate node's keywords) from the PONI file or config."""
    from stream.config.poni import geometry_values, parse_poni, read_poni

    if s.poni_file:
        return geometry_values(read_poni(s.poni_file))
    p = dict(s.poni or {})
    conf = p.get("detector_config") or {}
    lines = [f"{k}: {p[k]}" for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                      "wavelength") if p.get(k) is not None]
    lines.append(f"Detector: {p.get('detector', 'Detector')}")
    if conf:
        lines += ["poni_version: 2.1", f"Detector_config: {json.dumps(conf)}"]
    else:
        lines += [f"PixelSize{i}: {p[f'pixel{i}']}" for i in (1, 2) if f"pixel{i}" in p]
    return geometry_values(parse_poni("\n".join(lines), "--config poni"))


def node_integrator(s: Settings, shape: tuple[int, int], dtype: np.dtype,
                    dark: np.ndarray | None, flat: np.ndarray | None,
                    mask: np.ndarray | None) -> Integrator:
    """Our `integrate` node (with `correct` fused for dark / flat) as an Integrator."""
    from nodes.correct import Correct
    from nodes.integrate import FusedIntegrate, Integrate
    from stream.core.item import Item
    from stream.core.messages import DTYPES, DetectorInfo, Start
    from stream.core.scan import Scan

    method = method3(s.method)
    first = method[0] if isinstance(method, tuple) and method else method
    split = "no" if first == "no" else "bbox"  # full splitting is done as bbox
    node = Integrate(**geometry_of(s), npt=int(s.npt), unit=s.unit,
                     npt_azim=int(s.npt_azim) if (s.npt_azim or 1) > 1 else 0, split=split,
                     radial_range=s.radial_range, azimuth_range=s.azimuth_range, mask=mask,
                     dummy=s.dummy, delta_dummy=float(s.delta_dummy or 0.0),
                     correct_solid_angle=bool(s.correct_solid_angle),
                     polarization_factor=s.polarization_factor, error_model="poisson",
                     name="integrate")
    chain = node if dark is None and flat is None else \
        FusedIntegrate(node, correct=Correct(dark=dark, flat=flat))
    dt = dtype.name if dtype.name in DTYPES else "float32"
    chain.setup(Scan.from_start(Start("diffmap", {"detector": DetectorInfo(shape, dt)})))
    radial, azimuthal = node.radial(), node.azimuthal()

    def integrate(frame: np.ndarray) -> Pattern:
        if frame.dtype.name != dt:
            frame = frame.astype(dt)
        item = chain.process(Item(0, "detector", frame=frame))
        return Pattern(radial, item.outputs["integrate"], item.outputs.get("integrate_error"),
                       azimuthal)

    return integrate


def pyfai_integrator(s: Settings, shape: tuple[int, int], dtype: np.dtype,
                     dark: np.ndarray | None, flat: np.ndarray | None,
                     mask: np.ndarray | None) -> Integrator:
    """pyFAI's integrate1d / integrate2d, with diff_map's default method."""
    import pyFAI

    if s.poni_file:
        ai = pyFAI.load(s.poni_file)
    else:
        g = geometry_of(s)
        ai = pyFAI.load({**{k: g[k] for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                              "wavelength")},
                         "detector": "Detector", "detector_config": {
                             "pixel1": g["pixel1"], "pixel2": g["pixel2"],
                             "orientation": g["orientation"], "max_shape": list(shape)}})
    kw = dict(unit=s.unit, dark=dark, flat=flat, mask=mask,
              correctSolidAngle=bool(s.correct_solid_angle),
              polarization_factor=s.polarization_factor, radial_range=s.radial_range,
              azimuth_range=s.azimuth_range, dummy=s.dummy, delta_dummy=s.delta_dummy,
              method=method3(s.method) or ("full", "histogram", "cython"),
              error_model="poisson")
    if (s.npt_azim or 1) > 1:
        def integrate(frame: np.ndarray) -> Pattern:
            r = ai.integrate2d(frame, int(s.npt), int(s.npt_azim), **kw)
            return Pattern(r.radial, r.intensity, r.sigma, r.azimuthal)
    else:
        def integrate(frame: np.ndarray) -> Pattern:
            r = ai.integrate1d(frame, int(s.npt), **kw)
            return Pattern(r.radial, r.intensity, r.sigma)
    return integrate


def worker_config(s: Settings, shape: tuple[int, int]) -> dict[str, Any]:
    """The integration config in pyFAI's worker-config names (provenance, as diff_map's)."""
    return {"application": "peakstream diffmap", "version": __version__, "engine": s.engine,
            "poni": s.poni_file or s.poni, "nbpt_rad": s.npt, "nbpt_azim": s.npt_azim or 1,
            "unit": s.unit, "polarization_description": [s.polarization_factor, 0],
            "normalization_factor": 1.0, "val_dummy": s.dummy, "delta_dummy": s.delta_dummy,
            "correct_solid_angle": s.correct_solid_angle, "dark_current": s.dark or None,
            "flat_field": s.flat or None, "mask_file": s.mask, "error_model": s.error_model,
            "method": s.method, "azimuth_range": s.azimuth_range,
            "radial_range": s.radial_range, "shape": list(shape),
            "integrator_method": "integrate2d" if (s.npt_azim or 1) > 1 else "integrate1d"}


# ------------------------------------------------------------------ the run


def frames_in(path: str) -> int:
    """Frames in one input (1 if it cannot be told): the expected total for progress."""
    try:
        if "::" in path:
            import h5py

            name, inner = path.split("::", 1)
            with h5py.File(name, "r") as f:
                return 1 if f[inner].ndim == 2 else int(f[inner].shape[0])
        import fabio

        with fabio.open(path) as img:
            return max(int(img.nframes), 1)
    except Exception:  # judged again, frame by frame, by the run itself
        return 1


def frames_of(files: list[str]) -> Iterator[tuple[int, str, np.ndarray | Exception]]:
    """(frame index, where, frame or the error) over every frame of the inputs; an
    unreadable file takes the frames per file of the last readable one (usually 1)."""
    index, per_file = 0, 1
    for path in files:
        n = 0
        try:
            for frame in read_frames(path):
                yield index, f"{path} frame {n}", np.asarray(frame)
                index += 1
                n += 1
        except Exception as exc:  # fabio and h5py raise many kinds on damaged files
            for _ in range(max(per_file - n, 1)):
                yield index, f"{path} frame {n}", exc
                index += 1
                n += 1
        per_file = max(n, 1)


def run_diffmap(s: Settings, integrator: Integrator | None = None,
                progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Integrate every frame and write the map while frames arrive; a summary."""
    grid = MapGrid(int(s.nfast), int(s.nslow) if s.nslow else None, bool(s.zigzag),
                   int(s.offset or 0))
    mask = load_mask(s.mask) if s.mask else None
    dark = mean_image(s.dark) if s.dark else None
    flat = mean_image(s.flat) if s.flat else None
    writer: MapWriter | None = None
    counts = {"frames": 0, "bad": 0, "outside": 0, "times": []}
    total = len(s.inputs) * frames_in(s.inputs[0]) if s.inputs else None
    try:
        for index, where, frame in frames_of(s.inputs):
            if grid.place(index)[0] < 0:
                counts["outside"] += 1
                continue
            if isinstance(frame, Exception) or frame.ndim != 2:
                counts["bad"] += 1
                log.warning("diffmap: %s skipped: %s", where,
                            frame if isinstance(frame, Exception) else f"{frame.ndim}D data")
                continue
            if writer is None:
                integrator = integrator or make_integrator(s, frame, dark, flat, mask)
                writer = _writer(s, grid, frame.shape)
            t0 = time.perf_counter()
            pat = integrator(frame)
            counts["times"].append(time.perf_counter() - t0)
            if counts["frames"] == 0:
                writer.set_radial(np.asarray(pat.radial), s.unit, pat.azimuthal)
            outputs = {"intensity": np.asarray(pat.intensity, np.float32)}
            if pat.error is not None:
                outputs["errors"] = np.asarray(pat.error, np.float32)
            writer.add(index, outputs)
            counts["frames"] += 1
            if progress is not None:
                progress(index + 1, total if total and total >= index + 1 else None)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no frame could be integrated (see the log)")
    counts["duplicate"] = writer.counts["duplicate"]
    return counts


def make_integrator(s: Settings, frame: np.ndarray, dark: np.ndarray | None,
                    flat: np.ndarray | None, mask: np.ndarray | None) -> Integrator:
    for name, arr in (("dark", dark), ("flat", flat), ("mask", mask)):
        if arr is not None and arr.shape != frame.shape:
            raise ValueError(f"{name} has shape {arr.shape}, the frames {frame.shape}")
    make = pyfai_integrator if s.engine == "pyfai" else node_integrator
    return make(s, frame.shape, frame.dtype, dark, flat, mask)


def _writer(s: Settings, grid: MapGrid, shape: tuple[int, int]) -> MapWriter:
    process: dict[str, Any] = {"inputfiles": list(s.inputs)}
    if s.poni_file:
        process["PONIfile"] = os.path.abspath(s.poni_file)
    if s.mask:
        process["maskfile"] = s.mask
    if s.dark:
        process["darkfiles"] = list(s.dark)
    if s.flat:
        process["flatfiles"] = list(s.flat)
    return MapWriter(s.output, grid, pattern="intensity", errors="errors", unit=s.unit,
                     slow_range=s.slow_range, fast_range=s.fast_range,
                     names=(s.slow_name, s.fast_name), process=process,
                     config=worker_config(s, shape), title=s.title)


if __name__ == "__main__":
    sys.exit(main())
