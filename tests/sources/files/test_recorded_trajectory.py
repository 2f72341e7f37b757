"""Recorded scans keep their trajectory: Bliss-layout HDF5 stacks and EDF series of every
scan kind, replayed with `peakstream replay` and only the motor datasets / headers given,
derive the trajectory from the motor positions; every clean spot of the simulation's truth
is found as exactly one clique. --trajectory and [replay] trajectory override it."""

from __future__ import annotations

import json
import logging

import fabio
import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.truth import match_spots
from stream.store.reader import load
from tests.support.paths import CONFIGS

BASE = {"shape": (96, 96), "sigma_px": (1.0, 1.5), "seed": 1, "hot_pixels": 3,
        "dead_pixels": 3}
TWO_D = {**BASE, "spots": 14, "sigma_dty": (0.7, 1.0)}
KINDS = {  # name: (SimConfig, the trajectory keys the derivation must find)
    "sweep": (SimConfig(npoints=90, spots=30, **BASE), {"kind": "sweep"}),
    "wrap": (SimConfig(npoints=120, omega_step=3.0, spots=24, wrap=True, **BASE),
             {"kind": "sweep", "wrap": True}),
    "interlaced": (SimConfig(npoints=120, omega_step=1.0, spots=24, trajectory="interlaced",
                             **BASE), {"kind": "interlaced", "iflip": False}),
    "interlaced-iflip": (SimConfig(npoints=120, omega_step=1.0, spots=24,
                                   trajectory="interlaced", iflip=True, **BASE),
                         {"kind": "interlaced", "iflip": True}),
    "snake": (SimConfig(npoints=360, trajectory="snake", nrows=12, omega_step=0.25, **TWO_D),
              {"kind": "snake", "fast": "omega", "slow": "dty", "nfast": 30}),
    "grid": (SimConfig(npoints=360, trajectory="grid", nrows=12, omega_step=0.25, **TWO_D),
             {"kind": "grid", "fast": "omega", "slow": "dty", "nfast": 30}),
    # continuous rotation with sinusoidal dty, 7.3 degree steps (no whole points a turn)
    "free": (SimConfig(npoints=592, omega_step=7.3, sigma_points=(0.6, 0.8), spots=20,
                       trajectory="free", dty_amplitude=10.0, dty_period=4 * 592 * 7.3,
                       sigma_dty=(1.2, 1.8), touching_fraction=0.0, **BASE), {"kind": "free"}),
}


def write_bliss_scan(sim: Simulation, path, order=None) -> list[str]:
    """Bliss layout: /1.1/instrument/eiger/data, /1.1/measurement/{eiger,rot,dty,mon};
    no trajectory anywhere; the simulated points in `order` (default: as simulated).
    Returns the replay options for its motors and counter."""
    c = sim.config
    order = np.arange(c.npoints) if order is None else np.asarray(order)
    with h5py.File(path, "w") as f:
        g = f.create_group("1.1")
        data = g.create_dataset("instrument/eiger/data", (c.npoints, *c.shape),
                                dtype=c.dtype, chunks=(1, *c.shape))
        for k, i in enumerate(order):
            data[k] = sim.frame(int(i))
        g["measurement/eiger"] = h5py.SoftLink("/1.1/instrument/eiger/data")
        g["measurement/rot"] = np.array([sim.omega(int(i)) for i in order])
        g["measurement/mon"] = np.array([sim.monitor_value(int(i)) for i in order])
        opts = ["--motor", "omega=/1.1/measurement/rot"]
        if "dty" in sim.layout.motors:
            g["measurement/dty"] = np.asarray(sim.layout.dty, float)[order]
            opts += ["dty=/1.1/measurement/dty"]
    return [f"{path}::/1.1/measurement/eiger", *opts, "--counter",
            "monitor=/1.1/measurement/mon"]


def write_edf_series(sim: Simulation, folder) -> list[str]:
    """One EDF a point, motors and monitor in the headers (as ID11's EDF series)."""
    c = sim.config
    folder.mkdir()
    for i in range(c.npoints):
        header = {"omega": repr(sim.omega(i)), "mon": repr(sim.monitor_value(i))}
        if "dty" in sim.layout.motors:
            header["dty"] = repr(float(sim.layout.dty[i]))
        fabio.edfimage.EdfImage(data=sim.frame(i), header=header).write(
            str(folder / f"data_{i:04d}.edf"))
    motors = ["omega=header:omega"] + (["dty=header:dty"] if "dty" in sim.layout.motors
                                       else [])
    return [str(folder / "data_%04d.edf"), "--motor", *motors, "--counter",
            "monitor=header:mon"]


def replay(inputs: list[str], out, *extra: str) -> dict:
    code = main(["replay", *inputs, "--config", str(CONFIGS / "simulated.toml"),
                 "--output", str(out), "--quiet", *extra])
    assert code == 0
    tables = load(out)
    with h5py.File(out) as f:
        tables["trajectory"] = json.loads(f["entry/points"].attrs["trajectory"])
    return tables


def found_fraction(sim: Simulation, tables: dict) -> float:
    """Clean spots of the truth found as exactly one clique."""
    m = match_spots(tables["cliques"], sim.truth, period=360.0 if sim.layout.circle else None)
    clean = sim.truth["clean"]
    assert clean.sum() >= 8
    return float(m["found"][clean].mean())


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("layout", ["bliss", "edf"])
def test_recorded_scan_derives_its_trajectory(tmp_path, kind, layout):
    config, expect = KINDS[kind]
    sim = Simulation(config)
    write = write_bliss_scan if layout == "bliss" else write_edf_series
    inputs = write(sim, tmp_path / ("scan.h5" if layout == "bliss" else "edf"))
    t = replay(inputs, tmp_path / "out.h5")
    assert {k: t["trajectory"].get(k) for k in expect} == expect
    assert found_fraction(sim, t) == 1.0


