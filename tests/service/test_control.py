"""The control socket of a daemon subprocess: status answers fast under full load, `set`
applies from the next point and is recorded (inline, threads, processes), bad requests get
errors, and the command-line clients."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from stream.core.messages import DetectorInfo, End, Point, Start
from stream.core.table import read_table
from stream.service.live import unpack
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.daemon import (
    IN_PROCESS,
    SIMCONF,
    Sender,
    completed,
    daemon_config,
    scans_done,
    wait_until,
)
from tests.support.flow import reference_tables
from tests.support.paths import ROOT


def peakstream(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def raw_request(endpoint: str, *parts: bytes, timeout: float = 10.0) -> dict:
    """Any bytes as a request (REQ socket); the decoded reply."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(list(parts))
        assert sock.poll(int(timeout * 1000)), "no reply"
        return msgpack.unpackb(sock.recv(), raw=False)
    finally:
        sock.close()


def load_stream(endpoint: str, scan_id: str, n: int, shape=(512, 512)) -> None:
    """A fast stream: n points cycling through 8 frames made once (the sender is never
    the bottleneck), sent as fast as the daemon takes them."""
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(8):
        f = rng.poisson(10.0, shape).astype(np.uint16)
        for r, c in rng.integers(10, shape[0] - 10, (40, 2)):
            f[r - 2:r + 3, c - 2:c + 3] += 500
        frames.append(f)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 10_000)
    sock.connect(endpoint)
    sock.send_multipart(encode(Start(scan_id, {"eiger": DetectorInfo(shape, "uint16")},
                                     ["omega"], ["monitor"], n,
                                     {"kind": "sweep", "fast": "omega"})))
    for i in range(n):
        sock.send_multipart(encode(Point(scan_id, i, float(i), {"omega": 0.25 * i},
                                         {"monitor": 1e4}, {"eiger": frames[i % 8]})),
                            copy=False)
    sock.send_multipart(encode(End(scan_id, "success", n)))
    sock.close()


@pytest.mark.system
def test_status_answers_at_full_load(daemon, tmp_path):
    """Status requests are answered while a scan is processed at full load (how fast is
    a benchmark's business: a busy CI machine may take any time)."""
    d = daemon(daemon_config(tmp_path))  # inline: the chain runs in the daemon's main thread
    sender = threading.Thread(target=load_stream, args=(d.endpoint, "load", 1500))
    sender.start()
    wait_until(lambda: (d.status().get("scan") or {}).get("linked", 0) > 50, why="load")
    states, linked = [], []
    deadline = time.monotonic() + 600  # only for a scan that never ends
    while not states or states[-1] == "running":  # asked until the scan is done
        assert time.monotonic() < deadline, states[-20:]
        reply = d.status()
        states.append(reply["state"])
        linked.append((reply["scan"] or {}).get("linked", -1))
        time.sleep(0.05)
    sender.join(timeout=300)
    running = [n for s, n in zip(states, linked, strict=True) if s == "running"]
    assert len(running) >= 2, states  # answered while the scan was processed
    assert running == sorted(running) and running[-1] > running[0], running  # it moved
    assert completed(tmp_path / "out" / "load.h5", 300) == "success"


