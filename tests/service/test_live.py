"""The live lane of a daemon subprocess: every topic during a simulated scan, with known
answers; a subscriber that never reads (or none at all) never holds processing back;
`peakstream watch`."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from stream.service.live import unpack
from stream.sources.simulate import Simulation
from stream.store.reader import load
from tests.support.daemon import (
    SIMCONF,
    Sender,
    completed,
    daemon_config,
    scans_done,
    wait_until,
)
from tests.support.flow import tables
from tests.support.paths import ROOT

pytestmark = pytest.mark.system  # `peakstream daemon` subprocesses and their live lane

N = SIMCONF.npoints


def subscriber(endpoint: str, hwm: int = 0, rcvbuf: int = -1) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RCVBUF, rcvbuf)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def collect_scan(sock: zmq.Socket, scan_id: str, limit: float = 120.0) -> dict[str, list]:
    """Every message until the progress message that reports the scan's end."""
    got: dict[str, list] = {}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not sock.poll(1000):
            continue
        topic, body = unpack(sock.recv())
        got.setdefault(topic, []).append(body)
        if topic == "progress" and (body.get("ended") or {}).get("scan_id") == scan_id:
            return got
    raise AssertionError(f"no end of {scan_id} on the live lane; got {list(got)}")


def test_every_topic_during_a_scan_with_known_answers(daemon, tmp_path):
    config = daemon_config(tmp_path, "[live]\nframe_rate = 1000.0\nframe_bin = 4\n"
                                     "sndhwm = 100000\ninterval = 0.1\n")
    d = daemon(config)
    sock = subscriber(d.live)
    wait_until(lambda: sock.poll(100), why="the subscription")  # progress while idle
    assert unpack(sock.recv())[1]["state"] == "idle"
    sender = Sender(d.endpoint)
    sender.scan("live", rate=200)
    got = collect_scan(sock, "live")
    sender.close()
    sock.close()
    path = tmp_path / "out" / "live.h5"
    assert completed(path) == "success"
    t = load(path)
    peaks2d = t["peaks2d"]

    running = [p for p in got["progress"] if p["scan"] and p["scan"]["scan_id"] == "live"]
    assert running and all(p["state"] == "running" for p in running)
    assert "received" in running[-1]["rates"] or len(running) == 1
    # peaks: one message per point, the 2D peaks the file holds for that point
    peaks = {p["point_id"]: p for p in got["peaks"] if p["scan_id"] == "live"}
    assert sorted(peaks) == list(range(N))
    for pid, body in peaks.items():
        rows = peaks2d["point_id"] == pid
        assert body["npeaks"] == rows.sum()
        for col in ("s_raw", "f_raw", "sum_intensity", "npx"):
            assert np.array_equal(body[col], peaks2d[col][rows]), (pid, col)
        assert body["motors"]["omega"] == t["points"]["motors/omega"][pid]
    # cliques: every clique of the file, each once
    ids = np.concatenate([c["clique_id"] for c in got["cliques"]])
    assert sorted(ids) == sorted(t["cliques"]["clique_id"]) and len(ids) > 10
    assert sum(c["count"] for c in got["cliques"]) == len(ids)
    # frame: the frame as sent, binned 4 x 4
    sim = Simulation(SIMCONF)
    assert got["frame"]
    for f in got["frame"]:
        raw = sim.frame(f["point_id"]).astype(np.float64)
        want = raw.reshape(32, 4, 40, 4).sum(axis=(1, 3))
        assert f["image"].shape == (32, 40) and np.array_equal(f["image"], want)
    # map: per point the summed 2D peak intensity, by index, with its omega
    last = [m for m in got["map"] if m["scan_id"] == "live"][-1]
    want = np.bincount(peaks2d["point_id"], peaks2d["sum_intensity"], minlength=N)
    assert last["axes"] == ["point"] and last["sum_intensity"].shape == (N,)
    np.testing.assert_allclose(last["sum_intensity"], want, rtol=1e-6)
    np.testing.assert_array_equal(last["positions"]["omega"], t["points"]["motors/omega"])


