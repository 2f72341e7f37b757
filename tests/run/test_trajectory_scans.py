"""Known answers per scan kind: simulated scans through the real chain (ScanRunner with
configs/simulated.toml, fed encode()d messages in-process), cliques checked against
the simulator's truth in the trajectory's terms (omega, dty)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.config.schema import Config
from stream.core.table import read_table
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.sources.simulate.truth import match_spots, wrapped_centroid
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.paths import CONFIGS

BASE = {"shape": (96, 96), "sigma_px": (1.0, 1.5), "seed": 1, "hot_pixels": 3,
        "dead_pixels": 3}
TWO_D = {**BASE, "spots": 14, "sigma_dty": (0.7, 1.0)}


def run_scan(config: SimConfig, tmp_path, skip=()) -> tuple[Simulation, dict]:
    """Send every point (but `skip`) through the runner; the output file's tables."""
    sim = Simulation(config)
    path = tmp_path / f"{config.trajectory}-{config.seed}.h5"
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=path)
    runner.handle(encode(sim.start("t")))
    for i in range(config.npoints):
        if i not in skip:
            runner.handle(encode(sim.point(i, "t")))
    runner.handle(encode(sim.end("t")))
    runner.close()
    assert runner.results[0]["status"] == ("incomplete" if skip else "success")
    tables = load(path)
    with h5py.File(path) as f:
        tables["links"] = read_table(f["entry/points/links"])
        tables["trajectory"] = f["entry/points"].attrs["trajectory"]
    return sim, tables


def clean_cliques(sim: Simulation, t: dict) -> tuple[dict, np.ndarray]:
    """Every clean spot is exactly one clique (by the cliques table's own columns, omega
    circular for scans that wrap); the clique row of each clean spot."""
    m = match_spots(t["cliques"], sim.truth, period=360.0 if sim.layout.circle else None)
    clean = sim.truth["clean"]
    assert clean.sum() >= 8
    assert m["found"][clean].all(), (m["n_near"][clean], m["n_box"][clean])
    return m, m["clique"][clean]


def member_points(t: dict, row: int) -> np.ndarray:
    """Point ids of the 2D peaks of the clique in row `row` of the cliques table."""
    cid = t["cliques"]["clique_id"][row]
    return np.unique(t["peaks2d"]["point_id"][t["peaks2d"]["clique_id"] == cid])


def link_set(t: dict) -> set[tuple[int, int, str]]:
    lk = t["links"]
    return set(zip(lk["point_a"].tolist(), lk["point_b"].tolist(), lk["kind"].tolist(),
                   strict=True))


# ------------------------------------------------------------------ sweeps


def test_spots_across_the_360_wrap_are_one_clique(tmp_path):
    def crossing(sim):
        tr = sim.truth
        return tr["clean"] & ((tr["omega"] < 1.5 * tr["sigma_omega"])
                              | (tr["omega"] > 360 - 1.5 * tr["sigma_omega"]))

    seed = next(s for s in range(1, 100) if crossing(Simulation(SimConfig(
        npoints=120, omega_step=3.0, spots=24, wrap=True, **{**BASE, "seed": s}))).any())
    c = SimConfig(npoints=120, omega_step=3.0, spots=24, wrap=True, **{**BASE, "seed": seed})
    sim, t = run_scan(c, tmp_path)
    m, rows = clean_cliques(sim, t)
    wraps = crossing(sim)
    for row in m["clique"][wraps]:
        points = member_points(t, row)
        assert points.min() <= 2 and points.max() >= c.npoints - 3  # both sides of 360
    assert (0, c.npoints - 1, "wrap") in link_set(t)
    # the linker's clique omega of a wrapping scan is the intensity-weighted circular
    # mean in [0, 360) of its 2D peaks' omegas, across the wrap too
    omega = t["cliques"]["omega"]
    assert ((omega >= 0) & (omega < 360)).all()
    diff = np.mod(omega - wrapped_centroid(t) + 180.0, 360.0) - 180.0
    assert np.abs(diff).max() < 1e-9
    across = m["clique"][wraps]
    assert len(across) and (np.abs(omega[across] - 180) > 170).all()  # near 0 / 360


def test_multi_turn_sweep_links_the_turns(tmp_path):
    c = SimConfig(npoints=240, omega_step=3.0, spots=24, wrap=True, **BASE)
    sim, t = run_scan(c, tmp_path)
    _, rows = clean_cliques(sim, t)
    for row in rows:
        points = member_points(t, row)
        assert (points < 120).any() and (points >= 120).any()  # seen in both turns


@pytest.mark.parametrize("iflip", [False, True])
def test_interlaced_passes_link_into_one_clique(tmp_path, iflip):
    c = SimConfig(npoints=120, omega_step=1.0, spots=24, trajectory="interlaced",
                  iflip=iflip, **BASE)
    sim, t = run_scan(c, tmp_path)
    _, rows = clean_cliques(sim, t)
    for row in rows:
        points = member_points(t, row)
        assert (points < 60).any() and (points >= 60).any()
    kinds = {k for _, _, k in link_set(t)}
    assert kinds == {"omega"}
    assert all(a < 60 <= b for a, b, _ in link_set(t))  # always across the passes


