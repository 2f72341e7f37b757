"""HDF5 files of simulated scans: frames, motors, counters, truth and calibration.

Layout (one file per scan)::

    /entry                                attrs scan_id, creator = "peakstream.simulate"
    /entry/start                          attr start_json: the start message header
    /entry/instrument/<detector>/data     (npoints, ny, nx), one frame per chunk
    /entry/measurement/<motor>|monitor|time (npoints,): the motors the start announced
                                          (omega, and dty for 2D scans; NaN if not read)
    /entry/truth/<column>                 the truth table (see simulate.Simulation)
    /entry/calibration/mask, flat         uint8 (1 = gap or dead), float32 gain

A start_json without a `trajectory` map (a file written by something else) gets
the one `derive_trajectory` finds in the recorded motor positions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import h5py
import msgpack
import numpy as np

from stream.core.derive import derive_trajectory
from stream.core.messages import Point, Start
from stream.wire.codec import decode, encode

if TYPE_CHECKING:
    from stream.sources.simulate.simulation import Simulation

CREATOR = "peakstream.simulate"


def write_scan(sim: Simulation, path: str | os.PathLike, scan_id: str,
               progress: Callable[[int, int], None] | None = None) -> None:
    """Write every point of `sim` to `path`, frame by frame."""
    c = sim.config
    n = c.npoints
    start = sim.start(scan_id)
    header = msgpack.unpackb(encode(start)[0], raw=False)
    with h5py.File(path, "w") as h:
        entry = h.create_group("entry")
        entry.attrs["scan_id"] = scan_id
        entry.attrs["creator"] = CREATOR
        entry.create_group("start").attrs["start_json"] = json.dumps(header)
        data = entry.create_dataset(f"instrument/{c.detector}/data", (n, *c.shape),
                                    dtype=c.dtype, chunks=(1, *c.shape))
        meas = entry.create_group("measurement")
        motors = {m: np.zeros(n) for m in start.motors}
        monitor, times = np.zeros(n), np.zeros(n)
        for i in range(n):
            p = sim.point(i, scan_id)
            data[i] = p.frames[c.detector]
            for m, column in motors.items():
                column[i] = p.motors.get(m, np.nan)
            monitor[i], times[i] = p.counters["monitor"], p.time
            if progress is not None:
                progress(i + 1, n)
        for m, column in motors.items():
            meas[m] = column
        meas["monitor"], meas["time"] = monitor, times
        truth = entry.create_group("truth")
        for key, column in sim.truth.items():
            truth[key] = column
        entry["calibration/mask"] = sim.mask
        entry["calibration/flat"] = sim.flat


def read_scan(path: str | os.PathLike) -> tuple[Start, Iterator[Point]]:
    """The start message and an iterator over the points, one frame read at a time."""
    with _open(path) as h:
        start = _start(h, path)
    return start, _points(path, start)


def read_truth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The truth table of a simulated scan file."""
    with _open(path) as h:
        _start(h, path)
        return {key: column[()] for key, column in h["entry/truth"].items()}


def _open(path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{os.fspath(path)}: not a peakstream simulator file "
                         f"(not HDF5: {exc})") from None


def _start(h: h5py.File, path) -> Start:
    entry = h.get("entry")
    if (not isinstance(entry, h5py.Group) or entry.attrs.get("creator") != CREATOR
            or "start" not in entry or "start_json" not in entry["start"].attrs):
        raise ValueError(f"{os.fspath(path)}: not a peakstream simulator file "
                         f"(no /entry with creator {CREATOR!r} and start/start_json)")
    try:
        header = json.loads(entry["start"].attrs["start_json"])
        if isinstance(header, dict) and "trajectory" not in header:
            meas = entry.get("measurement", {})
            header["trajectory"] = derive_trajectory(
                {m: meas[m][()] for m in header.get("motors") or [] if m in meas})
        start = decode([msgpack.packb(header)])
    except ValueError as exc:  # MessageError and JSONDecodeError are ValueErrors
        raise ValueError(f"{os.fspath(path)}: bad start_json: {exc}") from None
    if not isinstance(start, Start):
        raise ValueError(f"{os.fspath(path)}: start_json is not a start message")
    return start


def _points(path, start: Start) -> Iterator[Point]:
    with h5py.File(path, "r") as h:
        meas = h["entry/measurement"]
        monitor, times = meas["monitor"][()], meas["time"][()]
        motors = {m: meas[m][()] for m in start.motors if m in meas}
        data = {name: h[f"entry/instrument/{name}/data"] for name in start.detectors}
        for i in range(len(times)):
            yield Point(start.scan_id, i, float(times[i]),
                        {m: float(v[i]) for m, v in motors.items()},
                        {"monitor": float(monitor[i])},
                        {name: d[i] for name, d in data.items()})
