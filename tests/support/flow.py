"""Shared by the workers and flow-control tests: a simulated scan, its reference run
(inline, in this process) and a table-by-table comparison of output files."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from stream.config.schema import Config
from stream.core.table import read_table
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation, send_scan
from stream.sources.simulate.config import SimConfig
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.paths import CONFIGS

SIMCONF = SimConfig(npoints=60, shape=(128, 160), spots=24, seed=3)


def workers_config(tmp_path: Path, kind: str, extra: str = "", name: str | None = None) -> Path:
    """configs/simulated.toml with a [workers] group (and `extra` lines in it)."""
    path = tmp_path / f"{name or kind}.toml"
    path.write_text((CONFIGS / "simulated.toml").read_text()
                    + f'\n[workers]\nkind = "{kind}"\ncount = 2\n{extra}\n')
    return path


def run_altered(path: Path, scan_id: str, npoints: int, alter) -> dict:
    """A simulated scan of `npoints` (SIMCONF, 4 spots) through a ScanRunner with
    configs/simulated.toml into `path`, each point's wire message as `alter(i, point)`
    makes it (a list of parts); the runner's result."""
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=npoints, spots=4))
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=path)
    runner.handle(encode(sim.start(scan_id)))
    for i in range(npoints):
        runner.handle(alter(i, sim.point(i, scan_id)))
    runner.handle(encode(sim.end(scan_id, npoints)))
    runner.close()
    (result,) = runner.results
    return result


def tables(path: Path) -> dict:
    """Every table of an output file (the links table too), and its counters."""
    t = load(path)
    with h5py.File(path, "r") as f:
        t["links"] = read_table(f["entry/points/links"])
        t["counters"] = dict(f["entry/process/counters"].attrs)
    return t


def assert_same_tables(a: dict, b: dict) -> None:
    for name in ("points", "links", "sparse", "peaks2d", "overlaps", "cliques", "events"):
        assert a[name].keys() == b[name].keys(), name
        for col in a[name]:
            x, y = a[name][col], b[name][col]
            assert x.dtype == y.dtype, (name, col)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (name, col)


def reference_tables(directory: Path) -> dict:
    """The SIMCONF scan through the inline runner in this process (the wire encoding)."""
    path = directory / "ref.h5"
    sim = Simulation(SIMCONF)
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=path)
    runner.handle(encode(sim.start("ref")))
    for i in range(SIMCONF.npoints):
        runner.handle(encode(sim.point(i, "ref")))
    runner.handle(encode(sim.end("ref")))
    runner.close()
    assert runner.results[0]["status"] == "success"
    return tables(path)


def run_scan(run_process, config: Path, scan_id: str, rate: float | None = None) -> tuple:
    """Send the SIMCONF scan into `peakstream run` (a subprocess) from a thread here.
    Returns (run's stderr, the file's tables)."""
    run = run_process(config, "--scans", "1")
    sender = threading.Thread(target=send_scan, args=(Simulation(SIMCONF), run.endpoint,
                                                      scan_id), kwargs={"rate": rate})
    sender.start()
    sender.join(timeout=120)
    rc, out, err = run.wait()
    assert rc == 0, err
    return err, tables(config.parent / "out" / f"{scan_id}.h5")  # run_process's directory


def wait_for_file(path: Path, limit: float = 300.0) -> None:
    """Until the output file is complete (its status no longer running)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with h5py.File(path, "r", locking=False) as f:
                if f["entry"].attrs["status"] != "running":
                    return
        except (OSError, KeyError):
            pass  # not created yet, or being written
        time.sleep(0.1)
    raise AssertionError(f"{path} was not completed")
