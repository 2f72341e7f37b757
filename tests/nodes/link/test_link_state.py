"""The linker's checkpoint state: cut a simulated scan anywhere, write the state to HDF5 or
msgpack, restore it into a fresh linker and go on; the results are those of a run that was
never cut."""

from __future__ import annotations

import h5py
import msgpack
import numpy as np
import pytest

from nodes import Label, Properties
from nodes.link.linker import Linker, LinkResult, PeakBlock
from stream.core.item import PEAK_COLUMNS, Item, SparseFrame
from stream.core.scan import Scan
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig

SHAPE = (96, 96)
BASE = {"shape": SHAPE, "sigma_px": (1.0, 1.5), "seed": 1, "hot_pixels": 3, "dead_pixels": 3}
SCANS = {  # a 360 degree sweep that wraps, interlaced passes (the second reversed),
    # back-and-forth passes (a snake at one dty), and a dty x omega grid of 12 rows
    "wrap": SimConfig(npoints=36, omega_step=10.0, wrap=True, spots=12, **BASE),
    "interlaced": SimConfig(npoints=40, omega_step=1.0, trajectory="interlaced", iflip=True,
                            spots=12, **BASE),
    "snake": SimConfig(npoints=72, trajectory="snake", nrows=3, dty_step=0.0, spots=8, **BASE),
    "grid": SimConfig(npoints=360, trajectory="grid", nrows=12, omega_step=0.25, spots=14,
                      sigma_dty=(0.7, 1.0), **BASE),
}
LINKERS = {
    ("any_pixel", "none"): {"criterion": "any_pixel"},
    ("fraction", "none"): {"criterion": "fraction", "fraction": 0.3},
    ("any_pixel", "local_max"): {"criterion": "any_pixel", "split": "local_max",
                                 "prominence": 0.05, "prominence_sigma": 0.5},
    ("fraction", "local_max"): {"criterion": "fraction", "fraction": 0.3,
                                "split": "local_max", "prominence": 0.05,
                                "prominence_sigma": 0.5},
}
CUT = 40.0
_CACHE: dict[tuple[str, str], tuple] = {}


# ------------------------------------------------------------------ helpers


def simulated(scan: str, split: str):
    """(sim, per point (sparse, peaks, motors)): raw frames > CUT, labelled (split as the
    linker's) and measured by the label and properties nodes."""
    if (scan, split) not in _CACHE:
        sim = Simulation(SCANS[scan])
        label, props = Label(split=split), Properties()
        points = []
        for p in range(sim.config.npoints):
            frame = sim.frame(p).astype(np.float32)
            row, col = np.nonzero(frame > CUT)
            sparse = SparseFrame(SHAPE, row.astype(np.uint16), col.astype(np.uint16),
                                 frame[row, col])
            item = props.process(label.process(Item(p, "eiger", sparse=sparse)))
            points.append((item.sparse, item.peaks, sim.motors(p)))
        _CACHE[(scan, split)] = (sim, points)
    return _CACHE[(scan, split)]


def fresh_scan(sim: Simulation, observed: int) -> Scan:
    """The scan as a resumed run rebuilds it: its trajectory has seen points 0..observed-1."""
    scan = Scan.from_start(sim.start("state"))
    for p in range(observed):
        scan.trajectory.observe(p, sim.motors(p))
    return scan


def add_points(linker: Linker, points, lo: int, hi: int) -> list[LinkResult]:
    out = []
    for p in range(lo, hi):
        sparse, peaks, motors = points[p]
        linker.trajectory.observe(p, motors)
        out.append(linker.add_point(p, sparse, peaks, motors))
    return out


def add_block(linker: Linker, points, lo: int, hi: int) -> LinkResult:
    """Points lo..hi-1 as one PeakBlock (the replay path)."""
    sub = points[lo:hi]
    for p in range(lo, hi):
        linker.trajectory.observe(p, points[p][2])
    return linker.add_block(PeakBlock(
        lo, SHAPE, np.ones(hi - lo, np.bool_), np.array([s.nnz for s, _, _ in sub], np.int64),
        np.concatenate([s.row for s, _, _ in sub]), np.concatenate([s.col for s, _, _ in sub]),
        np.concatenate([s.label for s, _, _ in sub]),
        np.array([s.npeaks for s, _, _ in sub], np.int64),
        {k: np.concatenate([pk[k] for _, pk, _ in sub]) for k in PEAK_COLUMNS},
        {m: np.array([mo[m] for _, _, mo in sub]) for m in sub[0][2]},
        intensity=np.concatenate([s.intensity for s, _, _ in sub])))