@pytest.mark.system
@pytest.mark.parametrize("kind", ["inline", "threads", "processes"])
def test_set_applies_from_the_next_point_and_is_recorded(daemon, tmp_path, kind):
    extra = "" if kind == "inline" else f'[workers]\nkind = "{kind}"\ncount = 2\n'
    d = daemon(daemon_config(tmp_path, extra))
    live = zmq.Context.instance().socket(zmq.SUB)
    live.setsockopt(zmq.SUBSCRIBE, b"param ")
    live.connect(d.live)
    k = 25
    sender = Sender(d.endpoint)
    sender.start("cut")
    sender.points("cut", range(k))
    wait_until(lambda: (d.status().get("scan") or {}).get("accepted") == k, why="k accepted")
    reply = d.ask({"cmd": "checkpoint"})
    assert reply["ok"] and reply["scan_id"] == "cut" and reply["how"] in ("checkpoint", "flush")
    reply = d.ask({"cmd": "set", "node": "threshold", "key": "cut", "value": 1e9})
    assert reply["ok"], reply
    assert (reply["value"], reply["old"], reply["newest_received"]) == (1e9, 40.0, k - 1)
    assert d.ask({"cmd": "get", "node": "threshold", "key": "cut"})["params"] == {"cut": 1e9}
    sender.points("cut", range(k, SIMCONF.npoints))
    sender.end("cut")
    path = tmp_path / "out" / "cut.h5"
    assert completed(path) == "success"
    sender.close()
    assert d.status()["params"] == {"threshold": {"cut": 1e9}}

    t = load(path)
    with h5py.File(path, "r") as f:
        events = read_table(f["entry/process/events"])
    kinds = list(events["kind"])
    assert kinds.count("set") == 1 and kinds.count("param") == 1
    param = kinds.index("param")
    assert events["point_id"][param] == k  # in force from the next point accepted
    assert json.loads(events["message"][param])["value"] == 1e9
    assert live.poll(30_000), "no param message on the live lane"  # and what it says:
    topic, body = unpack(live.recv())
    live.close(linger=0)
    assert (topic, body["scan_id"], body["point_id"]) == ("param", "cut", k)
    assert (body["node"], body["key"], body["value"], body["old"]) == ("threshold", "cut",
                                                                        1e9, 40.0)
    # known answer: up to k-1 the points are those of an unchanged run, from k on no
    # pixel is above the cut
    ref = reference_tables(tmp_path)
    peaks, ref_peaks = t["peaks2d"], ref["peaks2d"]
    assert peaks["point_id"].max() == k - 1
    before = ref_peaks["point_id"] < k
    assert before.sum() > 20
    for col in ("point_id", "npx", "sum_intensity", "s_raw", "f_raw"):
        assert np.array_equal(peaks[col], ref_peaks[col][before]), col
    nnz = t["sparse"]["nnz"]
    assert (nnz[k:] == 0).all() and np.array_equal(nnz[:k], ref["sparse"]["nnz"][:k])
    assert t["points"]["status"].tolist() == [0] * SIMCONF.npoints  # all ok, none lost


@pytest.mark.system
def test_bad_requests_get_errors_and_the_daemon_keeps_running(daemon, tmp_path):
    d = daemon(daemon_config(tmp_path))
    token = d.token()

    def pack(req):
        if req.get("cmd") in ("set", "checkpoint"):
            req = {**req, "token": token}
        return msgpack.packb(req)

    cases = [
        ((b"\xc1 junk",), "not a msgpack map"),
        ((msgpack.packb([1, 2]),), "a request is a msgpack map"),
        ((msgpack.packb({"cmd": "set", "node": "threshold", "key": "cut", "value": 1}),),
         "needs the control token"),
        ((msgpack.packb({"cmd": "stop", "token": "guess"}),), "needs the control token"),
        ((pack({"cmd": "set", "node": "threshold", "key": "cut", "value": -1e30}),),
         "must be in [0, 1e+09]"),
        ((pack({"cmd": "explode"}),), "unknown command 'explode'"),
        ((pack({"node": "threshold"}),), "unknown command None"),
        ((pack({"cmd": "status"}), pack({"cmd": "status"})), "got 2 parts"),
        ((pack({"cmd": "get", "node": "nope"}),), "no node 'nope'"),
        ((pack({"cmd": "get", "node": "threshold", "key": "cutt"}),), "no parameter 'cutt'"),
        ((pack({"cmd": "set", "node": "threshold", "key": "cutt", "value": 1}),),
         "no settable parameter 'cutt'"),
        ((pack({"cmd": "set", "node": "label", "key": "min_pixels", "value": 3}),),
         "settable: none"),
        ((pack({"cmd": "set", "node": "threshold", "key": "cut", "value": "high"}),),
         "must be float"),
        ((pack({"cmd": "set", "node": "threshold", "key": "cut", "value": float("nan")}),),
         "must be finite"),
        ((pack({"cmd": "set", "node": "threshold", "key": "cut"}),), "set needs"),
        ((pack({"cmd": "checkpoint"}),), "no scan in progress"),
    ]
    for parts, words in cases:
        reply = raw_request(d.control, *parts)
        assert reply["ok"] is False and words in reply["error"], (parts, reply)
    assert d.ask({"cmd": "get"})["params"]["threshold"]["cut"] == 40.0  # nothing changed
    sender = Sender(d.endpoint)
    sender.scan("after")
    assert completed(tmp_path / "out" / "after.h5") == "success"
    sender.close()
    assert d.ask({"cmd": "stop"}) == {"ok": True, "state": "stopping"}
    assert d.wait() == 0


