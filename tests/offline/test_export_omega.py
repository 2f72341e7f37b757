"""flt's Min_o, Max_o, IMax_o, onfirst, onlast come from the omega of each clique's
2D peaks, whatever the scan's point order (interlaced passes, a scan run downwards)
and across a 360 degree wrap: the members' least and largest omega, within half a
turn of the clique's omega; a member on the scan's first or last omega, never for a
scan that wraps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.cli.main import main
from stream.offline.export import flt_columns
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.store.reader import load
from tests.support.files import write_bliss
from tests.support.paths import CONFIGS


def tables(omega: list[float], members: list[list[int]], centroid: list[float],
           trajectory: dict) -> dict:
    """Tables as `load` gives them: points with `omega`, clique k's 2D peaks one on each
    point of members[k], its omega centroid[k]."""
    n = len(members)
    point = np.array([p for m in members for p in m])
    clique = np.repeat(np.arange(n), [len(m) for m in members])
    one, zero = np.ones(n), np.zeros(n)
    return {
        "detector": "eiger", "omega": "omega", "trajectory": json.dumps(trajectory),
        "points": {"point_id": np.arange(len(omega)), "motors/omega": np.array(omega)},
        "peaks2d": {"point_id": point, "clique_id": clique,
                    "max_intensity": np.arange(1.0, len(point) + 1),
                    **{k: np.zeros(len(point), np.int64)
                       for k in ("bb_s0", "bb_s1", "bb_f0", "bb_f1")}},
        "cliques": {"clique_id": np.arange(n), "omega": np.array(centroid),
                    "first_point": np.array([min(m) for m in members]),
                    "last_point": np.array([max(m) for m in members]),
                    "s_raw": one, "f_raw": one, "s_I": one, "s_ssI": one, "s_ffI": one,
                    "s_sfI": one, "npx": one, "sum_intensity": one, "z": zero},
        "shares": {},
    }


def test_interlaced_downwards_by_omega_not_by_point():
    """The first pass run downwards (3.5, 3.0 .. 0.0), the second back up half a step
    above it (0.25 .. 3.75, iflip): the scan's omega range starts at its high end,
    3.75, and ends at 0.0. Min_o, Max_o were the omega of the first and last point ids
    (Max_o < Min_o), onfirst / onlast whether point 0 or the last point was a member."""
    first = [3.5 - 0.5 * k for k in range(8)]
    omega = first + [f + 0.25 for f in first[::-1]]  # points 8..15: 0.25 .. 3.75
    members = [[15, 0, 14], [7, 8], [3, 12, 4]]  # 3.75 3.5 3.25 | 0.0 0.25 | 2.0 2.25 1.5
    cols = flt_columns(tables(omega, members, [3.5, 0.1, 1.9], {"kind": "interlaced",
                                                              "iflip": True}))
    assert cols["Min_o"].tolist() == [3.25, 0.0, 1.5]
    assert cols["Max_o"].tolist() == [3.75, 0.25, 2.25]
    assert cols["IMax_o"].tolist() == [3.25, 0.25, 1.5]  # the brightest: the last row
    assert cols["onfirst"].tolist() == [1, 0, 0]  # on 3.75, where the scan starts
    assert cols["onlast"].tolist() == [0, 1, 0]  # on 0.0, where it ends


def test_across_the_wrap_within_half_a_turn_of_the_clique():
    """A turn in 30 degree steps from 60 (60 .. 330, 0, 30): a 3D peak on 0, 30 and 60
    is whole (no end in omega), its range 0..60 although it holds the first point and
    the last; one on 330, 0, 30 reads 330..390 around 359, -30..30 around 1."""
    omega = [(60.0 + 30 * k) % 360 for k in range(12)]
    members = [[10, 11, 0], [9, 10, 11], [9, 10, 11], [2, 3]]
    cols = flt_columns(tables(omega, members, [30.0, 359.0, 1.0, 135.0],
                              {"kind": "sweep", "wrap": True, "points_per_turn": 12}))
    assert cols["Min_o"].tolist() == [0.0, 330.0, -30.0, 120.0]
    assert cols["Max_o"].tolist() == [60.0, 390.0, 30.0, 150.0]
    assert cols["IMax_o"].tolist() == [60.0, 390.0, 30.0, 150.0]
    assert cols["onfirst"].tolist() == cols["onlast"].tolist() == [0, 0, 0, 0]


def replay_export(tmp_path, sim: Simulation, order: np.ndarray) -> tuple[dict, dict]:
    """The simulated points in `order` as a Bliss scan, replayed (trajectory derived),
    exported to flt and read back with ImageD11: the cliques and the flt columns."""
    columnfile = pytest.importorskip("ImageD11.columnfile")
    omega = np.array([sim.omega(int(i)) for i in order]) % 360
    src = write_bliss(tmp_path / "scan.h5", [sim.frame(int(i)) for i in order], omega,
                      np.array([sim.monitor_value(int(i)) for i in order]))
    out, flt = tmp_path / "out.h5", tmp_path / "out.flt"
    assert main(["replay", str(src), "--images", "/1.1/measurement/eiger", "--motor",
                 "omega=/1.1/measurement/rot_center", "--counter",
                 "monitor=/1.1/measurement/mon", "--config",
                 str(CONFIGS / "simulated.toml"), "--quiet", "--output", str(out)]) == 0
    assert main(["export", str(out), "--format", "flt", "--output", str(flt)]) == 0
    c = columnfile.columnfile(str(flt))
    return load(out), {k: np.asarray(c.getcolumn(k)) for k in c.titles}


def member_points(data: dict) -> list[np.ndarray]:
    """Each clique's member points."""
    pk = data["peaks2d"]
    return [np.unique(pk["point_id"][pk["clique_id"] == c]) for c in data["cliques"]["clique_id"]]