def uninterrupted(sim, points, params) -> list[LinkResult]:
    linker = Linker(**params)
    linker.setup(fresh_scan(sim, 0))
    return [*add_points(linker, points, 0, len(points)), linker.finish()]


def cat(results: list[LinkResult], table: str) -> dict[str, np.ndarray]:
    return {k: np.concatenate([getattr(r, table)[k] for r in results])
            for k in getattr(results[0], table)}


def assert_identical(got: list[LinkResult], want: list[LinkResult], steps: bool = True) -> None:
    """Every column of overlaps, cliques and members bit-identical (dtype included);
    with `steps`, also step by step (point ids and peak offsets)."""
    if steps:
        assert [(r.point_id, r.peak_offset) for r in got] == \
            [(r.point_id, r.peak_offset) for r in want]
    for table in ("overlaps", "cliques", "members"):
        a, b = cat(got, table), cat(want, table)
        assert list(a) == list(b), table
        if table == "members" and not steps:  # blocks sort members per step, not overall
            oa, ob = np.argsort(a["peak_id"]), np.argsort(b["peak_id"])
            a, b = {k: v[oa] for k, v in a.items()}, {k: v[ob] for k, v in b.items()}
        for k in a:
            assert a[k].dtype == b[k].dtype, (table, k)
            assert a[k].tobytes() == b[k].tobytes(), (table, k)


