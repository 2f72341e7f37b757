"""A daemon killed -9 while Bliss runs a scan, and started again: the new daemon finds
the scan still running in Redis, follows it from its start, and continues the file
the crash left open (the points it holds come again and are kept), so the whole scan
is in one file that ends with Bliss's status, its points dated as an uninterrupted
run dates them. Which scans count as running."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stream.sources.blissdata.running import running_scans
from stream.store.checkpoint import open_h5
from tests.support.bliss import FakeBliss, bliss_config
from tests.support.daemon import completed, wait_until
from tests.support.dectris import sim_scan

PAUSE = 16  # points Bliss publishes before it pauses, while the daemon is killed


def stored_points(path) -> int:
    """Points in the file as of its last checkpoint (0 while it cannot be read)."""
    try:
        with open_h5(path) as f:
            return int(f["entry/points/point_id"].shape[0])
    except (OSError, KeyError):
        return 0


def test_running_scans_are_those_after_the_newest_closed(redis):
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    store = DataStore(redis.url)

    def scan(session: str, number: int, close: bool) -> str:
        s = store.create_scan({"name": "fscan", "number": number, "session": session,
                               "data_policy": "no_policy"}, info={})
        stream = s.create_stream(Stream.make_definition("axis:x", "float64"))
        s.prepare()
        s.start()
        stream.send(np.arange(3.0))
        if close:
            stream.seal()
            s.stop()
            s.close()
        return s.key

    scan("runs", 1, close=False)  # its Bliss died: never closed, then a closed scan
    scan("runs", 2, close=True)
    group = scan("runs", 3, close=False)
    other = scan("another", 4, close=False)
    child = scan("runs", 5, close=False)
    timetag, keys = running_scans(store, "runs")
    assert keys == [group, child]
    assert timetag == store.get_last_scan_timetag()
    assert running_scans(store, "")[1] == [group, other, child]  # every session


def test_a_scan_bliss_never_closed_ends_when_its_session_starts_another(redis, tmp_path):
    """A Bliss killed mid-scan never closes its scan: a source following it (or picking
    it up at start-up) waited for its end for good, and every later scan behind it."""
    from stream.core.messages import End
    from stream.sources.blissdata import BlissdataSource
    from stream.wire.codec import decode
    from tests.support.bliss import collect, dying_scan

    frames, motors, _ = sim_scan("uint16")
    omega = [m["omega"] for m in motors]
    info = {"type": "fscan", "npoints": 8,
            "fscan_parameters": {"motor": "diffrz", "npoints": 8}}
    with BlissdataSource(redis_url=redis.url, motors=["omega"], counters=[],
                         channels={"omega": "axis:diffrz"}, session="died") as src:
        dying_scan(redis.url, "died", 1, frames[:3], omega[:3], info)
        out: list[list] = []
        for _ in range(600):  # a safety net: the asserts below say what was missing
            out += src.receive(0.1)
            if src.status()["points"] or src.status()["scan"] == "died_1_fscan":
                break
        FakeBliss(redis.url, tmp_path, session="died").scan(
            "fscan", 2, frames[:4], {"diffrz": omega[:4]}, lima=False, info=info | {
                "npoints": 4, "fscan_parameters": {"motor": "diffrz", "npoints": 4}})
        out += collect(src, ends=2)
    ends = [m for m in map(decode, out) if isinstance(m, End)]
    assert [e.scan_id for e in ends] == ["died_1_fscan", "died_2_fscan"]
    assert ends[0].status == "abort" and "without closing this one" in ends[0].reason
    assert ends[1].status == "success"


@pytest.mark.system  # a daemon killed -9 and started again
def test_restart_mid_scan_continues_the_crashed_file(redis, tmp_path, daemon):
    config = bliss_config(tmp_path, redis.url, "restart",
                          'flush_interval = 0.1\n[workers]\nkind = "inline"\n')
    first = daemon(config, live=False)
    frames, motors, counters = sim_scan("uint16")
    paused, go = threading.Event(), threading.Event()

    def published(n: int) -> None:
        if n == PAUSE:
            paused.set()
            go.wait()

    bliss = FakeBliss(redis.url, tmp_path, session="restart")
    args = ("fscan", 1, frames, {"diffrz": [m["omega"] for m in motors]},
            {"monitor": [c["monitor"] for c in counters]})
    kwargs = {"info": {"fscan_parameters": {"motor": "diffrz", "npoints": len(frames)}},
              "timers": {"epoch": [1.78e9 + 0.1 * i for i in range(len(frames))]}}
    scan = threading.Thread(target=bliss.scan, args=args,
                            kwargs={**kwargs, "published": published})
    scan.start()
    try:
        paused.wait()
        path = tmp_path / "out" / "restart_1_fscan.h5"
        wait_until(lambda: stored_points(path) >= 4, why="a checkpoint with points")
        first.kill()  # SIGKILL: the file stays running
        second = daemon(config, live=False)
    finally:
        go.set()
        scan.join()
    assert completed(path) == "success"
    with open_h5(path) as f:
        entry = f["entry"]
        counts = entry["process/counters"].attrs
        assert int(counts["resumed"]) == 1 and int(counts["kept"]) >= 4  # continued
        assert int(counts["written"]) == len(frames)
        assert int(counts["missing"]) == int(counts["bad"]) == 0
        assert list(entry["points/point_id"][()]) == list(range(len(frames)))
        assert not entry["points/status"][()].any()  # every point ok
        times = entry["points/time"][()]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.h5")) == [path.name]
    assert "scan restart_1_fscan was running when we started" in second.text()
    bliss.scan(*args[:1], 2, *args[2:], **kwargs)  # the same scan, the daemon running on
    uninterrupted = tmp_path / "out" / "restart_2_fscan.h5"
    assert completed(uninterrupted) == "success"
    with open_h5(uninterrupted) as f:  # the points read again from the scan's start too
        assert np.array_equal(times, f["entry/points/time"][()])