@pytest.mark.parametrize("iflip", [False, True])
@pytest.mark.parametrize("recorded", ["second pass first", "both passes downwards"])
def test_interlaced_recorded_in_another_order(tmp_path, recorded, iflip):
    """The simulated interlaced scan recorded with its passes swapped (the first pass
    recorded lies half a step above the second: an fscan whose second pass is offset
    by -half a step) or with both passes run downwards in omega: the derived map says
    where the second pass lies (offset) and every clean spot is one clique. Both were
    derived `interlaced` with the second pass taken to lie half a step after the first,
    linked to points 1.5 steps away, and every spot was shattered."""
    config = KINDS["interlaced-iflip" if iflip else "interlaced"][0]
    sim = Simulation(config)
    n = config.npoints // 2
    first, second = np.arange(n), np.arange(n, 2 * n)
    order = (np.r_[second, first] if recorded == "second pass first"
             else np.r_[first[::-1], second[::-1]])
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5", order)
    t = replay(inputs, tmp_path / "out.h5")
    offset = {("second pass first", False): -0.5, ("second pass first", True): 0.5,
              ("both passes downwards", False): -0.5, ("both passes downwards", True): -0.5}
    assert {k: t["trajectory"].get(k) for k in ("kind", "iflip", "offset")} == {
        "kind": "interlaced", "iflip": iflip, "offset": offset[recorded, iflip]}
    assert found_fraction(sim, t) == 1.0


def test_a_given_interlaced_map_the_positions_contradict_is_warned(tmp_path, caplog):
    """--trajectory interlaced on passes recorded in the other order: the links follow
    it (and split the spots), but the replay says what the positions show."""
    sim = Simulation(KINDS["interlaced"][0])
    order = np.r_[np.arange(60, 120), np.arange(60)]
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5", order)
    with caplog.at_level(logging.WARNING):
        replay(inputs, tmp_path / "given.h5", "--trajectory", "interlaced")
    assert "say iflip false, offset -0.5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        replay(write_bliss_scan(sim, tmp_path / "plain.h5"), tmp_path / "plain-out.h5",
               "--trajectory", "interlaced")
    assert "offset" not in caplog.text


@pytest.mark.parametrize("start", [0, 4, 45])
def test_a_turn_recorded_as_interlaced_passes_modulo_360(tmp_path, start):
    """The simulated turn (120 points of 3 degrees) recorded as two interlaced passes
    (its even and its odd points) starting at point `start`, omega modulo 360: both
    passes cross 360 -> 0. Derived interlaced with wrap, every clean spot one clique
    (started at 12 degrees it was linked by position and the spot at the start angle
    was split in two)."""
    sim = Simulation(KINDS["wrap"][0])
    rolled = np.roll(np.arange(120), -start)
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5", np.r_[rolled[0::2], rolled[1::2]])
    t = replay(inputs, tmp_path / "out.h5")
    assert {k: t["trajectory"].get(k) for k in ("kind", "wrap", "offset")} == {
        "kind": "interlaced", "wrap": True, "offset": 0.5}
    assert found_fraction(sim, t) == 1.0


def test_override_and_the_split_it_causes(tmp_path):
    """--trajectory sweep on an interlaced recording: the passes no longer link (what
    replay did before), so the derivation is what finds the spots."""
    sim = Simulation(KINDS["interlaced-iflip"][0])
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5")
    t = replay(inputs, tmp_path / "sweep.h5", "--trajectory", "sweep")
    assert {k: t["trajectory"].get(k) for k in ("kind", "fast")} == {"kind": "sweep",
                                                                     "fast": "omega"}
    assert found_fraction(sim, t) == 0.0
    t = replay(inputs, tmp_path / "given.h5", "--trajectory", "interlaced", "--iflip")
    assert {k: t["trajectory"].get(k) for k in ("kind", "fast", "iflip")} == {
        "kind": "interlaced", "fast": "omega", "iflip": True}
    assert found_fraction(sim, t) == 1.0


def test_config_replay_trajectory(tmp_path):
    sim = Simulation(KINDS["interlaced"][0])
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5")
    conf = tmp_path / "c.toml"
    conf.write_text((CONFIGS / "simulated.toml").read_text()
                    + '\n[replay]\ntrajectory = {kind = "sweep", fast = "omega"}\n')
    code = main(["replay", *inputs, "--config", str(conf), "--output",
                 str(tmp_path / "o.h5"), "--quiet"])
    assert code == 0
    with h5py.File(tmp_path / "o.h5") as f:
        assert json.loads(f["entry/points"].attrs["trajectory"])["kind"] == "sweep"


def test_a_guess_that_fits_nothing_warns(tmp_path, caplog):
    sim = Simulation(SimConfig(npoints=40, spots=6, **BASE))
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5")
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "scan.h5", "a") as f:
        f["1.1/measurement/rot"][:] = rng.permutation(40) * 0.25
    with caplog.at_level(logging.WARNING):
        t = replay(inputs, tmp_path / "o.h5")
    assert t["trajectory"]["kind"] == "free"
    assert "--trajectory KIND" in caplog.text


@pytest.mark.parametrize("extra", [["--iflip"], ["--trajectory", "grid"],
                                   ["--trajectory", "sweep", "--iflip"]])
def test_bad_trajectory_options_are_usage_errors(tmp_path, extra, capsys):
    sim = Simulation(SimConfig(npoints=30, spots=2, **BASE))
    inputs = write_bliss_scan(sim, tmp_path / "scan.h5")
    assert main(["replay", *inputs, "--output", str(tmp_path / "o.h5"), *extra]) == 2
    assert "--" in capsys.readouterr().err
