"""Neighbour rules on tiny scans: exact neighbours, last_neighbour an upper bound
(and tight for index rules), flags, start-message keys, and derive_trajectory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.core.messages import DetectorInfo, MessageError, Start
from stream.core.trajectory import (
    Free,
    Grid,
    Interlaced,
    Snake,
    Sweep,
    circular_centroid,
    derive_trajectory,
    make_trajectory,
)
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import decode, encode
from tests.support.trajectory import check_bound, links, omega_neighbours


def observe_all(traj, table: dict[str, np.ndarray]) -> list[str]:
    n = len(next(iter(table.values())))
    return [traj.observe(i, {m: float(v[i]) for m, v in table.items()}) for i in range(n)]


# ------------------------------------------------------------------ rules


def test_sweep():
    s = Sweep(5)
    assert links(s, 5) == {0: [], 1: [(0, "omega")], 2: [(1, "omega")], 3: [(2, "omega")],
                           4: [(3, "omega")]}
    assert [s.last_neighbour(i) for i in range(5)] == [1, 2, 3, 4, 4]
    assert Sweep(None).last_neighbour(10**6) == 10**6 + 1
    check_bound(s, 5, tight=True)


def test_sweep_wrap_single_and_multi_turn():
    one = Sweep(8, wrap=True)
    assert sorted(one.neighbours_before(7)) == [0, 6]
    assert dict(one.links_before(7))[0] == "wrap"
    assert one.last_neighbour(0) == 7 and one.last_neighbour(3) == 4
    assert one.period == {"omega": 360.0}
    check_bound(one, 8, tight=True)
    turns = Sweep(18, wrap=True, points_per_turn=6)
    assert sorted(turns.links_before(10)) == [(4, "turn"), (9, "omega")]
    assert sorted(turns.links_before(11)) == [(5, "turn"), (6, "wrap"), (10, "omega")]
    assert turns.last_neighbour(6) == 12 and turns.last_neighbour(12) == 17
    check_bound(turns, 18, tight=True)
    with pytest.raises(ValueError, match="points_per_turn"):
        Sweep(None, wrap=True)


@pytest.mark.parametrize("iflip", [False, True])
def test_interlaced(iflip):
    n = 5
    t = Interlaced(2 * n, iflip=iflip)
    # omega order: p0 q0 p1 q1 ... with p_k = k and q_k = n + k (2n - 1 - k if iflip)
    q = [2 * n - 1 - k if iflip else n + k for k in range(n)]
    order = [x for k in range(n) for x in (k, q[k])]
    want: dict[int, set] = {j: set() for j in range(2 * n)}
    for a, b in zip(order, order[1:], strict=False):
        want[max(a, b)].add(min(a, b))
    assert {j: set(t.neighbours_before(j)) for j in range(2 * n)} == want
    assert all(not t.neighbours_before(j) for j in range(n))  # the first pass waits
    check_bound(t, 2 * n, tight=True)
    assert t.last_neighbour(0) == (2 * n - 1 if iflip else n)
    with pytest.raises(ValueError, match="points_per_pass"):
        Interlaced(7)


@pytest.mark.parametrize("iflip", [False, True])
def test_interlaced_second_pass_before_the_first(iflip):
    """offset -0.5: the second pass's k-th point (in the first pass's order) lies half
    a step before the first pass's k-th: omega order q0 p0 q1 p1 ..."""
    n = 5
    t = Interlaced(2 * n, iflip=iflip, offset=-0.5)
    q = [2 * n - 1 - k if iflip else n + k for k in range(n)]
    order = [x for k in range(n) for x in (q[k], k)]
    want: dict[int, set] = {j: set() for j in range(2 * n)}
    for a, b in zip(order, order[1:], strict=False):
        want[max(a, b)].add(min(a, b))
    assert {j: set(t.neighbours_before(j)) for j in range(2 * n)} == want
    check_bound(t, 2 * n, tight=True)
    wrapped = Interlaced(2 * n, iflip=iflip, offset=-0.5, wrap=True)
    assert set(wrapped.neighbours_before(max(order[0], order[-1]))) >= {
        min(order[0], order[-1])}
    check_bound(wrapped, 2 * n, tight=True)
    with pytest.raises(ValueError, match="offset"):
        Interlaced(2 * n, offset=0.25)


