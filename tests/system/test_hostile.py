"""Hostile or clumsy clients (issue #13): a daemon subprocess gets exactly the messages
that used to wedge it, run it out of memory, read files it should not, or lose or
corrupt a scan. After each case: the daemon is alive, `status` answers, its memory
stays bounded, and the next clean scan gives the reference result (the first clean
scan's: point statuses, clique sizes and intensities)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from stream.core.item import SparseFrame
from stream.core.messages import DetectorInfo, End, FrameRef
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.store.reader import load, summary
from stream.wire.codec import encode
from tests.support.daemon import (
    DaemonProcess,
    Sender,
    completed,
    daemon_config,
    file_status,
    wait_until,
)
from tests.support.paths import ROOT

pytestmark = pytest.mark.system

SIM = SimConfig(npoints=24, shape=(128, 160), spots=6, seed=3)
DET = "eiger"
RSS_SLACK = 300 << 20  # bytes the daemon may grow by over the whole module


def hostile_extra(refdir: Path) -> str:
    return f"""
[source]
end_timeout = 4.0
point_timeout = 1.0
max_points = 100000
max_gap = 1000
max_frame_bytes = 1000000
allow_refs = true
ref_dirs = ["{refdir}"]

[output]
max_events = 300

[live]
max_map_cells = 100000
"""


class Hostile:
    """One daemon for the module, a sender, and the reference result of a clean scan."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.refdir = tmp / "refs"
        self.refdir.mkdir()
        self.out = tmp / "out"
        self.d = DaemonProcess(daemon_config(tmp, hostile_extra(self.refdir)), self.out)
        self.sim = Simulation(SIM)
        self.send = Sender(self.d.endpoint, self.sim)
        self.cleans = 0
        self.reference = self.clean_scan()
        self.rss0 = self.d.status()["rss"]

    def push(self, parts: list) -> None:
        self.send.sock.send_multipart(parts, copy=False)

    def point(self, i: int, scan_id: str, **changes):
        return dataclasses.replace(self.sim.point(i, scan_id), **changes)

    def start(self, scan_id: str, **changes) -> None:
        self.push(encode(dataclasses.replace(self.sim.start(scan_id), **changes)))

    def clean_scan(self) -> dict:
        self.cleans += 1
        name = f"clean-{self.cleans}"
        self.send.scan(name)
        assert completed(self.out / f"{name}.h5") == "success"
        wait_until(lambda: (self.d.status()["last_scan"] or {}).get("scan_id") == name,
                   why="the status snapshot to count the clean scan")  # refreshed every 50 ms
        t = load(self.out / f"{name}.h5")
        return {"status": t["points"]["status"].tolist(),
                "cliques": np.sort(t["cliques"]["sum_intensity"]),
                "npx": np.sort(t["cliques"]["npx"])}

    def healthy(self) -> None:
        """Alive, answering at once, memory bounded, and the next clean scan gives the
        reference result."""
        assert self.d.proc.poll() is None, self.d.text()
        status = self.d.ask({"cmd": "status"}, timeout=30.0)
        assert status["ok"]
        wait_until(lambda: self.d.status()["state"] == "idle", why="the daemon to be idle")
        assert status["rss"] < self.rss0 + RSS_SLACK, status["rss"]
        again = self.clean_scan()
        assert again["status"] == self.reference["status"]
        assert np.array_equal(again["npx"], self.reference["npx"])
        assert np.allclose(again["cliques"], self.reference["cliques"])

    def file(self, scan_id: str) -> Path:
        return self.out / f"{scan_id}.h5"

    def messages(self, scan_id: str) -> str:
        return " ".join(load(self.file(scan_id))["events"]["message"])

    def close(self) -> None:
        self.send.close()
        self.d.kill()


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    hostile = Hostile(tmp_path_factory.mktemp("hostile"))
    yield hostile
    hostile.close()


# ------------------------------------------------------------------ denial of service