@pytest.mark.system
def test_status_get_set_command_line_clients(daemon, tmp_path):
    d = daemon(daemon_config(tmp_path))
    sender = Sender(d.endpoint)
    sender.scan("one")
    scans_done(d, 1)
    sender.close()
    r = peakstream("status", "--control", d.control)
    assert r.returncode == 0, r.stderr
    assert "idle, 1 scan(s) done" in r.stdout and "last scan   one: success" in r.stdout
    r = peakstream("status", "--json", "--control", d.control)
    s = json.loads(r.stdout)
    assert s["ok"] and s["state"] == "idle" and s["last_scan"]["linked"] == SIMCONF.npoints
    r = peakstream("get", "threshold", "--control", d.control)
    assert r.returncode == 0 and json.loads(r.stdout)["cut"] == 40.0
    assert "settable (peakstream set): threshold.cut" in r.stderr  # the CLI dropped it
    r = peakstream("get", "label", "--control", d.control)
    assert r.returncode == 0 and "settable (peakstream set): none" in r.stderr
    r = peakstream("set", "threshold", "cut", "45", "--control", d.control)
    assert r.returncode == 0, r.stderr
    assert "threshold.cut = 45.0 (was 40.0)" in r.stdout
    r = peakstream("get", "threshold", "cut", "--control", d.control)
    assert json.loads(r.stdout) == {"cut": 45.0}
    r = peakstream("set", "threshold", "cut", "lots", "--control", d.control)
    assert r.returncode == 1 and "refused" in r.stderr and "must be float" in r.stderr
    # set while idle: in force for the next scan, from its first point, and recorded there
    sender = Sender(d.endpoint)
    sender.scan("two")
    path = tmp_path / "out" / "two.h5"
    assert completed(path) == "success"
    sender.close()
    with h5py.File(path, "r") as f:
        events = read_table(f["entry/process/events"])
    rows = {k: (p, json.loads(m)) for k, p, m in zip(events["kind"], events["point_id"],
                                                      events["message"], strict=True)
            if k in ("params", "param")}
    assert rows["params"][1] == {"threshold": {"cut": 45.0}}
    assert rows["param"][0] == 0 and rows["param"][1]["value"] == 45.0
    # nobody at that endpoint: a clear message after the timeout, exit 1
    free = zmq.Context.instance().socket(zmq.REP)
    port = free.bind_to_random_port("tcp://127.0.0.1")
    free.close()
    r = peakstream("status", "--control", f"tcp://127.0.0.1:{port}", "--timeout", "0.5")
    assert r.returncode == 1 and "no peakstream daemon answered" in r.stderr


def test_status_says_when_the_data_endpoint_is_bound():
    """Before the warm-up ends the daemon has no data socket yet: status says so instead
    of an empty endpoint."""
    from stream.service.clients import format_status

    warming = format_status({"state": "warming", "endpoints": {"data": "", "control": "c"}})
    assert "data bound after the warm-up," in warming
    ready = format_status({"state": "idle", "endpoints": {"data": "tcp://h:1", "control": "c"}})
    assert "data tcp://h:1," in ready


def test_the_first_status_is_the_daemons_own_and_prints_no_placeholder(tmp_path):
    """The control socket answered with {"state": "starting"} until the daemon's first
    snapshot, printed as "peakstream daemon ? (pid ?) ... control None ... workers None
    None". Asked while the daemon warms up (its first moment with a control socket):
    its pid, endpoints and workers, and no None or ? in the text."""
    import os

    from stream.config.schema import Config
    from stream.service.clients import format_status
    from stream.service.control import request
    from stream.service.daemon import Daemon

    config = Config.load(daemon_config(tmp_path, IN_PROCESS))
    seen: list[dict] = []
    endpoint: list[str] = []
    d = Daemon(config, tmp_path / "out", warm=lambda _: seen.append(
        request(endpoint[0], {"cmd": "status"})), on_control=endpoint.append)
    d.close()
    first = seen[0]
    assert first["state"] == "warming" and first["pid"] == os.getpid()
    assert first["endpoints"]["control"] == endpoint[0] and first["workers"]["kind"]
    text = format_status(first)
    assert "None" not in text and "?" not in text and f"(pid {os.getpid()})" in text
    bare = format_status({"state": "starting"})  # an older daemon's placeholder
    assert "None" not in bare and "?" not in bare


