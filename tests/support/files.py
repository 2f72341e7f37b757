"""Shared by the tests/test_files_*.py: one small simulated scan, run live (its own
points through the wire encoding) or replayed from a file, and the comparison."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import h5py
import numpy as np

from stream.config.schema import Config
from stream.core.messages import End
from stream.run.runner import ScanRunner
from stream.sources.files import open_recording
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.paths import CONFIGS

SIMCONF = SimConfig(npoints=20, shape=(96, 128), spots=4, seed=1)
TABLES = ("cliques", "peaks2d", "overlaps")


def corrected_chain(**files: str) -> str:
    """The [[node]] tables of a chain correct (with these calibration files, e.g.
    dark="dark.npy"), threshold 40, label, properties."""
    given = "".join(f"{key} = {value!r}\n" for key, value in files.items())
    return (f'[[node]]\nkind = "correct"\n{given}[[node]]\nkind = "threshold"\ncut = 40.0\n'
            f'[[node]]\nkind = "label"\n[[node]]\nkind = "properties"\n')


@cache
def sim() -> Simulation:
    return Simulation(SIMCONF)


@cache
def frames() -> list[np.ndarray]:
    return [sim().frame(i) for i in range(SIMCONF.npoints)]


def omegas() -> np.ndarray:
    return np.array([sim().omega(i) for i in range(SIMCONF.npoints)])


def monitors() -> np.ndarray:
    return np.array([sim().monitor_value(i) for i in range(SIMCONF.npoints)])


def run(start, points, path: Path) -> dict:
    """Start, points and end through ScanRunner.handle(encode(...)), as cmd_replay does."""
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=path)
    runner.handle(encode(start))
    n = 0
    for p in points:
        runner.handle(encode(p))
        n += 1
    npoints = n if start.npoints is None else start.npoints  # as RecordingSource ends
    runner.handle(encode(End(start.scan_id, "success", npoints)))
    runner.close()
    tables = load(path)
    lost = (tables["points"]["status"] != 0).any()  # missing or bad: never a silent success
    assert runner.results[0]["status"] == ("incomplete" if lost else "success"), \
        runner.results
    return tables


def live(tmp_path: Path, skip=()) -> dict:
    """The simulator's own points, as a live scan sends them (points in `skip` never sent)."""
    s = sim()
    points = (s.point(i, "live") for i in range(SIMCONF.npoints) if i not in skip)
    return run(s.start("live"), points, tmp_path / f"live-{'-'.join(map(str, skip))}.h5")


def replay(tmp_path: Path, inputs: list, name: str = "replay", **options) -> dict:
    start, points = open_recording([str(x) for x in inputs], **options)
    return run(start, points, tmp_path / f"{name}.h5")


def same(a: dict, b: dict, tables=TABLES) -> None:
    """Identical tables, every column, bit for bit."""
    assert len(a["cliques"]["clique_id"]) >= 3
    for t in tables:
        assert a[t].keys() == b[t].keys(), t
        for k in a[t]:
            assert a[t][k].dtype == b[t][k].dtype, (t, k)
            assert np.array_equal(a[t][k], b[t][k], equal_nan=a[t][k].dtype.kind == "f"), (t, k)


def status(tables: dict) -> np.ndarray:
    """Point status (0 ok, 1 missing, 2 bad) by point_id."""
    pts = tables["points"]
    out = np.full(pts["point_id"].max() + 1, -1)
    out[pts["point_id"]] = pts["status"]
    return out


def events(tables: dict, kind: str = "bad") -> dict[int, str]:
    ev = tables["events"]
    return {int(p): str(m) for p, k, m in zip(ev["point_id"], ev["kind"], ev["message"],
                                              strict=True) if k == kind}


def write_bliss(path, frames_, omega, monitor, scan="1.1", chunk=1, filters=None):
    """A Bliss-like scan: /1.1/instrument/eiger/data, /1.1/measurement/eiger a link to it."""
    with h5py.File(path, "a") as f:
        g = f.create_group(scan)
        ny, nx = frames_[0].shape
        data = g.create_dataset("instrument/eiger/data", (len(frames_), ny, nx), dtype="uint16",
                                chunks=(chunk, ny, nx), **(filters or {}))
        for i, fr in enumerate(frames_):
            data[i] = fr
        g["measurement/eiger"] = h5py.SoftLink(f"/{scan}/instrument/eiger/data")
        g["measurement/rot_center"] = np.asarray(omega, np.float64)
        g["measurement/mon"] = np.asarray(monitor, np.float64)
    return path


def write_lima(path: Path, stack: np.ndarray, detector: str = "eiger") -> Path:
    """A Lima HDF5 file: the frames at /entry_0000/measurement/data, and
    /entry_0000/instrument/<detector>/data a soft link to them."""
    with h5py.File(path, "w") as f:
        f["entry_0000/measurement/data"] = stack
        f[f"entry_0000/instrument/{detector}/data"] = h5py.SoftLink(
            "/entry_0000/measurement/data")
    return path


def write_lima_master(tmp_path: Path, per_file: int, held: dict[int, int] | None = None) -> Path:
    """A Bliss-like master.h5 whose virtual dataset /1.1/measurement/eiger maps the scan's
    frames from Lima files of `per_file` frames (eiger_0000.h5, ...), with rot_center and
    mon beside it; `held[k]`: file k holds only that many (a file cut short)."""
    n = len(frames())
    layout = h5py.VirtualLayout((n, *SIMCONF.shape), dtype="uint16")
    for k in range(n // per_file):
        first = per_file * k
        write_lima(tmp_path / f"eiger_{k:04d}.h5",
                   np.stack(frames()[first:first + (held or {}).get(k, per_file)]))
        layout[first:first + per_file] = h5py.VirtualSource(
            f"eiger_{k:04d}.h5", "entry_0000/measurement/data", shape=(per_file, *SIMCONF.shape))
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        f.create_group("1.1/measurement").create_virtual_dataset("eiger", layout, fillvalue=0)
        f["1.1/measurement/rot_center"], f["1.1/measurement/mon"] = omegas(), monitors()
    return master