def test_a_far_point_id_in_an_open_ended_scan(h):
    h.start("far", npoints=None)
    h.send.points("far", range(5))
    h.push(encode(h.point(5, "far", point_id=3_000_000)))  # beyond max_points
    h.push(encode(h.point(5, "far", point_id=50_000)))  # beyond max_gap
    h.push(encode(h.point(5, "far", point_id=2**63 - 1)))  # beyond max_points
    header, *parts = encode(h.point(5, "far"))
    raw = msgpack.unpackb(header)
    raw["point_id"] = 2**63  # not an int64: malformed, never a numpy error
    h.push([msgpack.packb(raw), *parts])
    h.push(encode(h.point(10, "far", point_id=900)))  # a gap of 895: one range
    h.push(encode(dataclasses.replace(h.sim.end("far"), npoints=None)))
    assert completed(h.file("far")) == "incomplete"  # the gap: points missing
    s = summary(h.file("far"))
    assert (s["points"], s["points_ok"], s["points_missing"]) == (901, 6, 895)
    assert s["events"]["missing"] == 1  # the gap as one event, not 895
    text = h.messages("far")
    assert "max_gap" in text and "max_points" in text and "2**63" in text
    h.healthy()


def test_huge_starts_are_refused_and_the_open_scan_goes_on(h):
    h.start("keep")
    h.send.points("keep", range(10))
    h.start("huge", npoints=200_000_000)
    h.start("grid", npoints=None, trajectory={"kind": "grid", "fast": "omega",
                                              "nfast": 30_000_000})
    h.start("../evil")
    h.start("wide", detectors={DET: DetectorInfo((60000, 60000), "uint32")})
    h.send.points("keep", range(10, SIM.npoints))
    h.send.end("keep")
    assert completed(h.file("keep")) == "success"
    s = summary(h.file("keep"))
    assert (s["points"], s["points_ok"]) == (SIM.npoints, SIM.npoints)
    assert not h.file("huge").exists() and not h.file("grid").exists()
    text = h.messages("keep")
    assert "npoints 200000000 is more than [source] max_points" in text
    assert "nfast 30000000 is more than [source] max_points" in text
    assert "not a safe file name" in text
    assert "frames of 14400000000 bytes are more than [source] max_frame_bytes" in text
    h.healthy()


# ------------------------------------------------------------------ frame references


def test_frame_references_only_from_regular_files_below_ref_dirs(h):
    frames = np.stack([h.sim.point(i, "x").frames[DET] for i in range(2)])
    with h5py.File(h.refdir / "frames.h5", "w") as f:
        f["data"] = frames
        f["big"] = np.zeros((2000, 2000), np.uint16)  # 8 MB > max_frame_bytes
    secret = h.tmp / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = frames + 1000
    os.chmod(secret, 0o600)
    os.mkfifo(h.refdir / "fifo.h5")
    os.symlink(secret, h.refdir / "link.h5")
    refs = [FrameRef(str(h.refdir / "frames.h5"), "/data", 0),  # fine
            FrameRef(str(secret), "/data", 0),  # outside ref_dirs
            FrameRef(str(h.refdir / "fifo.h5"), "/data", 0),  # would block in open
            FrameRef("link.h5", "/data", 0),  # a symlink out of ref_dirs
            FrameRef(str(h.refdir / "frames.h5"), "/big", None),  # too big to read
            FrameRef(str(h.refdir / "frames.h5"), "/data", None)]  # 3D without an index
    h.start("refs", npoints=len(refs))
    for i, ref in enumerate(refs):
        h.push(encode(h.point(i, "refs", frames={DET: ref})))
    assert h.d.ask({"cmd": "status"}, timeout=30.0)["ok"]  # not frozen by the FIFO
    h.push(encode(End("refs", "success", len(refs))))
    assert completed(h.file("refs")) == "incomplete"  # bad points: never a silent success
    t = load(h.file("refs"))
    assert t["points"]["status"].tolist() == [0, 2, 2, 2, 2, 2]
    text = h.messages("refs")
    for words in ("not below the allowed directories", "not a regular file",
                  "more than the configured maximum", "is 3D"):
        assert words in text, words
    h.healthy()


# ------------------------------------------------------------------ output directory