def check_plain(value, where="state") -> None:
    """Only str keys; numeric numpy arrays, Python scalars and str, nested dicts."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), where
            check_plain(v, f"{where}/{k}")
    elif isinstance(value, np.ndarray):
        assert value.dtype.kind in "biuf", where
    else:
        assert type(value) in (int, float, str, bool), (where, type(value))


# ------------------------------------------------------------ round trips


def to_hdf5(group: h5py.Group, state: dict) -> None:
    for k, v in state.items():
        if isinstance(v, dict):
            to_hdf5(group.create_group(k), v)
        elif isinstance(v, np.ndarray):
            group.create_dataset(k, data=v)
        else:
            group.attrs[k] = v


def from_hdf5(group: h5py.Group) -> dict:
    out = {k: v for k, v in group.attrs.items()}
    for k, v in group.items():
        out[k] = from_hdf5(v) if isinstance(v, h5py.Group) else v[()]
    return out


def via_hdf5(state: dict, path) -> dict:
    with h5py.File(path, "w") as f:
        to_hdf5(f.create_group("checkpoint/linker"), state)
    with h5py.File(path, "r") as f:
        return from_hdf5(f["checkpoint/linker"])


def _pack(v):
    if isinstance(v, np.ndarray):
        return {"nd": True, "dtype": v.dtype.str, "shape": list(v.shape),
                "data": np.ascontiguousarray(v).tobytes()}
    if isinstance(v, dict):
        return {k: _pack(x) for k, x in v.items()}
    return v


def _unpack(v):
    if isinstance(v, dict):
        if v.get("nd") is True:  # read-only views of the message: restore must copy
            return np.frombuffer(v["data"], np.dtype(v["dtype"])).reshape(v["shape"])
        return {k: _unpack(x) for k, x in v.items()}
    return v


def via_msgpack(state: dict) -> dict:
    return _unpack(msgpack.unpackb(msgpack.packb(_pack(state)), raw=False))


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("scan", list(SCANS))
@pytest.mark.parametrize("criterion, split", list(LINKERS))
def test_cut_anywhere_and_resume_is_bit_identical(tmp_path, scan, criterion, split):
    sim, points = simulated(scan, split)
    params = LINKERS[(criterion, split)]
    n = len(points)
    want = uninterrupted(sim, points, params)
    assert cat(want, "overlaps")["npixels"].shape[0] > 20  # there is linking to resume
    assert cat(want, "cliques")["n2d"].max() >= 3
    for k in sorted({0, 1, 5, n // 12, n // 2, n // 2 + 1, n - 1, n}):
        first = Linker(**params)
        first.setup(fresh_scan(sim, 0))
        before = add_points(first, points, 0, k)
        state = first.state()
        check_plain(state)
        # the frontier only: its frames and the open cliques' peaks
        assert state["frontier"]["point_id"].tolist() == first.frontier_points()
        assert state["forest"]["gid"].shape[0] == first.open_peaks()
        # taking the state changes nothing for the linker it was taken from
        after = [*add_points(first, points, k, n), first.finish()]
        assert_identical(before + after, want)
        for trip, restored in (("hdf5", via_hdf5(state, tmp_path / f"state{k}.h5")),
                               ("msgpack", via_msgpack(state))):
            second = Linker(**params)
            second.setup(fresh_scan(sim, k))
            second.restore(restored)
            assert second.frontier_points() == state["frontier"]["point_id"].tolist(), trip
            rest = [*add_points(second, points, k, n), second.finish()]
            assert_identical(before + rest, want)


@pytest.mark.parametrize("split", ["none", "local_max"])
def test_block_replay_then_state_then_points(tmp_path, split):
    """Replay a block, checkpoint, go on point by point (and block by block)."""
    sim, points = simulated("snake", split)
    params = LINKERS[("any_pixel", split)]
    n = len(points)
    want = uninterrupted(sim, points, params)
    for k in (1, 9, n // 2 + 3):
        first = Linker(**params)
        first.setup(fresh_scan(sim, 0))
        before = [add_block(first, points, 0, k)]
        state = via_hdf5(first.state(), tmp_path / f"block{k}.h5")
        second = Linker(**params)
        second.setup(fresh_scan(sim, k))
        second.restore(state)
        rest = [*add_points(second, points, k, n), second.finish()]
        assert_identical(before + rest, want, steps=False)
        third = Linker(**params)
        third.setup(fresh_scan(sim, k))
        third.restore(via_msgpack(first.state()))
        rest = [add_block(third, points, k, n), third.finish()]
        assert_identical(before + rest, want, steps=False)


def test_state_of_a_finished_and_of_an_empty_linker(tmp_path):
    sim, points = simulated("wrap", "none")
    linker = Linker()
    linker.setup(fresh_scan(sim, 0))
    empty = linker.state()
    assert empty["frontier"]["point_id"].shape == (0,) and empty["forest"]["gid"].shape == (0,)
    add_points(linker, points, 0, len(points))
    linker.finish()
    done = via_msgpack(linker.state())
    again = Linker()
    again.setup(fresh_scan(sim, len(points)))
    again.restore(done)
    with pytest.raises(ValueError, match="after finish"):
        again.add_point(len(points), None, None, {})


@pytest.mark.parametrize("change, message", [
    ({"criterion": "fraction"}, "criterion"),
    ({"criterion": ["any_pixel", "distance"]}, "criterion"),
    ({"fraction": 0.5}, "fraction"),
    ({"distance": 2.0}, "distance"),
    ({"split": "local_max"}, "split"),
    ({"prominence": 0.2}, "prominence"),
    ({"prominence_sigma": 1.0}, "prominence_sigma"),
])
def test_restore_with_other_parameters_is_refused(tmp_path, change, message):
    sim, points = simulated("interlaced", "none")
    linker = Linker(criterion="any_pixel")
    linker.setup(fresh_scan(sim, 0))
    add_points(linker, points, 0, 6)
    state = via_hdf5(linker.state(), tmp_path / "state.h5")
    other = Linker(**{"criterion": "any_pixel", **change})
    other.setup(fresh_scan(sim, 6))
    with pytest.raises(ValueError, match=f"other parameters.*{message}: state"):
        other.restore(state)
    assert other.frontier_points() == []  # nothing was half restored


def test_restore_needs_setup_the_same_motors_and_a_sound_state():
    sim, points = simulated("snake", "none")
    linker = Linker()
    linker.setup(fresh_scan(sim, 0))
    add_points(linker, points, 0, 5)
    state = linker.state()
    with pytest.raises(ValueError, match="setup"):
        Linker().restore(state)
    other = Linker()
    other.setup(Scan.from_start(Simulation(SCANS["wrap"]).start("other")))  # omega only
    with pytest.raises(ValueError, match="motors"):
        other.restore(state)
    broken = {**state, "frontier": {**state["frontier"],
                                    "runs": state["frontier"]["runs"][:-1]}}
    fresh = Linker()
    fresh.setup(fresh_scan(sim, 5))
    with pytest.raises(ValueError, match="run_ptr"):
        fresh.restore(broken)
    with pytest.raises(ValueError, match="malformed"):
        fresh.restore({k: v for k, v in state.items() if k != "forest"})
    with pytest.raises(ValueError, match="version"):
        fresh.restore({**state, "version": 99})