def test_grid_and_snake():
    g = Grid(12, nfast=4)
    assert sorted(g.links_before(5)) == [(1, "dty"), (4, "omega")]
    assert g.links_before(4) == [(0, "dty")]
    check_bound(g, 12, tight=True)
    s = Snake(12, nfast=4, slow="dty")
    # row 1 runs backwards: point 4 is at fast index 3, above point 3
    assert s.links_before(4) == [(3, "dty")]
    assert sorted(s.links_before(7)) == [(0, "dty"), (6, "omega")]
    assert s.last_neighbour(0) == 7 and s.last_neighbour(3) == 4
    check_bound(s, 12, tight=True)
    one_d = Snake(8, nfast=4)
    assert one_d.links_before(4) == [(3, "pass")]
    wrap = Grid(12, nfast=4, wrap=True)
    assert sorted(wrap.links_before(7)) == [(3, "dty"), (4, "wrap"), (6, "omega")]
    check_bound(wrap, 12, tight=True)
    check_bound(Snake(12, nfast=4, wrap=True), 12, tight=True)


def test_grid_links_rows_by_position():
    # rows shifted by half a step and more: the nearest point of the row before, in tolerance
    nfast, rows = 6, 3
    omega = np.concatenate([np.arange(nfast) + 0.7 * r for r in range(rows)])
    g = Grid(nfast * rows, nfast=nfast, tolerance=0.8, announced=["omega", "dty"])
    observe_all(g, {"omega": omega, "dty": np.repeat(np.arange(rows), nfast) * 1.0})
    for j in range(nfast, nfast * rows):
        across = [i for i, kind in g.links_before(j) if kind == "dty"]
        prev = np.arange((j // nfast - 1) * nfast, (j // nfast) * nfast)
        d = np.abs(omega[prev] - omega[j])
        assert across == ([int(prev[np.argmin(d)])] if d.min() <= 0.8 else [])
    check_bound(g, nfast * rows)


def test_free_links_by_position():
    # 2.4 turns of 0.9 points per 6 degrees... i.e. 60 points per turn, dty creeping up
    n, step = 150, 6.0
    omega = step * np.arange(n)
    dty = 0.01 * np.arange(n)
    f = Free(n, tolerance={"omega": 1.5 * step, "dty": 0.7}, period={"omega": 360.0},
             window=62, announced=["omega", "dty"])
    observe_all(f, {"omega": omega, "dty": dty})
    assert sorted(f.links_before(70)) == [(9, "turn"), (10, "turn"), (11, "turn"),
                                          (69, "omega")]
    assert f.last_neighbour(10) == 72
    check_bound(f, n)
    # brute force: exactly the earlier points within tolerance and window
    for j in range(n):
        want = [i for i in range(max(0, j - 62), j)
                if min(abs(omega[i] - omega[j]) % 360, 360 - abs(omega[i] - omega[j]) % 360)
                <= 9.0 and abs(dty[i] - dty[j]) <= 0.7]
        assert sorted(f.neighbours_before(j)) == want


@pytest.mark.parametrize("traj", [
    Sweep(10, announced=["omega"]),
    Sweep(10, wrap=True, announced=["omega"]),
    Interlaced(10, announced=["omega"]),
    Grid(12, nfast=4, announced=["omega", "dty"]),
    Snake(12, nfast=3, slow="dty", announced=["omega", "dty"]),
    Free(12, tolerance={"omega": 1.5}, window=4, announced=["omega"]),
])
def test_flagged_point_never_linked(traj):
    n = traj.npoints
    omega = np.arange(n, dtype=float)
    reasons = [traj.observe(i, {"omega": math.nan if i == 5 else omega[i], "dty": 0.0})
               for i in range(n)]
    assert reasons[5] == "motor omega is nan: not linked"
    assert not any(reasons[:5] + reasons[6:])
    assert traj.neighbours_before(5) == [] and traj.last_neighbour(5) == 5
    assert all(5 not in traj.neighbours_before(j) for j in range(n))
    check_bound(traj, n)
    # a missing point (no motors at all) is flagged the same way
    assert traj.observe(5, {}).startswith("motor omega")


def test_missing_point_is_a_gap_in_a_free_scan():
    f = Free(10, tolerance={"omega": 1.5}, window=9, announced=["omega"])
    for i in range(10):
        f.observe(i, {} if i == 4 else {"omega": float(i)})
    assert f.neighbours_before(5) == []  # 3 is two steps away: nothing across the gap
    assert f.neighbours_before(6) == [5]


# ------------------------------------------------------- start-message keys


@pytest.mark.parametrize("spec, npoints, motors, kind", [
    ({"kind": "sweep", "fast": "omega"}, 10, ["omega"], "sweep"),
    ({"kind": "sweep", "wrap": True, "points_per_turn": 36}, 72, ["omega"], "sweep"),
    ({"kind": "interlaced", "iflip": True}, 10, ["omega"], "interlaced"),
    ({"kind": "grid", "fast": "omega", "slow": "dty", "nfast": 90, "tolerance": 0.5}, 900,
     ["omega", "dty"], "grid"),
    ({"kind": "snake", "nfast": 4, "slow": None}, None, ["omega"], "snake"),
    ({"kind": "free", "tolerance": {"omega": 0.4, "dty": 0.6}, "period": {"omega": 360},
      "window": 1000}, None, ["omega", "dty"], "free"),
])
def test_make_trajectory_from_start_keys(spec, npoints, motors, kind):
    t = make_trajectory(spec, npoints, motors)
    assert t.kind == kind
    again = make_trajectory(t.describe(), npoints, motors)
    assert again.describe() == t.describe()


@pytest.mark.parametrize("spec, npoints, motors, message", [
    ({"kind": "spiral"}, 10, ["omega"], "not supported"),
    ({"kind": "sweep", "nope": 1}, 10, ["omega"], "unknown key 'nope'"),
    ({"kind": "grid"}, 10, ["omega"], "'nfast' is required"),
    ({"kind": "grid", "nfast": "4"}, 10, ["omega"], "'nfast' must be int"),
    ({"kind": "interlaced"}, 7, ["omega"], "points_per_pass"),
    ({"kind": "sweep", "wrap": True}, None, ["omega"], "points_per_turn"),
    ({"kind": "free", "tolerance": {"omega": 1.0}}, None, ["omega"], "window"),
    ({"kind": "free", "tolerance": {"dty": 1.0}, "window": 3}, None, ["omega"],
     "motor\\(s\\) dty"),
    ({"kind": "free", "tolerance": {"omega": -1}, "window": 3}, None, ["omega"], ">= 0"),
    ({"kind": "sweep", "tolerance": 1.0}, None, [], "motor\\(s\\) omega"),
])
def test_bad_trajectory_maps(spec, npoints, motors, message):
    with pytest.raises(ValueError, match=message):
        make_trajectory(spec, npoints, motors)
    start = Start("s", {"d": DetectorInfo((4, 4), "uint16")}, motors, npoints=npoints,
                  trajectory=spec)
    with pytest.raises(MessageError, match="start: "):
        decode(encode(start))


def test_circular_centroid():
    angles = np.array([358.0, 359.0, 1.0, 3.0])
    w = np.array([1.0, 2.0, 2.0, 1.0])
    rad = np.deg2rad(angles)
    got = circular_centroid((w * np.cos(rad)).sum(), (w * np.sin(rad)).sum(), 360.0)
    assert float(got) == pytest.approx(1.0 / 6.0, abs=1e-3)  # the linear mean of -2 -1 1 3
    assert float(circular_centroid(np.array(-1.0), np.array(-1e-9), 360.0)) == \
        pytest.approx(180.0)
    assert float(circular_centroid(np.array(1.0), np.array(-1e-3), 360.0)) > 359.0


# ----------------------------------------------------------------- derive


SIM = {"shape": (16, 16), "spots": 0, "gap": False}


def motor_table(sim: Simulation) -> dict[str, np.ndarray]:
    """The simulated scan's motor positions, one array per motor."""
    return {m: np.array([sim.motors(i)[m] for i in range(sim.config.npoints)])
            for m in sim.layout.motors}


def assert_derived_as_told(derived: dict, told: dict) -> None:
    """Every key of the simulation's own map, the optional ones at their defaults."""
    for key, value in told.items():
        assert derived.get(key, {"slow": None, "iflip": False}.get(key)) == value, (key, derived)


@pytest.mark.parametrize("config", [
    SimConfig(npoints=20, **SIM),
    SimConfig(npoints=24, omega_step=15.0, wrap=True, **SIM),
    SimConfig(npoints=48, omega_step=15.0, wrap=True, **SIM),
    SimConfig(npoints=20, trajectory="interlaced", **SIM),
    SimConfig(npoints=20, trajectory="interlaced", iflip=True, **SIM),
    SimConfig(npoints=24, trajectory="snake", nrows=3, dty_step=0.0, **SIM),
    SimConfig(npoints=24, trajectory="grid", nrows=3, **SIM),
    SimConfig(npoints=24, trajectory="snake", nrows=4, **SIM),
    SimConfig(npoints=24, trajectory="grid", nrows=6, fast="dty", **SIM),
    SimConfig(npoints=36, omega_step=30.0, trajectory="grid", nrows=3, wrap=True, **SIM),
])
def test_derive_finds_the_simulated_kind(config):
    sim = Simulation(config)
    assert_derived_as_told(derive_trajectory(motor_table(sim)), sim.start("s").trajectory)


DERIVED = [  # a scan of each kind whose rows (or passes) have more than 2 points
    SimConfig(npoints=24, omega_step=15.0, wrap=True, **SIM),
    SimConfig(npoints=20, trajectory="interlaced", **SIM),
    SimConfig(npoints=20, trajectory="interlaced", iflip=True, **SIM),
    SimConfig(npoints=24, trajectory="snake", nrows=3, dty_step=0.0, **SIM),
    SimConfig(npoints=24, trajectory="snake", nrows=4, **SIM),
    SimConfig(npoints=24, trajectory="grid", nrows=3, **SIM),
    SimConfig(npoints=36, omega_step=30.0, trajectory="grid", nrows=3, wrap=True, **SIM),
]


@pytest.mark.parametrize("config", DERIVED)
@pytest.mark.parametrize("where", ["first", "last", "row end", "row start"])
def test_derive_is_not_misled_by_one_unread_position(config, where):
    """A NaN where a pass or row starts or ends: an interlaced scan was taken for a
    sweep or got iflip, a snake for a grid (the guess goes by the steps around it)."""
    sim = Simulation(config)
    n = config.npoints
    table = motor_table(sim)
    told = sim.start("s").trajectory
    row = told.get("nfast") or n // (2 if told["kind"] == "interlaced" else 1)
    k = {"first": 0, "last": n - 1, "row end": row - 1, "row start": row % n}[where]
    table[told["fast"]][k] = np.nan
    assert_derived_as_told(derive_trajectory(table), told)


@pytest.mark.parametrize("recorded", [lambda w: w, lambda w: w % 360,
                                      lambda w: (w + 180) % 360 - 180, lambda w: -w])
def test_derive_a_turn_recorded_modulo_360(recorded):
    """One turn in 3 degree steps recorded as 9..366, 0..360 (357 -> 0 mid-scan),
    -180..180 or backwards: a wrapping sweep each time (the modulo ones fitted no
    regular scan, and -180..180 not even a turn: the spot at +-180 was split)."""
    omega = recorded(9 + 3.0 * np.arange(120))
    assert derive_trajectory({"omega": omega}) == {"kind": "sweep", "fast": "omega",
                                                   "wrap": True, "points_per_turn": 120}


def test_derive_an_interlaced_turn_wraps():
    """Two passes that together cover a turn in half steps: interlaced with wrap (the
    spot at 0 / 360 was split, and its centroid reported at 365)."""
    omega = 9 + 3.0 * np.arange(120)
    interlaced = np.r_[omega[0::2], omega[1::2]]
    assert derive_trajectory({"omega": interlaced}) == {"kind": "interlaced", "fast": "omega",
                                                        "iflip": False, "offset": 0.5,
                                                        "wrap": True}
    assert "wrap" not in derive_trajectory({"omega": np.r_[omega[0:60:2], omega[1:60:2]]})


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("iflip", [False, True])
@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("below", [False, True])
def test_derived_interlaced_links_the_omega_neighbours(below, down, iflip, wrap):
    """Two passes of 30 points, the first run up or down in omega, the second half a
    step above or below it, forwards or backwards: the derived map links each point
    to the points next to it in omega. A first pass run downwards or a second pass
    below the first linked points 1.5 steps apart and shattered every spot."""
    step = 12.0 if wrap else 0.5
    first = 3.0 + step * np.arange(30)
    second = first + (-0.5 if below else 0.5) * step
    first, second = (first[::-1], second[::-1]) if down else (first, second)
    omega = np.r_[first, second[::-1] if iflip else second]
    derived = derive_trajectory({"omega": omega})
    along = -1 if down else 1
    assert derived == {"kind": "interlaced", "fast": "omega", "iflip": iflip,
                       "offset": 0.5 * along * (-1 if below else 1),
                       **({"wrap": True} if wrap else {})}
    t = make_trajectory(derived, 60, ["omega"])
    assert links(t, 60) == {j: sorted((i, "omega") for i in want) for j, want in
                            omega_neighbours(omega, 360.0 if wrap else None).items()}
    check_bound(t, 60, tight=True)


def test_derive_free_rotation_with_sinusoidal_dty():
    sim = Simulation(SimConfig(npoints=300, omega_step=7.3, trajectory="free",
                               dty_amplitude=3.0, dty_period=4 * 300 * 7.3, **SIM))
    table = {m: np.array([sim.motors(i)[m] for i in range(300)]) for m in ("omega", "dty")}
    derived = derive_trajectory(table)
    assert derived["kind"] == "free" and derived["period"] == {"omega": 360.0}
    assert derived["tolerance"]["omega"] == pytest.approx(1.5 * 7.3)
    assert derived["window"] >= 360 / 7.3
    t = make_trajectory(derived, 300, ["omega", "dty"])
    observe_all(t, table)
    assert any(kind == "turn" for _, kind in t.links_before(200))
    check_bound(t, 300)


def test_replay_derives_a_missing_trajectory(tmp_path):
    import json

    import h5py

    from stream.sources.simulate import read_scan, write_scan

    sim = Simulation(SimConfig(npoints=24, trajectory="snake", nrows=4, **SIM))
    path = tmp_path / "snake.h5"
    write_scan(sim, path, "s")
    with h5py.File(path, "r+") as h:
        header = json.loads(h["entry/start"].attrs["start_json"])
        del header["trajectory"]
        h["entry/start"].attrs["start_json"] = json.dumps(header)
    start, points = read_scan(path)
    assert start.trajectory == {"kind": "snake", "fast": "omega", "slow": "dty", "nfast": 6}
    assert [p.motors["dty"] for p in points][::6] == [0.0, 1.0, 2.0, 3.0]
