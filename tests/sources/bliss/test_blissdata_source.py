"""The blissdata source against a real Redis server (valkey + RedisJSON + RediSearch),
scans published with blissdata's own writer API by a helper that acts as Bliss: the
same cliques as replaying the frames from the Lima files, Bliss's aborts, late frame
files, open-ended and back-to-back scans, a lost server."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stream.core.messages import End, Point, Start
from stream.sources.blissdata import BlissdataSource
from stream.wire.codec import decode
from tests.support.bliss import FakeBliss, collect, lima_frames, replay_files, run_messages
from tests.support.dectris import assert_same_cliques, sim_scan

FSCAN = {"fscan_parameters": {"motor": "diffrz", "start_pos": 0.0, "step_size": 0.25,
                              "npoints": 32}}


def sweep():
    frames, motors, counters = sim_scan("uint16")
    return (frames, {"diffrz": [m["omega"] for m in motors]},
            {"monitor": [c["monitor"] for c in counters]})


def source(redis, **kw) -> BlissdataSource:
    args = dict(redis_url=redis.url, motors=["omega"], counters=["monitor"],
                channels={"omega": "axis:diffrz"})
    return BlissdataSource(**{**args, **kw})


def publish(bliss: FakeBliss, *args, **kw) -> threading.Thread:
    t = threading.Thread(target=bliss.scan, args=args, kwargs=kw, daemon=True)
    t.start()
    return t


def messages(src, t, ends=1) -> list[list]:
    out = collect(src, ends)
    t.join(30)
    return out


def test_sweep_scan_gives_the_cliques_of_replaying_its_lima_files(redis, tmp_path):
    frames, axes, counters = sweep()
    with source(redis) as src:
        out = messages(src, publish(FakeBliss(redis.url, tmp_path), "fscan", 1, frames, axes,
                                    counters, info=FSCAN))
    msgs = [decode(p) for p in out]
    start = msgs[0]
    assert isinstance(start, Start) and start.scan_id == "demo_1_fscan"
    assert start.npoints == 32 and start.trajectory == {"kind": "sweep", "fast": "omega"}
    assert start.motors == ["omega"] and start.counters == ["monitor"]
    assert start.detectors["eiger"].shape == (128, 160)
    points = [m for m in msgs if isinstance(m, Point)]
    assert [p.point_id for p in points] == list(range(32))
    assert [p.motors["omega"] for p in points] == axes["diffrz"]
    assert [p.counters["monitor"] for p in points] == counters["monitor"]
    assert msgs[-1] == End("demo_1_fscan", "success", 32, "")
    on_disk = lima_frames(tmp_path, "demo_1_eiger_*.h5")
    assert np.array_equal(np.stack([p.frames["eiger"] for p in points]), on_disk)
    live = run_messages(tmp_path, out)
    assert live[0]["status"] == "success" and live[0]["processed"] == 32
    reference = replay_files(tmp_path, on_disk, {"omega": axes["diffrz"]}, counters,
                             {"kind": "sweep", "fast": "omega"})
    assert_same_cliques(live[0]["tables"], reference)


@pytest.mark.parametrize("described", [True, False], ids=["fscan2d", "derived"])
def test_dty_by_omega_scan_is_a_grid(redis, tmp_path, described):
    frames, axes, counters = sweep()
    omega = list(np.tile(np.arange(8) * 0.25, 4))
    dty = list(np.repeat(np.arange(4) * 1.0 - 1.5, 8))
    info = {"fscan_parameters": {"fast_motor": "diffrz", "fast_npoints": 8,
                                 "slow_motor": "dty", "slow_npoints": 4,
                                 "fast_motor_mode": "REWIND"}} if described else {}
    number = 2 if described else 3
    with source(redis, motors=["omega", "dty"], derive_points=16) as src:
        out = messages(src, publish(FakeBliss(redis.url, tmp_path), "fscan2d", number, frames,
                                    {"diffrz": omega, "dty": dty}, counters, info=info))
    start = decode(out[0])
    assert start.trajectory["kind"] == "grid" and start.trajectory["nfast"] == 8
    assert start.trajectory["fast"] == "omega" and start.trajectory["slow"] == "dty"
    live = run_messages(tmp_path, out)
    assert live[0]["status"] == "success" and live[0]["processed"] == 32
    reference = replay_files(tmp_path, lima_frames(tmp_path, f"demo_{number}_eiger_*.h5"),
                             {"omega": omega, "dty": dty}, counters, start.trajectory)
    assert_same_cliques(live[0]["tables"], reference)


def test_a_scan_bliss_aborts_ends_abort_with_the_points_it_had(redis, tmp_path):
    frames, axes, counters = sweep()
    with source(redis) as src:
        out = messages(src, publish(FakeBliss(redis.url, tmp_path), "fscan", 4, frames, axes,
                                    counters, info=FSCAN, abort_after=10))
    msgs = [decode(p) for p in out]
    assert [m.point_id for m in msgs if isinstance(m, Point)] == list(range(10))
    end = msgs[-1]
    assert end.status == "abort" and "USER_ABORT" in end.reason and end.npoints == 32
    live = run_messages(tmp_path, out)
    # the end says the start's npoints: the runner took it without a protocol complaint
    # ("end: npoints 10 is not the start's 32", an event rejected)
    assert (live[0]["status"], live[0]["reason"]) == ("abort", "bliss end_reason USER_ABORT")
    assert live[0]["rejected"] == 0 and live[0]["missing"] == 22
    assert "rejected" not in set(live[0]["tables"]["events"]["kind"])


def test_a_frame_file_late_on_disk_is_waited_for(redis, tmp_path):
    frames, axes, counters = sweep()
    with source(redis, frame_timeout=30.0) as src:
        out = messages(src, publish(FakeBliss(redis.url, tmp_path), "fscan", 5, frames, axes,
                                    counters, info=FSCAN, late_files={1: 2.0}))
        retries = src.status()["frame_retries"]
    points = [m for m in map(decode, out) if isinstance(m, Point)]
    assert [p.point_id for p in points] == list(range(32)) and retries > 0
    assert not any("error" in p.extra for p in points)
    on_disk = lima_frames(tmp_path, "demo_5_eiger_*.h5")
    assert np.array_equal(np.stack([p.frames["eiger"] for p in points]), on_disk)


def test_a_frame_file_that_never_comes_makes_bad_points_with_the_reason(redis, tmp_path):
    frames, axes, counters = sweep()
    with source(redis, frame_timeout=0.5) as src:
        out = messages(src, publish(FakeBliss(redis.url, tmp_path), "fscan", 6, frames, axes,
                                    counters, info=FSCAN, late_files={2: float("inf")}))
    points = [m for m in map(decode, out) if isinstance(m, Point)]
    bad = [p.point_id for p in points if "error" in p.extra]
    assert bad == [8, 9, 10, 11] and len(points) == 32
    assert "demo_6_eiger_0002.h5 not readable within 0.5 s" in points[8].extra["error"]
    live = run_messages(tmp_path, out)
    assert live[0]["bad"] == 4 and live[0]["processed"] == 28
    status = live[0]["tables"]["points"]["status"]
    assert list(np.flatnonzero(status != status[0])) == [8, 9, 10, 11]


def test_two_scans_in_a_row_one_open_ended_with_frames_in_the_stream(redis, tmp_path):
    frames, axes, counters = sweep()
    bliss = FakeBliss(redis.url, tmp_path)

    def both():
        bliss.scan("fscan", 7, frames, axes, counters, info=FSCAN)
        bliss.scan("timescan", 8, frames[:12], {k: v[:12] for k, v in axes.items()},
                   {k: v[:12] for k, v in counters.items()}, info={"type": "timescan"},
                   lima=False, npoints=None)

    with source(redis) as src:
        out = messages(src, _thread(both), ends=2)
    msgs = [decode(p) for p in out]
    starts = [m for m in msgs if isinstance(m, Start)]
    ends = [m for m in msgs if isinstance(m, End)]
    assert [s.scan_id for s in starts] == ["demo_7_fscan", "demo_8_timescan"]
    assert starts[1].npoints is None and starts[1].trajectory["kind"] == "sweep"
    assert [(e.status, e.npoints) for e in ends] == [("success", 32), ("success", 12)]
    second = [m for m in msgs if isinstance(m, Point) and m.scan_id == "demo_8_timescan"]
    assert np.array_equal(np.stack([p.frames["eiger"] for p in second]), np.stack(frames[:12]))
    live = run_messages(tmp_path, out)
    assert [r["status"] for r in live] == ["success", "success"]


def _thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_redis_lost_mid_scan_ends_it_abort_with_the_reason(tmp_path):
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    from tests.support.redis import redis_server

    frames, axes, _ = sweep()
    with redis_server(tmp_path) as server:
        src = source(server, counters=[], reconnect_timeout=1.0)
        try:
            scan = DataStore(server.url).create_scan(
                {"name": "fscan", "number": 9, "data_policy": "no_policy", "session": "demo"},
                info={"npoints": 32, **FSCAN})
            image = scan.create_stream(Stream.make_definition("eiger:image", "uint16",
                                                              frames[0].shape))
            rot = scan.create_stream(Stream.make_definition("axis:diffrz", "float64"))
            scan.prepare()
            scan.start()
            for i in range(5):
                image.send(frames[i][None])
                rot.send(np.array([axes["diffrz"][i]]))
            got: list = []
            for _ in range(600):  # a safety net: the assert below says what was missing
                got += src.receive(0.1)
                if sum(isinstance(decode(p), Point) for p in got) == 5:
                    break
            server.stop()  # the server dies mid-scan and does not come back
            got += collect(src)
            status = src.status()
        finally:
            src.close()
    msgs = [decode(p) for p in got]
    assert [m.point_id for m in msgs if isinstance(m, Point)] == list(range(5))
    end = msgs[-1]
    assert isinstance(end, End) and end.status == "abort" and end.npoints == 32
    assert "redis connection lost and not back within 1 s" in end.reason
    assert status["reconnects"] >= 1 and "redis connection lost" in status["last_error"]


def test_connection_lost_mid_scan_and_back_the_scan_goes_on_where_it_was(redis, tmp_path):
    import redis as redis_py
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    frames, axes, _ = sweep()
    src = source(redis, counters=[], reconnect_timeout=60.0)
    admin = redis_py.Redis.from_url(redis.url)
    try:
        scan = DataStore(redis.url).create_scan(
            {"name": "fscan", "number": 10, "data_policy": "no_policy", "session": "demo"},
            info={"npoints": 10, **FSCAN})
        image = scan.create_stream(Stream.make_definition("eiger:image", "uint16",
                                                          frames[0].shape))
        rot = scan.create_stream(Stream.make_definition("axis:diffrz", "float64"))
        scan.prepare()
        scan.start()

        def publish(lo, hi):
            image.send(np.stack(frames[lo:hi]))
            rot.send(np.asarray(axes["diffrz"][lo:hi]))

        publish(0, 5)
        got: list = []
        for _ in range(600):  # safety nets: the asserts below say what was missing
            got += src.receive(0.1)
            if sum(isinstance(decode(p), Point) for p in got) == 5:
                break
        for _ in range(600):  # the network drops the source's connection (not Bliss's)
            for c in admin.client_list():
                if c.get("cmd") in ("xread", "xreadgroup"):
                    admin.client_kill_filter(_id=c["id"])
            got += src.receive(0.1)
            if src.status()["reconnects"]:
                break
        publish(5, 10)
        for s in (image, rot):
            s.seal()
        scan.stop()
        scan.info["end_reason"] = "SUCCESS"
        scan.close()
        got += collect(src)
        status = src.status()
    finally:
        src.close()
        admin.close()
    msgs = [decode(p) for p in got]
    points = [m for m in msgs if isinstance(m, Point)]
    assert [p.point_id for p in points] == list(range(10))
    assert np.array_equal(np.stack([p.frames["eiger"] for p in points]), np.stack(frames[:10]))
    assert msgs[-1] == End("demo_10_fscan", "success", 10, "")
    assert status["reconnects"] >= 1 and "redis connection lost" in status["last_error"]
    assert "(recovered at " in status["last_error"]  # it stayed as if still lost


def test_a_bliss_pause_longer_than_end_timeout_keeps_the_scan_open(redis, tmp_path):
    """A refill or a user pause: Bliss publishes nothing for longer than the runner's
    end_timeout but keeps its scan open. The runner aborted it on end_timeout and
    rejected every later point ("no scan is open"); the source follows it until Bliss
    closes it, so the runner waits with it."""
    from stream.config.schema import Config
    from stream.run.runner import ScanRunner
    from tests.support.bliss import follow
    from tests.support.paths import CONFIGS

    config = Config.load(CONFIGS / "simulated.toml")
    config.override("source", "end_timeout", 0.5)
    runner = ScanRunner(config, output_dir=tmp_path / "out")
    frames, axes, counters = sweep()
    with source(redis) as src:
        t = publish(FakeBliss(redis.url, tmp_path), "fscan", 11, frames, axes, counters,
                    info=FSCAN, pause_at=20, pause=2.5)
        results = follow(runner, src)
        t.join(30)
    runner.close()
    assert [(r["status"], r["reason"]) for r in results] == [("success", "")]
    assert results[0]["processed"] == 32 and results[0]["written"] == 32
    assert results[0]["rejected"] == 0 and results[0]["missing"] == 0