def test_planted_symlinks_are_never_written_through(h):
    target = h.tmp / "precious.txt"
    target.write_text("precious")
    os.symlink(target, h.out / "evil.h5.journal.tmp")
    os.symlink(target, h.out / "taken.h5")
    h.send.scan("evil")
    h.send.scan("taken")
    assert completed(h.file("evil")) == "success"
    assert completed(h.out / "taken-1.h5") == "success"  # the link's name is skipped
    assert target.read_text() == "precious"
    assert (h.out / "taken.h5").is_symlink()
    h.healthy()


# ------------------------------------------------------------------ scans that look fine


def test_garbage_does_not_keep_a_scan_open(h):
    h.start("quiet")
    h.send.points("quiet", range(5))

    def garbage_then_done() -> bool:
        h.push([b"\xc1"])
        h.push(encode(h.point(7, "someone-else")))
        return (file_status(h.file("quiet")) or "running") != "running"

    wait_until(garbage_then_done, limit=60.0, every=0.5, why="the scan to time out")
    s = summary(h.file("quiet"))
    assert s["status"] == "abort" and "timeout" in s["reason"]
    h.healthy()


def test_a_bad_message_first_does_not_make_the_real_point_a_duplicate(h):
    h.start("first")
    p3 = h.sim.point(3, "first")
    h.push(encode(dataclasses.replace(p3, frames={DET: p3.frames[DET].astype(np.uint32)})))
    h.push(encode(h.point(5, "first", frames={DET: np.zeros((64, 160), np.uint16)})))
    nan = SparseFrame(SIM.shape, np.array([1, 2], np.uint16), np.array([3, 4], np.uint16),
                      np.array([np.nan, np.inf], np.float32))
    h.push(encode(h.point(7, "first", frames={DET: nan})))  # and no valid one after it
    h.send.points("first", [i for i in range(SIM.npoints) if i != 7])
    h.push(encode(h.sim.point(3, "first")))  # a second valid one: the duplicate
    h.send.end("first")
    assert completed(h.file("first")) == "incomplete"  # a bad point: never a silent success
    t = load(h.file("first"))
    expect = [0] * SIM.npoints
    expect[7] = 2  # bad: NaN / inf intensities
    assert t["points"]["status"].tolist() == expect
    kinds = list(t["events"]["kind"])
    assert kinds.count("replaced") == 2 and kinds.count("duplicate") == 1
    assert "NaN or infinite" in h.messages("first")
    h.healthy()


def test_motors_out_of_range_are_flagged_and_never_overflow(h):
    h.start("motors")
    for i in range(SIM.npoints):
        p = h.sim.point(i, "motors")
        if i in (4, 6):
            p = dataclasses.replace(p, motors={"omega": -1e308 if i == 4 else float("inf")})
        h.push(encode(p))
    h.send.end("motors")
    assert completed(h.file("motors")) == "success"
    t = load(h.file("motors"))
    flags = t["points"]["flags"]
    assert "omega = -1e+308 is outside [-1e+09, 1e+09]" in flags[4]
    assert "omega = inf is not finite" in flags[6] and "missing" not in flags[6]
    assert not np.isinf(t["cliques"]["omega"]).any()
    h.healthy()


def test_oversize_messages_never_reach_memory(h):
    before = h.d.status()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(h.d.endpoint)
    big = np.zeros(300 << 20 >> 5, np.uint8)  # 9.4 MB, over MAXMSGSIZE
    for _ in range(12):
        push.send_multipart([msgpack.packb({"type": "point"}), big], copy=False)
    time.sleep(1.0)  # let them arrive (and be refused) before memory is read
    push.close()
    after = h.d.status()
    assert after["rss"] < before["rss"] + (60 << 20)
    assert after["malformed"] == before["malformed"]  # dropped by ZeroMQ, never decoded
    h.healthy()