def test_a_status_asked_before_the_first_snapshot_gets_that_snapshot():
    """The control thread served from its construction, answering {"state": "starting"}
    until the daemon's first update; it now serves from `start(snapshot)` on, and a
    request sent before waits in the socket for it."""
    from stream.service.control import ControlServer, pack

    server = ControlServer("tcp://127.0.0.1:0", lambda: None, lambda req: {})
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(server.endpoint)
        sock.send(pack({"cmd": "status"}))
        server.start({"state": "warming", "pid": 42})
        assert sock.poll(10_000), "no reply"
        reply = msgpack.unpackb(sock.recv(), raw=False)
    finally:
        sock.close()
        server.close()
    assert reply["state"] == "warming" and reply["pid"] == 42


def test_status_shows_the_source_counters():
    """docs/sources.md: status shows the source's counters (they were only in --json)."""
    from stream.service.clients import format_status

    text = format_status({"state": "idle", "source": {"scans": 3, "bad_frames": 2,
                                                      "last_error": "", "per_scan": {}}})
    assert "  source      scans 3, bad_frames 2" in text
    assert "last_error" not in text and "per_scan" not in text
    assert "source " not in format_status({"state": "idle", "source": {}})


def test_status_shows_a_quiet_scans_warning_on_a_line_of_its_own():
    """docs/sources.md: a Bliss scan quiet for quiet_warning s (the source's `warning`)."""
    from stream.service.clients import format_status

    text = format_status({"state": "running", "source": {
        "scan": "id11_8_fscan", "quiet_s": 720.0, "warning": "Bliss scan id11_8_fscan ..."}})
    assert "  source      scan id11_8_fscan, quiet_s 720.0\n" in text
    assert text.endswith("\n  warning     Bliss scan id11_8_fscan ...")


@pytest.mark.system
def test_the_web_controls_offer_exactly_what_the_daemon_lets_change(daemon, tmp_path):
    """The page's parameter menu (`Control.settable`): every entry is accepted by `set`,
    every other scalar parameter of the chain is refused by it (before: all scalars were
    offered, and the first, a fixed one, preselected)."""
    from stream.service.web.server import Control

    d = daemon(daemon_config(tmp_path))
    wait_until(lambda: peakstream("status", "--control", d.control).returncode == 0,
               why="the control socket")
    control = Control(d.control)
    offered = control.settable()
    assert offered == ["threshold.cut"]  # not normalise.reference, label.min_pixels
    params = control.ask({"cmd": "get"})["params"]
    for node, values in params.items():
        for key, value in values.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            reply = control.set(node, key, str(value))
            assert reply["ok"] == (f"{node}.{key}" in offered), (node, key, reply)


@pytest.mark.system
def test_a_cut_a_map_replaces_is_not_settable(daemon, tmp_path):
    """With a cut_map (or a background node before it) the threshold never reads cut:
    `set threshold cut` was accepted and recorded, and changed nothing."""
    np.save(tmp_path / "cut.npy", np.full(SIMCONF.shape, 40.0, np.float32))
    config = daemon_config(tmp_path, '[[node]]\nkind = "threshold"\ncut_map = "cut.npy"\n'
                                     '[[node]]\nkind = "label"\n[[node]]\nkind = "properties"\n')
    d = daemon(config)
    r = peakstream("set", "threshold", "cut", "500", "--control", d.control)
    assert r.returncode == 1 and "threshold.cut is not used by this chain" in r.stderr
    assert "cut_map" in r.stderr
    r = peakstream("get", "threshold", "--control", d.control)
    assert r.returncode == 0 and "settable (peakstream set): none" in r.stderr
    assert "threshold.cut is not used by this chain" in r.stderr