def spans(data: dict) -> np.ndarray:
    """Each clique's number of member points (a simulated spot lies on consecutive
    omegas: its omega range is that many steps less one)."""
    return np.array([p.shape[0] for p in member_points(data)])


def test_interlaced_recording(tmp_path):
    """The trial's case: an interlaced scan with iflip (a clique's first point id is of
    one pass, its last of the other): 20 of 20 cliques had a wrong range."""
    sim = Simulation(SimConfig(npoints=120, omega_step=0.25, shape=(96, 96), spots=16,
                               seed=3, trajectory="interlaced", iflip=True))
    data, col = replay_export(tmp_path, sim, np.arange(120))
    assert len(col["omega"]) >= 8
    assert np.allclose(col["Max_o"] - col["Min_o"], 0.125 * (spans(data) - 1))
    assert np.all((col["Min_o"] <= col["omega"]) & (col["omega"] <= col["Max_o"]))
    assert np.all((col["Min_o"] <= col["IMax_o"]) & (col["IMax_o"] <= col["Max_o"]))
    assert col["onfirst"].tolist() == (col["Min_o"] == 0.0).astype(int).tolist()
    assert col["onlast"].tolist() == (col["Max_o"] == 14.875).astype(int).tolist()


def test_a_turn_started_inside_a_spot(tmp_path):
    """A wrapping turn recorded from the middle point of one of its 3D peaks, modulo
    360: that peak holds the first and the last point. It was flagged cut at both ends
    (onfirst = onlast = 1) with Max_o < Min_o."""
    sim = Simulation(SimConfig(npoints=90, omega_step=4.0, wrap=True, shape=(96, 96),
                               spots=16, seed=3))
    (tmp_path / "whole").mkdir()
    data, _ = replay_export(tmp_path / "whole", sim, np.arange(90))
    points = member_points(data)
    mid = next(int(np.median(p)) for p in points if len(p) >= 3 and not {0, 89} & set(p))
    (tmp_path / "rolled").mkdir()
    data, col = replay_export(tmp_path / "rolled", sim, np.roll(np.arange(90), -mid))
    assert any({0, 89} <= set(p) for p in member_points(data))  # across the start
    assert np.allclose(col["Max_o"] - col["Min_o"], 4.0 * (spans(data) - 1))
    assert np.all((col["Min_o"] <= col["omega"]) & (col["omega"] <= col["Max_o"]))
    assert not col["onfirst"].any() and not col["onlast"].any()


@pytest.mark.parametrize("omega, half", [
    # a sweep: half its step everywhere
    ([0.0, 1.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5]),
    # interlaced, two passes of step 1 (the second half a step on): the break between
    # them (3 -> 0.5) is not a step (np.gradient made the frames there ~1 degree wide)
    ([0.0, 1.0, 2.0, 3.0, 0.5, 1.5, 2.5, 3.5], [0.5] * 8),
    # a snake's turn (the same omega twice) and a 360 -> 0 wrap
    ([0.0, 2.0, 4.0, 4.0, 2.0, 0.0], [1.0] * 6),
    ([356.0, 358.0, 0.0, 2.0], [1.0] * 4),
    # a missing point keeps NaN, its neighbours the step over the gap per point
    ([0.0, np.nan, 2.0, 3.0], [0.5, np.nan, 0.5, 0.5]),
])
def test_a_frames_omega_range_is_half_its_step_either_side(omega, half):
    from stream.offline.export import _half_steps

    np.testing.assert_allclose(_half_steps(np.array(omega)), half)