def test_events_are_capped_and_a_malformed_message_counts_once(h):
    before = h.d.status()
    h.start("flood", npoints=5)
    for _ in range(1000):
        h.push([b"\xc1"])
    h.send.points("flood", range(5))
    h.push(encode(End("flood", "success", 5)))  # the start's npoints (another is recorded)
    assert completed(h.file("flood")) == "success"
    with h5py.File(h.file("flood"), "r") as f:
        nevents = f["entry/process/events/kind"].shape[0]
        dropped = int(f["entry/process/counters"].attrs["events_dropped"])
    assert nevents <= 301 and dropped >= 1000 - 301
    after = wait_until(lambda: (s := h.d.status())["last_scan"]["scan_id"] == "flood" and s,
                       why="a status snapshot taken after the scan ended")
    assert after["malformed"] - before["malformed"] == 1000
    assert after["rejected"] == before["rejected"]
    h.healthy()


# ------------------------------------------------------------------ the control socket


def test_control_changes_need_the_token_and_values_in_range(h):
    d = h.d
    assert not d.ask({"cmd": "set", "node": "threshold", "key": "cut", "value": 1,
                      "token": "guess"})["ok"]
    reply = d.ask({"cmd": "stop", "token": ""})
    assert not reply["ok"] and "token" in reply["error"]
    assert d.proc.poll() is None and d.status()["state"] != "stopping"
    for value in (-1e30, 2**64 - 1, -0.5):
        reply = d.ask({"cmd": "set", "node": "threshold", "key": "cut", "value": value})
        assert not reply["ok"] and "must be in [0, 1e+09]" in reply["error"], value
    assert d.ask({"cmd": "get", "node": "threshold", "key": "cut"})["params"]["cut"] == 40.0
    assert d.ask({"cmd": "set", "node": "threshold", "key": "cut", "value": 45})["ok"]
    h.send.scan("changed")
    assert completed(h.file("changed")) == "success"
    t = load(h.file("changed"))
    param = list(t["events"]["kind"]).index("param")
    assert t["events"]["point_id"][param] == 0  # applies from the scan's first point
    assert d.ask({"cmd": "set", "node": "threshold", "key": "cut", "value": 40.0})["ok"]
    h.healthy()
    assert "applies from point 0" in d.text()


def test_the_token_file_is_private_and_the_client_finds_it(h):
    path = Path(h.d.status()["token_file"])
    assert (path.stat().st_mode & 0o777) == 0o600
    out = subprocess.run([sys.executable, "-m", "stream.cli", "set", "threshold", "cut", "40",
                          "--control", h.d.control], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "threshold.cut = 40.0" in out.stdout


# ------------------------------------------------------------------ daemons of their own


def test_a_start_after_stop_leaves_the_scan_in_progress(tmp_path):
    d = DaemonProcess(daemon_config(tmp_path), tmp_path / "out")
    try:
        send = Sender(d.endpoint, Simulation(SIM))
        send.start("going")
        send.points("going", range(10))
        wait_until(lambda: (d.status().get("scan") or {}).get("received", 0) >= 10)
        assert d.ask({"cmd": "stop"})["ok"]
        send.start("late")
        send.points("going", range(10, SIM.npoints))
        send.end("going")
        assert d.wait() == 0
        send.close()
        s = summary(tmp_path / "out" / "going.h5")
        assert (s["status"], s["points_ok"]) == ("success", SIM.npoints)
        assert not (tmp_path / "out" / "late.h5").exists()
        assert "the daemon is stopping: no new scans" in d.text()
    finally:
        d.kill()


def test_a_planted_log_symlink_is_not_followed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    os.symlink(target, out / "peakstream.log")
    d = DaemonProcess(daemon_config(tmp_path), out)
    try:
        assert d.status()["ok"]
        assert "no log file" in d.text()
    finally:
        d.signal(signal.SIGTERM)
        d.wait()
        d.kill()
    assert target.read_text() == "precious"


def test_a_world_writable_output_directory_needs_the_sticky_bit(tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, 0o777)
    cmd = [sys.executable, "-m", "stream.cli", "daemon", str(daemon_config(tmp_path)),
           "--listen", "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0", "--live", "",
           "--output", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "world-writable without the sticky bit" in run.stderr
    os.chmod(out, 0o1777)  # /tmp-like: accepted
    d = DaemonProcess(daemon_config(tmp_path), out)
    try:
        assert d.status()["ok"]
    finally:
        d.kill()