def test_back_and_forth_passes_link_into_one_clique(tmp_path):
    c = SimConfig(npoints=120, spots=20, trajectory="snake", nrows=3, dty_step=0.0, **BASE)
    sim, t = run_scan(c, tmp_path)
    _, rows = clean_cliques(sim, t)
    for row in rows:
        assert len(np.unique(member_points(t, row) // 40)) == 3  # every pass
    assert (39, 40, "pass") in link_set(t) and (0, 79, "pass") in link_set(t)


# ------------------------------------------------------------------ 2D scans


@pytest.mark.parametrize("kind, fast, nrows, npoints, step", [
    ("grid", "omega", 12, 360, 0.25),
    ("grid", "dty", 40, 480, 0.5),
    ("snake", "omega", 12, 360, 0.25),
])
def test_dty_omega_scans_link_adjacent_rows(tmp_path, kind, fast, nrows, npoints, step):
    c = SimConfig(npoints=npoints, trajectory=kind, nrows=nrows, fast=fast, omega_step=step,
                  **TWO_D)
    sim, t = run_scan(c, tmp_path)
    m, rows = clean_cliques(sim, t)
    nfast = npoints // nrows
    for row in rows:
        assert len(np.unique(member_points(t, row) // nfast)) >= 2  # several rows
    slow = "omega" if fast == "dty" else "dty"
    assert any(k == slow for _, _, k in link_set(t))
    tr, cl = sim.truth, t["cliques"]
    clean = tr["clean"]
    assert np.abs(cl["dty"][rows] - tr["dty"][clean]).max() < 0.5 * tr["sigma_dty"].min()


def test_rotation_with_sinusoidal_dty_links_by_position(tmp_path):
    # 7.3 degree steps: 49.3 points per turn, so the previous turn is at no fixed offset
    c = SimConfig(npoints=592, omega_step=7.3, sigma_points=(0.6, 0.8), spots=20,
                  trajectory="free", dty_amplitude=10.0, dty_period=4 * 592 * 7.3,
                  sigma_dty=(1.2, 1.8), touching_fraction=0.0, **BASE)
    sim, t = run_scan(c, tmp_path)
    _, rows = clean_cliques(sim, t)
    turn = np.floor(sim.layout.omega / 360.0).astype(int)
    for row in rows:
        assert len(np.unique(turn[member_points(t, row)])) >= 2
    offsets = {b - a for a, b, k in link_set(t) if k == "turn"}
    assert len(offsets) >= 3  # positions, not a fixed index offset
    omega = sim.layout.omega
    for a, b, k in link_set(t):
        d = abs(omega[b] - omega[a]) % 360.0
        assert min(d, 360.0 - d) <= 1.5 * 7.3 + 1e-9
        assert k in ("omega", "turn")


# ------------------------------------------------------------- gaps, flags


def test_missing_points_break_links(tmp_path):
    c = SimConfig(npoints=90, spots=40, **BASE)
    sim = Simulation(c)
    tr = sim.truth
    gaps = sorted({int(round(p)) for p in tr["point"][tr["clean"]][::3]})
    _, t = run_scan(c, tmp_path, skip=gaps)
    cl = t["cliques"]
    for g in gaps:
        assert not ((cl["first_point"] < g) & (cl["last_point"] > g)).any()
        assert (cl["last_point"] == g - 1).any() and (cl["first_point"] == g + 1).any()
    assert all(not (a < g < b) for a, b, _ in link_set(t) for g in gaps)
    assert (t["points"]["status"][gaps] == 1).all()


def test_missing_point_breaks_a_free_scan(tmp_path):
    c = SimConfig(npoints=160, omega_step=3.0, spots=12, trajectory="free",
                  dty_amplitude=0.0, touching_fraction=0.0, **BASE)
    gap = 70
    _, t = run_scan(c, tmp_path, skip=(gap,))
    assert (gap - 1, gap + 1, "omega") not in link_set(t)
    assert all(gap not in (a, b) for a, b, _ in link_set(t))


def test_nan_motor_point_is_flagged_not_linked(tmp_path):
    probe = Simulation(SimConfig(npoints=90, spots=40, **BASE))
    tr = probe.truth
    k = int(np.flatnonzero(tr["clean"])[len(tr["s"]) // 3])
    nan = int(round(tr["point"][k]))
    c = SimConfig(npoints=90, spots=40, nan_points=(nan,), **BASE)
    sim, t = run_scan(c, tmp_path)
    assert all(nan not in (a, b) for a, b, _ in link_set(t))
    pk = t["peaks2d"]
    assert (pk["point_id"] == nan).any()
    alone = np.isin(t["cliques"]["clique_id"], pk["clique_id"][pk["point_id"] == nan])
    assert (t["cliques"]["n2d"][alone] == 1).all()
    cl = t["cliques"]
    assert not ((cl["first_point"] < nan) & (cl["last_point"] > nan)).any()
    assert "omega is nan" in t["points"]["flags"][nan]
    assert t["points"]["status"][nan] == 0  # processed and stored, only not linked
    assert (t["events"]["kind"] == "flag").any()


def test_links_table_of_a_sweep(tmp_path):
    c = SimConfig(npoints=30, spots=4, shape=(64, 64), sigma_px=(1.0, 1.5), gap=False,
                  hot_pixels=2, dead_pixels=2)
    _, t = run_scan(c, tmp_path, skip=(12,))
    assert link_set(t) == {(i - 1, i, "omega") for i in range(1, 30) if 12 not in (i - 1, i)}
    assert '"kind": "sweep"' in t["trajectory"]
    assert "links/point_a" not in t["points"]  # its own table
