"""The simulator: determinism, truth, physics, HDF5 round trip and ZeroMQ sending."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
import zmq
from scipy import ndimage

from stream.core.messages import End, Point, Start
from stream.sources.simulate import (
    Simulation,
    read_scan,
    read_truth,
    send_scan,
    write_scan,
)
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import decode, encode

SMALL = SimConfig(npoints=24, shape=(64, 80), spots=4, seed=3, touching_fraction=0.0,
                  sigma_px=(1.0, 1.5), sigma_points=(0.7, 1.0), hot_pixels=3, dead_pixels=3)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(SimConfig())


def spot_window(sim: Simulation, k: int, raw: bool = False):
    """Background-subtracted expected images of spot k over its +-5 sigma box."""
    t = sim.truth
    s0, s1 = int(t["s"][k] - 5 * t["sigma_s"][k]), int(t["s"][k] + 5 * t["sigma_s"][k]) + 2
    f0, f1 = int(t["f"][k] - 5 * t["sigma_f"][k]), int(t["f"][k] + 5 * t["sigma_f"][k]) + 2
    p0 = max(0, int(t["point"][k] - 5 * t["sigma_w"][k]))
    p1 = min(sim.config.npoints, int(t["point"][k] + 5 * t["sigma_w"][k]) + 2)
    stack = []
    for i in range(p0, p1):
        img = sim.expected(i, raw=raw)
        if raw:
            img = img / sim.flat / (sim.monitor_value(i) / sim.config.monitor)
        stack.append(img[s0:s1, f0:f1] - sim.config.background)
    return np.array(stack), (p0, s0, f0)


def isolated(sim: Simulation, limit: float = 6.0) -> np.ndarray:
    t = sim.truth
    return np.flatnonzero(t["clean"] & (t["nearest"] >= limit))


def test_config_checks():
    with pytest.raises(ValueError, match="sigma_px"):
        SimConfig(sigma_px=(2.0, 1.0))
    with pytest.raises(ValueError, match="dtype"):
        SimConfig(dtype="int64")
    with pytest.raises(ValueError, match="cannot place 500 spots"):
        Simulation(SimConfig(spots=500))
    c = SimConfig(seed=7, shape=(100, 120))
    assert SimConfig.from_dict(c.as_dict()) == c
    with pytest.raises(ValueError, match="unknown keys nope"):
        SimConfig.from_dict({"nope": 1})


def test_deterministic_and_order_free(sim):
    other = Simulation(SimConfig())
    for key, column in sim.truth.items():
        np.testing.assert_array_equal(column, other.truth[key])
    np.testing.assert_array_equal(sim.flat, other.flat)
    np.testing.assert_array_equal(sim.mask, other.mask)
    forward = [sim.frame(i) for i in (0, 30, 31, 89)]
    backward = [other.frame(i) for i in (89, 31, 30, 0)][::-1]
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sim.frame(30), sim.frame(31))
    assert not np.array_equal(Simulation(SimConfig(seed=1)).frame(30), forward[1])
    assert sim.monitor_value(5) == other.monitor_value(5)


def test_truth_inside_bounds(sim):
    c, t = sim.config, sim.truth
    assert len(t["s"]) == c.spots and np.array_equal(t["spot_id"], np.arange(c.spots))
    ny, nx = c.shape
    for key, n in (("s", ny), ("f", nx)):
        assert np.all(t[key] >= 5 * t["sigma_" + key])
        assert np.all(t[key] <= n - 1 - 5 * t["sigma_" + key])
    assert np.all(t["point"] >= 4 * t["sigma_w"])
    assert np.all(t["point"] <= c.npoints - 1 - 4 * t["sigma_w"])
    assert np.all(np.diff(t["point"]) >= 0)
    np.testing.assert_allclose(t["omega"], c.omega_start + c.omega_step * t["point"])
    for key, lo, hi in (("sigma_s", *c.sigma_px), ("sigma_w", *c.sigma_points),
                        ("amplitude", *c.amplitude)):
        assert np.all((t[key] >= lo) & (t[key] <= hi))
    # the gap bands are there and no spot comes within 5 sigma of them
    (r0, r1), (c0, c1) = sim.gap_rows, sim.gap_cols
    assert r1 > r0 and c1 > c0 and sim.mask[r0:r1].all() and sim.mask[:, c0:c1].all()
    assert np.all((t["s"] + 5 * t["sigma_s"] < r0) | (t["s"] - 5 * t["sigma_s"] > r1 - 1))
    assert np.all((t["f"] + 5 * t["sigma_f"] < c0) | (t["f"] - 5 * t["sigma_f"] > c1 - 1))
    # dead pixels in the mask, hot pixels not; neither near a spot
    assert sim.mask[sim.dead_pixels].all() and not sim.mask[sim.hot_pixels].any()
    assert sim.mask.dtype == np.uint8 and sim.flat.dtype == np.float32
    for rows, cols in (sim.dead_pixels, sim.hot_pixels):
        ds = (rows[None, :] - t["s"][:, None]) / t["sigma_s"][:, None]
        df = (cols[None, :] - t["f"][:, None]) / t["sigma_f"][:, None]
        assert np.all(np.maximum(np.abs(ds), np.abs(df)) > 5)
    assert np.all(t["clean"] == ~t["touching"])  # nothing else spoils a spot here


def test_touching_pairs(sim):
    t = sim.truth
    paired = t["partner"] >= 0
    assert paired.sum() == 2 * round(sim.config.spots * sim.config.touching_fraction / 2)
    assert np.array_equal(t["touching"], paired)
    assert np.array_equal(t["partner"][t["partner"][paired]], np.flatnonzero(paired))
    assert np.all(t["nearest"][~paired] >= 4.0) and np.all(t["nearest"][paired] < 2.0)
    # the two footprints, thresholded at 5% of the weaker peak, join on some frame
    for a in np.flatnonzero(paired):
        b = t["partner"][a]
        cut = sim.config.background + 0.05 * min(t["amplitude"][a], t["amplitude"][b])
        lo, hi = sorted((t["point"][a], t["point"][b]))
        joined = False
        for i in range(int(np.floor(lo)), int(np.ceil(hi)) + 1):
            labels, _ = ndimage.label(sim.expected(i) > cut, np.ones((3, 3)))
            la, lb = (labels[int(round(t["s"][k])), int(round(t["f"][k]))] for k in (a, b))
            joined |= bool(la and la == lb)
        assert joined, f"spots {a} and {b} never touch"


def test_sum_and_centroid_of_clean_spots(sim):
    t = sim.truth
    ids = isolated(sim)
    assert ids.size >= 10
    for k in ids:
        for raw in (False, True):
            img, (p0, s0, f0) = spot_window(sim, k, raw=raw)
            assert img.sum() == pytest.approx(t["total"][k], rel=1e-3)
        p, s, f = np.indices(img.shape)
        w = img / img.sum()
        assert abs((w * (p + p0)).sum() - t["point"][k]) < 0.01
        assert abs((w * (s + s0)).sum() - t["s"][k]) < 0.01
        assert abs((w * (f + f0)).sum() - t["f"][k]) < 0.01
        assert img.max() == pytest.approx(t["amplitude"][k], rel=0.5)


def test_poisson_frames(sim):
    t, c = sim.truth, sim.config
    k = isolated(sim)[np.argmax(t["total"][isolated(sim)])]
    p0 = int(t["point"][k] - 5 * t["sigma_w"][k])
    p1 = int(t["point"][k] + 5 * t["sigma_w"][k]) + 2
    s0, s1 = int(t["s"][k] - 5 * t["sigma_s"][k]), int(t["s"][k] + 5 * t["sigma_s"][k]) + 2
    f0, f1 = int(t["f"][k] - 5 * t["sigma_f"][k]), int(t["f"][k] + 5 * t["sigma_f"][k]) + 2
    total = 0.0
    for i in range(p0, p1):
        frame = sim.frame(i)
        assert frame.dtype == np.uint16 and frame.shape == c.shape
        assert not frame[sim.mask.astype(bool)].any()
        assert frame[sim.hot_pixels].min() >= 4000
        corr = frame / sim.flat / (sim.monitor_value(i) / c.monitor) - c.background
        total += corr[s0:s1, f0:f1].sum()
    assert total == pytest.approx(t["total"][k], rel=0.03)
    quiet = (sim.mask == 0) & (sim.expected(0) == c.background)
    quiet[sim.hot_pixels] = False
    corr = sim.frame(0) / sim.flat / (sim.monitor_value(0) / c.monitor)
    assert corr[quiet].mean() == pytest.approx(c.background, rel=0.01)


def test_messages(sim):
    start = sim.start("scan1")
    assert start.detectors["eiger"].shape == (256, 256) and start.npoints == 90
    assert start.motors == ["omega"] and start.counters == ["monitor"]
    assert start.trajectory == {"kind": "sweep", "fast": "omega"}
    assert SimConfig.from_dict(start.meta["config"]) == sim.config
    assert decode(encode(start)) == start
    p = decode(encode(sim.point(7, "scan1")))
    assert p.point_id == 7 and p.motors["omega"] == pytest.approx(1.75)
    assert p.time == pytest.approx(sim.point(0, "scan1").time + 0.07)
    assert p.counters["monitor"] == sim.monitor_value(7)
    np.testing.assert_array_equal(p.frames["eiger"], sim.frame(7))
    assert sim.end("scan1") == End("scan1", "success", 90)
    with pytest.raises(IndexError):
        sim.frame(90)


def test_hdf5_round_trip(tmp_path):
    sim = Simulation(SMALL)
    path = tmp_path / "sim.h5"
    seen = []
    write_scan(sim, path, "small", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (24, 24) and len(seen) == 24
    with h5py.File(path) as h:
        assert h["entry/instrument/eiger/data"].chunks == (1, 64, 80)
        np.testing.assert_array_equal(h["entry/calibration/mask"][()], sim.mask)
        np.testing.assert_array_equal(h["entry/calibration/flat"][()], sim.flat)
    start, points = read_scan(path)
    assert start == sim.start("small")
    n = 0
    for p in points:
        q = sim.point(p.point_id, "small")
        assert p.point_id == n and p.scan_id == "small"
        assert (p.time, p.motors, p.counters) == (q.time, q.motors, q.counters)
        np.testing.assert_array_equal(p.frames["eiger"], q.frames["eiger"])
        n += 1
    assert n == SMALL.npoints
    truth = read_truth(path)
    assert truth.keys() == sim.truth.keys()
    for key in truth:
        np.testing.assert_array_equal(truth[key], sim.truth[key])


def test_read_refuses_other_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h:
        h["entry/data"] = np.zeros(3)
    with pytest.raises(ValueError, match="other.h5"):
        read_scan(other)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="notes.h5"):
        read_truth(text)


def receive(pull: zmq.Socket, sender: threading.Thread, timeout_ms: int = 5000) -> list:
    """Decoded messages from the PULL socket until an end arrives."""
    got = []
    while not got or not isinstance(got[-1], End):
        if not pull.poll(timeout_ms):
            raise AssertionError(f"nothing received after {len(got)} messages")
        got.append(decode(pull.recv_multipart(copy=False)))
    sender.join(timeout=5)
    return got


@pytest.fixture
def pull():
    """A PULL socket bound on an ephemeral loopback port; yields (socket, endpoint)."""
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close()


@pytest.mark.parametrize("how", ["all", "shuffled", "dropped"])
def test_send_scan(pull, how):
    sim = Simulation(SMALL)
    n = SMALL.npoints
    order = {"all": None, "shuffled": list(np.random.default_rng(1).permutation(n)),
             "dropped": [i for i in range(n) if i % 5 != 2]}[how]
    result = {}

    def run():
        result["sent"] = send_scan(sim, pull[1], "zmq1", order=order)

    sender = threading.Thread(target=run)
    sender.start()
    got = receive(pull[0], sender)
    expect = list(range(n)) if order is None else [int(i) for i in order]
    assert isinstance(got[0], Start) and got[0] == sim.start("zmq1")
    assert all(isinstance(m, Point) for m in got[1:-1])
    assert [m.point_id for m in got[1:-1]] == expect
    assert got[-1] == End("zmq1", "success", len(expect)) and result["sent"] == len(expect)
    for m in got[1:4]:
        np.testing.assert_array_equal(m.frames["eiger"], sim.frame(m.point_id))
        assert m.motors["omega"] == sim.omega(m.point_id)


def test_send_scan_rate(pull):
    sim = Simulation(SimConfig(npoints=11, shape=(32, 32), spots=0, gap=False))
    t0 = time.perf_counter()
    sender = threading.Thread(target=send_scan, args=(sim, pull[1], "rate"),
                              kwargs={"rate": 100.0})
    sender.start()
    got = receive(pull[0], sender)
    assert len(got) == 13 and time.perf_counter() - t0 >= 0.1
    with pytest.raises(ValueError, match="outside"):
        send_scan(sim, pull[1], "bad", order=[11])
