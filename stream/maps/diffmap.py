"""`peakstream diffmap`: a drop-in for pyFAI's `diff_map --no-gui` (its command line
and config file are read in `stream.cli.diffmap`).

The options are diff_map's (pyFAI `src/pyFAI/diffmap.py`, `DiffMap.parse`), with the
same names, destinations and meaning, so a user switches by changing the command:

    peakstream diffmap -p geometry.poni -o map.h5 -t 41 -r 21 -c 1000 [--zigzag]
        [-d dark1.edf,dark2.edf] [-f flat.edf] [-m mask.edf] [-O 2] [-P PREFIX -e .edf]
        [--npt-azim 36] [--config diffmap.json] FILES...

Inputs are sorted as diff_map sorts them (by the numbers in their names); every
frame of every file (multi-frame EDF, FILE.h5::/path stacks) is one map point,
frame k at row (k - offset) // fast. `-r` rows make the map's slow size:
inputs with more frames than `-t` x `-r` hold (after the offset) are refused
before anything is written (`map_frames`: the frames past the last row would
have nowhere to go, and a bigger map than asked is no answer either); fewer
leave the last places empty. Without `-r` the map has as many rows as the
frames fill. As pyFAI, the mask and dummy of the PONI's detector are used unless
-m / dummy are given (`stream.config.detector`; the config's `detector_masking`).
Differences: no mask is fine (diff_map crashes); an unreadable file is logged
and its points left empty (NaN, map_ptr -1) instead of stopping the run; errors
(Poisson) are always written; places without a frame hold map_ptr -1. The file has diff_map's layout
(`stream.maps`) and is flushed after every row, so it can be opened while the
run goes on. `--gui`, `-g/--gpu` are accepted and ignored.

The integration is a callable `frame -> Pattern`; `--engine peakstream` (the
default) uses our `integrate` node, `--engine pyfai` pyFAI's own integrator
(with diff_map's default method, full pixel splitting, when none is configured).
"""

from __future__ import annotations

import json
import logging
import os
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


def method3(method: Any) -> Any:
    """A pyFAI method as (split, algo, impl): 5-element (dim, split, algo, impl, target)
    lists from a config are cut down; strings and None are kept."""
    if isinstance(method, list | tuple):
        return tuple(method[1:4]) if len(method) == 5 else tuple(method)
    return method


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
    from stream.config.detector import poni_masking
    from stream.core.item import Item
    from stream.core.messages import DTYPES, DetectorInfo, Start
    from stream.core.scan import Scan

    method = method3(s.method)
    first = method[0] if isinstance(method, tuple) and method else method
    split = "no" if first == "no" else "bbox"  # full splitting is done as bbox
    given = {} if mask is None else {"mask": mask}  # else the PONI detector's mask / dummy
    if s.dummy is not None:
        given.update(dummy=s.dummy, delta_dummy=float(s.delta_dummy or 0.0))
    given = poni_masking(s.poni_file or dict(s.poni or {}), given, "diffmap")
    node = Integrate(**geometry_of(s), npt=int(s.npt), unit=s.unit,
                     npt_azim=int(s.npt_azim) if (s.npt_azim or 1) > 1 else 0, split=split,
                     radial_range=s.radial_range, azimuth_range=s.azimuth_range, **given,
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

    integrate.detector = node.detector or None  # type: ignore[attr-defined]  # provenance
    return integrate


def pyfai_integrator(s: Settings, shape: tuple[int, int], dtype: np.dtype,
                     dark: np.ndarray | None, flat: np.ndarray | None,
                     mask: np.ndarray | None) -> Integrator:
    """pyFAI's integrate1d / integrate2d, with diff_map's default method."""
    import pyFAI

    if s.poni_file or (s.poni or {}).get("detector", "Detector") != "Detector":
        ai = pyFAI.load(s.poni_file or dict(s.poni))  # a named detector: its mask, dummy
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


def map_frames(s: Settings) -> int | None:
    """The frames the map gets with `-r` rows given (None without); ValueError if the
    inputs hold more than its -t x -r places (after the offset)."""
    if not s.nslow:
        return None
    offset, places = int(s.offset or 0), int(s.nfast) * int(s.nslow)
    frames = max(sum(frames_in(name) for name in s.inputs) - offset, 0)
    if frames > places:
        after = f" after the offset of {offset}" if offset else ""
        raise ValueError(f"-t {s.nfast} x -r {s.nslow} make a map of {places} points, but "
                         f"the inputs hold {frames} frames{after}: give -r "
                         f"{-(-frames // int(s.nfast))} (or leave -r out: as many rows as "
                         f"the frames fill), another -t, or -O to skip frames before the map")
    return frames


def run_diffmap(s: Settings, integrator: Integrator | None = None,
                progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Integrate every frame and write the map while frames arrive; a summary. With
    `nslow` (-r) the map has that many rows: more frames than it holds are refused."""
    frames = map_frames(s)
    grid = MapGrid(int(s.nfast), int(s.nslow) if s.nslow else None, bool(s.zigzag),
                   int(s.offset or 0))
    mask = load_mask(s.mask) if s.mask else None
    dark = mean_image(s.dark) if s.dark else None
    flat = mean_image(s.flat) if s.flat else None
    writer: MapWriter | None = None
    counts = {"frames": 0, "bad": 0, "outside": 0, "times": []}
    total = len(s.inputs) * frames_in(s.inputs[0]) if s.inputs else None
    if frames is not None:
        total = frames + int(s.offset or 0)
    try:
        for index, where, frame in frames_of(s.inputs):
            row = grid.place(index)[0]
            if row < 0 or (grid.nslow and row >= grid.nslow):  # before the offset, or
                counts["outside"] += 1  # past -r rows (an input grew after map_frames)
                if row >= 0:
                    log.warning("diffmap: %s skipped: past the %d rows of -r", where, grid.nslow)
                continue
            if isinstance(frame, Exception) or frame.ndim != 2:
                counts["bad"] += 1
                log.warning("diffmap: %s skipped: %s", where,
                            frame if isinstance(frame, Exception) else f"{frame.ndim}D data")
                continue
            if writer is None:
                integrator = integrator or make_integrator(s, frame, dark, flat, mask)
                writer = _writer(s, grid, frame.shape, getattr(integrator, "detector", None))
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
    made_for = geometry_of(s).get("detector_shape")
    if made_for is not None and tuple(made_for) != frame.shape:
        raise ValueError(f"the PONI {s.poni_file or 'geometry of the config'} is for a "
                         f"{made_for[0]} x {made_for[1]} detector (max_shape) but the frames "
                         f"are {frame.shape[0]} x {frame.shape[1]}: use the PONI file made "
                         f"for this detector")
    make = pyfai_integrator if s.engine == "pyfai" else node_integrator
    return make(s, frame.shape, frame.dtype, dark, flat, mask)


def _writer(s: Settings, grid: MapGrid, shape: tuple[int, int],
            detector: str | None) -> MapWriter:
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
                     config={**worker_config(s, shape), "detector_masking": detector},
                     title=s.title)