def test_map_of_a_snake_scan_is_slow_by_fast(daemon, tmp_path):
    from stream.sources.simulate.config import SimConfig

    conf = SimConfig(npoints=120, nrows=3, trajectory="snake", shape=(96, 96), spots=20,
                     sigma_px=(1.0, 1.5), seed=1, dty_step=0.0)  # back-and-forth passes
    d = daemon(daemon_config(tmp_path, "[live]\ninterval = 0.1\n"))
    sock = subscriber(d.live)
    wait_until(lambda: sock.poll(100), why="the subscription")
    sender = Sender(d.endpoint, Simulation(conf))
    sender.scan("snake")
    got = collect_scan(sock, "snake")
    sender.close()
    sock.close()
    t = load(tmp_path / "out" / "snake.h5")
    m = [m for m in got["map"] if m["scan_id"] == "snake"][-1]
    assert m["axes"] == ["slow", "fast"] and m["sum_intensity"].shape == (3, 40)
    omega = t["points"]["motors/omega"].reshape(3, 40)
    omega[1::2] = omega[1::2, ::-1]  # snake rows run backwards: the map follows the motor
    np.testing.assert_array_equal(m["positions"]["omega"], omega)
    assert (np.diff(m["positions"]["omega"], axis=1) > 0).all()
    sums = np.bincount(t["peaks2d"]["point_id"], t["peaks2d"]["sum_intensity"],
                       minlength=120).reshape(3, 40)
    sums[1::2] = sums[1::2, ::-1]
    assert (sums > 0).sum() > 20
    np.testing.assert_allclose(m["sum_intensity"], sums, rtol=1e-6)


def test_a_subscriber_that_never_reads_never_holds_processing(daemon, tmp_path):
    # every point brings a full-size preview (80 kB): a reader that does not read
    # fills every buffer on its way within a few points. (The rate is no limit: two
    # points are never dispatched at the same instant, 1e-300 s apart; at 100000 a
    # second two points dispatched within 10 us would have shared one preview.)
    config = daemon_config(tmp_path, "[live]\nframe_rate = 1e300\nframe_bin = 1\n"
                                     "sndhwm = 2\ninterval = 0.05\n")
    d = daemon(config)
    sender = Sender(d.endpoint)
    sender.scan("nobody")  # no subscriber at all
    assert completed(tmp_path / "out" / "nobody.h5") == "success"
    stuck = subscriber(d.live, hwm=1, rcvbuf=4096)
    wait_until(lambda: stuck.poll(100), why="the subscription")  # then it stops reading
    sender.scan("stuck")
    # `status` answers from a snapshot the daemon takes between points: read as soon as
    # the file was complete it could be one from before the scan's last sends (a loaded
    # machine: it failed so); the snapshot that counts the scan done holds them all
    sent = scans_done(d, 2)["live"]["sent"]
    assert completed(tmp_path / "out" / "stuck.h5") == "success"
    assert sent["frame"] >= 2 * N and sent["peaks"] >= 2 * N
    a, b = tables(tmp_path / "out" / "nobody.h5"), tables(tmp_path / "out" / "stuck.h5")
    for name in ("points", "sparse", "peaks2d", "overlaps", "cliques"):
        for col in a[name]:
            if col != "time":
                x, y = a[name][col], b[name][col]
                assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (name, col)
    sender.close()
    stuck.close()


def test_watch_prints_one_line(daemon, tmp_path):
    d = daemon(daemon_config(tmp_path, "[live]\ninterval = 0.1\n"))

    def watch() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stream.cli", "watch", "--once", "--live",
                               d.live, "--timeout", "20"], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)

    r = watch()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("idle: no scan in progress")
    sender = Sender(d.endpoint)
    thread = threading.Thread(target=sender.scan, args=("watched",), kwargs={"rate": 20})
    thread.start()
    wait_until(lambda: d.status()["state"] == "running", why="the scan")
    r = watch()
    thread.join()
    sender.close()
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("running: watched ") and f"/{N} points" in line
    for words in ("/s in", "/s linked", "lag ", "cliques", "missing"):
        assert words in line, line
    r = subprocess.run([sys.executable, "-m", "stream.cli", "watch", "--once", "--live",
                        "tcp://127.0.0.1:1", "--timeout", "0.3"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "nothing from tcp://127.0.0.1:1" in r.stderr


def test_run_with_a_live_group_publishes_the_live_lane(tmp_path):
    """`peakstream run` took [live] in its config and bound nothing (web.md shows the page
    next to a run with a live lane): now it publishes as the daemon does."""
    from tests.support.processes import RunProcess, simulate_send

    config = daemon_config(tmp_path, '[live]\nendpoint = "tcp://127.0.0.1:0"\n'
                                     "sndhwm = 100000\ninterval = 0.1\n", name="run.toml")
    run = RunProcess(config, tmp_path / "out", "--scans", "1")
    try:
        live = re.search(r"live lane on (tcp://\S+)", run.startup[-1]).group(1)
        sock = subscriber(live)
        wait_until(lambda: sock.poll(100), why="the subscription")  # progress while idle
        assert unpack(sock.recv())[1]["state"] == "idle"
        sent = simulate_send(run.endpoint, "--points", str(N), "--shape", "128", "160",
                             "--spots", "12", "--scan-id", "runlive")
        assert sent.returncode == 0, sent.stderr
        got = collect_scan(sock, "runlive")
        sock.close()
    except BaseException:
        run.proc.kill()
        raise
    code, _, err = run.wait()
    assert code == 0, err
    assert sorted(p["point_id"] for p in got["peaks"]) == list(range(N))
    assert got["progress"][-1]["ended"]["status"] == "success"
