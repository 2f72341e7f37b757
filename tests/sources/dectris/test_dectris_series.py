"""The series state machine over real sockets (connect after arm, abort, restart, stray
parts, no end, other series), the motor join, the flatfield and pixel mask from the
start message (our Start and the correct node), make_source and the emulator's CLI."""

from __future__ import annotations

import re

import h5py
import msgpack
import numpy as np
import pytest

from nodes import Correct
from stream.core.item import Item
from stream.core.messages import DetectorInfo, End, MessageError, Point, Start
from stream.core.scan import Scan
from stream.sources.dectris import NO_HEADER, DectrisSource, make_source
from stream.wire.codec import decode, encode
from tests.support.dectris import (
    as_dense,
    collect,
    collect_until,
    decoded,
    emulator_and_source,
    first_start,
    kinds,
    live_tables,
    read,
    run_emulator_cli,
    send_in_thread,
    sim_scan,
)

SHAPE = (16, 24)
FRAMES = [np.full(SHAPE, 10 * i, np.uint16) + np.arange(24, dtype=np.uint16) for i in range(6)]
MOTORS = [{"omega": 0.25 * i} for i in range(6)]


def points_of(msgs: list, scan_id: str) -> list[Point]:
    return sorted((m for m in msgs if isinstance(m, Point) and m.scan_id == scan_id),
                  key=lambda p: p.point_id)


def ends(msgs: list) -> list[End]:
    return [m for m in msgs if isinstance(m, End)]


def assert_whole_series(msgs: list, scan_id: str, n: int = 6) -> None:
    """The series came through complete and correct."""
    pts = points_of(msgs, scan_id)
    assert [p.point_id for p in pts] == list(range(n))
    for p in pts:
        np.testing.assert_array_equal(as_dense(next(iter(p.frames.values()))),
                                      FRAMES[p.point_id])
    assert ends(msgs)[-1] == End(scan_id, "success", n)


# ------------------------------------------------------------------ the state machine


@pytest.mark.parametrize("version", [1, 2])
def test_connect_after_arm_waits_for_the_next_series(version):
    with emulator_and_source(version, "bslz4", motors_lane=False) as (emu, src):
        for i in range(3):  # the start went out before we connected
            emu.image(1, i, FRAMES[i])
        assert collect_until(src, read(3)) == []
        st = src.status()
        assert (st["state"], st["message"], st["no_header"]) == ("idle", NO_HEADER, 3)
        emu.end(1)
        emu.send_series(FRAMES, series_id=2)
        msgs = decoded(collect(src))
        st = src.status()
    scan = "emu-2" if version == 2 else "series-2"
    assert kinds(msgs)[0] == "Start" and first_start(msgs).scan_id == scan
    assert_whole_series(msgs, scan)
    assert (st["state"], st["message"], st["no_header"], st["series"]) == ("ended", "", 4, 1)


@pytest.mark.parametrize("version", [1, 2])
def test_motors_of_a_series_seen_without_its_start_are_not_joined_to_the_next(version):
    old_motors = [{"omega": 100.0 + i} for i in range(6)]
    scan = "emu-{}" if version == 2 else "series-{}"
    with emulator_and_source(version, "raw", motors=["omega"], join_timeout=5.0) as (emu, src):
        for i in range(6):  # series 1 was armed before we connected
            emu.motors(scan.format(1), i, old_motors[i])
            emu.image(1, i, FRAMES[i])
        emu.end(1)
        assert collect_until(src, read(7, 6)) == []
        emu.send_series(FRAMES, series_id=2, motors=MOTORS)
        msgs = decoded(collect(src))
        emu.send_series(FRAMES, series_id=2, motors=MOTORS)  # the id again (a restart)
        again = decoded(collect(src))
        st = src.status()
    assert_whole_series(msgs, scan.format(2))
    assert [p.motors for p in points_of(msgs, scan.format(2))] == MOTORS
    assert [p.motors for p in points_of(again, scan.format(2))] == MOTORS
    assert st["motor_stale"] == 6 and st["joined"] == 12 and st["without_motors"] == 0


@pytest.mark.parametrize("version", [1, 2])
def test_abort_mid_series_then_a_whole_one(version):
    with emulator_and_source(version, "lz4", motors=["omega"], join_timeout=5.0) as (emu, src):
        send_in_thread(emu, FRAMES, series_id=5, motors=MOTORS, fault="abort").join(10)
        first = decoded(collect(src))
        st1 = src.status()
        send_in_thread(emu, FRAMES, series_id=6, motors=MOTORS).join(10)
        second = decoded(collect(src))
        st2 = src.status()
    scan5 = "emu-5" if version == 2 else "series-5"
    assert [p.point_id for p in points_of(first, scan5)] == [0, 1, 2]
    end = ends(first)[0]
    assert (end.status, end.npoints) == ("abort", 6)
    assert re.search(r"ended series 5 .*after 3 of 6 images", end.reason)
    assert st1["state"] == "aborted" and st1["aborted"] == 1
    assert_whole_series(second, "emu-6" if version == 2 else "series-6")
    assert st2["state"] == "ended" and st2["history"][-2]["state"] == "aborted"


def test_new_start_without_end_aborts_the_old_series():
    with emulator_and_source(2, "raw", motors=["omega"], join_timeout=5.0) as (emu, src):
        send_in_thread(emu, FRAMES, series_id=1, motors=MOTORS, fault="restart").join(10)
        msgs = decoded(collect(src, ends=2))
        st = src.status()
    assert [e.scan_id for e in ends(msgs)] == ["emu-1", "emu-2"]
    old = ends(msgs)[0]
    assert old.status == "abort" and "new series (2) started before the end" in old.reason
    assert len(points_of(msgs, "emu-1")) == 3
    assert_whole_series(msgs, "emu-2")
    assert (st["aborted"], st["ended"], st["state"]) == (1, 1, "ended")
    assert all(p.motors == MOTORS[p.point_id] for p in points_of(msgs, "emu-2"))


@pytest.mark.parametrize("version, broken", [(1, 4), (2, 2)])
def test_stray_parts_after_an_abort_never_break_the_next_series(version, broken):
    with emulator_and_source(version, "bslz4", motors=["omega"],
                             join_timeout=5.0) as (emu, src):
        send_in_thread(emu, FRAMES, series_id=3, motors=MOTORS, fault="stray").join(10)
        msgs = decoded(collect(src, ends=2))
        st = src.status()
    scans = ("emu-3", "emu-4") if version == 2 else ("series-3", "series-4")
    assert [e.status for e in ends(msgs)] == ["abort", "success"]
    assert len(points_of(msgs, scans[0])) == 3
    assert_whole_series(msgs, scans[1])
    assert st["stray"] == 2 and st["malformed"] == broken and st["state"] == "ended"


@pytest.mark.parametrize("version", [1, 2])
def test_end_never_sent_times_out(version):
    with emulator_and_source(version, "raw", motors_lane=False,
                             series_timeout=0.6) as (emu, src):
        # 7 announced, 6 sent (all announced and no end: test_dectris_no_end.py)
        emu.send_series(FRAMES, series_id=8, fault="no-end", nimages=7)
        msgs = decoded(collect(src))
        st = src.status()
        emu.send_series(FRAMES, series_id=9)
        after = decoded(collect(src))
    end = ends(msgs)[0]
    assert (end.status, end.npoints) == ("abort", 7) and end.reason.startswith("timeout")
    assert len(points_of(msgs, end.scan_id)) == 6
    assert (st["state"], st["timed_out"]) == ("timed-out", 1)
    assert_whole_series(after, "emu-9" if version == 2 else "series-9")


def test_messages_of_another_series_are_dropped_and_counted():
    with emulator_and_source(2, "bslz4", motors_lane=False) as (emu, src):
        emu.send_series(FRAMES, series_id=20, fault="other-series")
        emu.end(120)  # the other series ends after ours: it never had a header
        msgs = decoded(collect(src))
        msgs += decoded(collect_until(src, read(12)))  # the other series' parts too
        st = src.status()
    assert_whole_series(msgs, "emu-20")
    assert (st["other_series"], st["no_header"], st["stray"], st["series"]) == (3, 1, 0, 1)


def test_a_series_without_images_sends_nothing():
    with emulator_and_source(2, "raw", motors_lane=False) as (emu, src):
        emu.arm(30, SHAPE, nimages=4)
        emu.end(30)
        assert collect_until(src, read(2)) == []
        st = src.status()
    assert (st["state"], st["empty"], st["aborted"]) == ("aborted", 1, 1)


# ------------------------------------------------------------------ motors


def test_points_without_motors_go_on_flagged_and_late_motors_are_counted():
    with emulator_and_source(2, "raw", motors=["omega"], counters=["monitor"],
                             join_timeout=0.3) as (emu, src):
        emu.send_series(FRAMES, series_id=1, motors=MOTORS, skip_motors={1, 3},
                        counters=[{"monitor": 5.0}] * 6, fault="no-end")
        msgs = decoded(collect_until(src, lambda st: st["points"] >= 6))
        emu.motors("emu-1", 3, MOTORS[3])  # too late: point 3 went on
        msgs += decoded(collect_until(src, read(7, 5)))  # (read before the end is)
        emu.end(1)
        msgs += decoded(collect(src))
        st = src.status()
    pts = points_of(msgs, "emu-1")
    assert [p.point_id for p in pts] == list(range(6))
    for p in pts:
        if p.point_id in (1, 3):
            assert p.motors == {} and p.counters == {}
            assert "motors: none came within 0.3 s" in p.extra["flags"][0]
        else:
            assert p.motors == MOTORS[p.point_id] and p.counters == {"monitor": 5.0}
            assert "flags" not in p.extra
    assert (st["joined"], st["without_motors"], st["motor_late"]) == (4, 2, 1)
    assert first_start(msgs).motors == ["omega"]


def test_a_series_none_of_whose_points_got_motors_fails_and_keeps_its_peaks(tmp_path):
    """No motor position for any point: the scan cannot be placed, so it ends fail (not
    success) with what came on the motor lane and what to check; its file still holds
    every point and its peaks. One point with motors and the series is a success."""
    frames, motors, _ = sim_scan()
    n = len(frames)
    with emulator_and_source(2, "bslz4", motors=["omega"], join_timeout=0.2) as (emu, src):
        emu.send_series(frames, series_id=1, skip_motors=range(n))
        nothing = collect(src)
        emu.send_series(FRAMES, series_id=2, skip_motors=range(6), fault="no-end")
        wrong = decoded(collect_until(src, lambda st: st["points"] >= n + 6))
        emu.motors("emu-2", 0, MOTORS[0])  # its image went on without it: late
        emu.motors("emu-2", 600, MOTORS[1])  # no such image
        wrong += decoded(collect_until(src, read(n + 9, 2)))  # (series 1: n + 2)
        emu.end(2)
        wrong += decoded(collect(src))
        emu.send_series(FRAMES, series_id=3, motors=MOTORS, skip_motors=range(1, 6))
        one = decoded(collect(src))
        st = src.status()
    end = ends(decoded(nothing))[0]
    assert (end.status, end.npoints) == ("fail", n)
    assert f"no motor position came for any of the {n} points of series 1" in end.reason
    assert "none came" in end.reason and src.endpoint_bound in end.reason
    assert "[source] listen" in end.reason and "join_timeout" in end.reason
    end = ends(wrong)[0]
    assert end.status == "fail" and "of the 6 points of series 2" in end.reason
    assert "1 came for image numbers the series did not have" in end.reason
    assert "1 came after their image had gone on" in end.reason
    assert ends(one)[0] == End("emu-3", "success", 6)
    assert [h["status"] for h in st["history"]] == ["fail", "fail", "success"]
    table, result = live_tables(tmp_path, nothing)
    assert result["status"] == "fail" and result["reason"] == ends(decoded(nothing))[0].reason
    assert (result["processed"], result["bad"]) == (n, 0)
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry"].attrs["status"] == "fail"
        assert "no motor position came" in f["entry"].attrs["reason"]
    assert table["points"]["point_id"].tolist() == list(range(n))
    assert (table["points"]["status"] == 0).all()  # every point kept, flagged, not bad
    assert len(set(table["peaks2d"]["point_id"].tolist())) > n // 2


def test_motor_lane_keeps_working_through_bad_messages():
    with emulator_and_source(2, "raw", join_timeout=5.0) as (emu, src):
        emu.motor_socket.send(b"\x00garbage")
        emu.motor_socket.send_multipart(encode(Start("x", {"d": DetectorInfo((2, 2),
                                                                            "uint8")})))
        emu.send_series(FRAMES, series_id=1, motors=MOTORS, motor_scan_id="bliss-17")
        msgs = decoded(collect(src))
        emu.motors("bliss-17", 0, MOTORS[0])  # its series has closed: stale
        collect_until(src, read(8, 9))
        st = src.status()
    pts = points_of(msgs, "emu-1")
    assert [p.motors for p in pts] == MOTORS  # joined under the motor lane's own scan id
    assert first_start(msgs).motors == ["omega"]  # named by the first point's motors
    assert (st["motor_malformed"], st["motor_ignored"], st["motor_stale"]) == (1, 1, 1)


def test_without_a_motor_lane_points_carry_no_motors_and_no_flags():
    with emulator_and_source(1, "raw", "none", motors_lane=False) as (emu, src):
        emu.send_series(FRAMES, series_id=2)
        msgs = decoded(collect(src))
        assert src.endpoint_bound == "" and len(src.sockets) == 1
    pts = points_of(msgs, "series-2")
    assert len(pts) == 6 and all(p.motors == {} and "flags" not in p.extra for p in pts)
    assert first_start(msgs).npoints is None and ends(msgs)[0].npoints == 6


# ------------------------------------------------------------------ flatfield and pixel mask


def detector_maps():
    flat = np.linspace(0.8, 1.2, SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
    flat[0, 0] = 0.0  # not usable: excluded
    mask = np.zeros(SHAPE, np.uint32)
    mask[2, 3], mask[5, 7] = 1, 4
    return flat, mask


@pytest.mark.parametrize("version, applied", [(2, False), (2, True), (1, False), (1, True)])
def test_start_carries_the_detector_maps(version, applied):
    flat, mask = detector_maps()
    with emulator_and_source(version, "raw", "all", motors_lane=False) as (emu, src):
        emu.send_series(FRAMES, series_id=1, flatfield={"threshold_1": flat},
                        pixel_mask={"threshold_1": mask}, flatfield_enabled=applied)
        parts = collect(src)
    start = decode(parts[0])  # through the wire encoding: the maps are extra parts
    assert len(parts[0]) == (2 if applied else 3)
    info = next(iter(start.detectors.values()))
    np.testing.assert_array_equal(info.pixel_mask, mask)
    if applied:  # the detector corrected the frames already: not applied twice
        assert info.flatfield is None and start.meta["flatfield_applied"] is True
    else:
        np.testing.assert_array_equal(info.flatfield, flat)


def test_correct_node_uses_the_detector_maps_unless_it_has_its_own():
    flat, mask = detector_maps()
    start = Start("s", {"eiger": DetectorInfo(SHAPE, "uint16", flatfield=flat,
                                              pixel_mask=mask)})
    scan = decode(encode(start))
    raw = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(SHAPE)
    node = Correct(dark=1.0)
    node.setup(Scan.from_start(scan))
    out = node.process(Item(0, "eiger", frame=raw)).frame
    expect = (raw.astype(np.float32) - 1) * flat  # DECTRIS flatfield: a multiplier
    expect[(mask != 0) | (flat <= 0)] = np.nan
    np.testing.assert_array_equal(out, expect)
    assert node.detector_maps == ("flatfield", "pixel_mask")

    own = Correct(flat=np.full(SHAPE, 2.0))  # its own flat wins; the mask is the detector's
    own.setup(Scan.from_start(scan))
    out = own.process(Item(0, "eiger", frame=raw)).frame
    expect = raw.astype(np.float32) * np.float32(0.5)
    expect[mask != 0] = np.nan
    np.testing.assert_array_equal(out, expect)

    node.setup(Scan.from_start(Start("t", {"eiger": DetectorInfo(SHAPE, "uint16")})))
    out = node.process(Item(0, "eiger", frame=raw)).frame  # a scan without maps: its own
    np.testing.assert_array_equal(out, raw.astype(np.float32) - 1)
    assert node.detector_maps == () and node.mask is None


@pytest.mark.parametrize("change, reason", [
    ({"part": 5}, "does not name"),
    ({"shape": [4, 4]}, "is not the frames'"),
    ({"dtype": "int64"}, "dtype 'int64'"),
    ({"dtype": "float64"}, "buffer has"),
])
def test_bad_detector_maps_in_a_start_say_why(change, reason):
    flat, _ = detector_maps()
    parts = encode(Start("s", {"eiger": DetectorInfo(SHAPE, "uint16", flatfield=flat)}))
    header = msgpack.unpackb(parts[0])
    header["detectors"]["eiger"]["flatfield"].update(change)
    with pytest.raises(MessageError, match=reason):
        decode([msgpack.packb(header), *parts[1:]])


# ------------------------------------------------------------------ config and CLI


def test_make_source_from_a_source_table():
    src = make_source({"kind": "dectris", "detector_endpoint": "tcp://127.0.0.1:9",
                       "stream_version": 1, "listen": "tcp://127.0.0.1:0",
                       "motors": ["omega"], "counters": ["monitor"], "join_timeout": 1,
                       "series_timeout": 5.0, "rcvhwm": 8,
                       "trajectory": {"kind": "sweep", "fast": "omega"}})
    try:
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", src.endpoint_bound)
        assert not src.endpoint_bound.endswith(":0") and len(src.sockets) == 2
        st = src.status()
        assert (st["state"], st["stream_version"], st["listen"]) == ("idle", 1,
                                                                     src.endpoint_bound)
    finally:
        src.close()
    for table, reason in (({"detector_endpoint": "tcp://h:1", "port": 3}, "unknown key"),
                          ({}, "detector_endpoint"),
                          ({"detector_endpoint": "tcp://h:1", "stream_version": 3}, "1 or 2"),
                          ({"detector_endpoint": "tcp://h:1", "join_timeout": "2"},
                           "wrong type"),
                          ({"detector_endpoint": "tcp://h:1",
                            "trajectory": {"kind": "sweep", "speed": 1}}, "speed")):
        with pytest.raises(ValueError, match=reason):
            make_source({"kind": "dectris", **table})


@pytest.mark.system
def test_emulator_command_line():
    def receive(first: str) -> list:
        m = re.search(r"stream v2, on (tcp://\S+)", first)
        assert m, first
        with DectrisSource(endpoint=m.group(1), version=2) as src:
            return decoded(collect(src))

    msgs, first, out, err, code = run_emulator_cli(
        ["--version", "2", "--encoding", "bslz4", "--simulate", "32", "--shape", "128", "160",
         "--channels", "2", "--wait", "0.5"], receive)
    assert code == 0, err
    assert "series 1: 32 images" in out
    assert kinds(msgs) == ["Start"] + ["Point"] * 32 + ["End"]
    start = first_start(msgs)
    assert list(start.detectors) == ["eiger2_si_4m_threshold_1", "eiger2_si_4m_threshold_2"]
    assert start.detectors["eiger2_si_4m_threshold_1"].shape == (128, 160)
    assert start.meta["channels"] == {f"eiger2_si_4m_threshold_{c}": f"threshold_{c}"
                                      for c in (1, 2)}
    for p in msgs[1:-1]:
        t1, t2 = (as_dense(p.frames[k]) for k in start.detectors)
        np.testing.assert_array_equal(t2, t1 // 2)


def test_make_source_with_the_config_defaults_takes_names_from_the_motor_lane():
    from stream.sources.dectris.emulator import DetectorEmulator

    with DetectorEmulator(version=2, encoding="lz4") as emu:
        src = make_source({"kind": "dectris", "detector_endpoint": emu.endpoint,
                           "stream_version": 2, "listen": "tcp://127.0.0.1:0", "motors": [],
                           "counters": [], "trajectory": {}, "join_timeout": 5.0,
                           "series_timeout": 30.0, "rcvhwm": 64})
        try:
            emu.connect_motors(src.endpoint_bound)
            emu.send_series(FRAMES, series_id=3, motors=MOTORS,
                            counters=[{"monitor": 1e4}] * 6)
            msgs = decoded(collect(src))
        finally:
            src.close()
    start = first_start(msgs)
    assert (start.motors, start.counters) == (["omega"], ["monitor"])
    assert start.trajectory == {"kind": "sweep", "fast": "omega"}
    assert_whole_series(msgs, "emu-3")


# ------------------------------------------------------------------ no motor lane


@pytest.mark.parametrize("version", [1, 2])
def test_a_detector_on_its_own_gives_omega_from_its_start_message(version):
    """No motor lane: omega = start + increment x image number from the series' start
    (v2 goniometer, v1 omega_start / omega_increment); no point flagged; the scan id
    and sample from v2's user_data."""
    fields = ({"goniometer": {"omega": {"start": 10.0, "increment": 0.25},
                              "phi": {"start": 5.0, "increment": 0.0}},
               "user_data": {"scan_id": "s0042", "sample": "ruby"}} if version == 2 else
              {"omega_start": 10.0, "omega_increment": 0.25})
    with emulator_and_source(version, "raw", motors_lane=False) as (emu, src):
        emu.start_fields = fields
        emu.send_series(FRAMES, series_id=3)
        msgs = decoded(collect(src))
    start = first_start(msgs)
    scan = "s0042" if version == 2 else "series-3"
    assert start.scan_id == scan
    assert "omega" in start.motors and start.trajectory == {"kind": "sweep", "fast": "omega"}
    pts = points_of(msgs, scan)
    assert [p.motors["omega"] for p in pts] == [10.0 + 0.25 * i for i in range(6)]
    assert not any(p.extra.get("flags") for p in pts)
    if version == 2:
        assert start.meta["sample"] == "ruby"
        assert [p.motors["phi"] for p in pts] == [5.0] * 6
    assert_whole_series(msgs, scan)


def test_a_detector_on_its_own_without_a_goniometer_is_flagged():
    with emulator_and_source(2, "raw", motors_lane=True) as (emu, src):
        emu.send_series(FRAMES, series_id=4, skip_motors=range(6))
        msgs = decoded(collect(src, limit=30.0))
    pts = points_of(msgs, "emu-4")
    assert len(pts) == 6 and all(p.extra.get("flags") for p in pts)
    assert all("omega" not in p.motors for p in pts)


def test_detector_named_after_its_description_then_serial():
    from stream.sources.dectris.common import detector_base, detector_name

    assert detector_base({"detector_description": "Dectris EIGER2 CdTe 9M"}, "eiger") \
        == "eiger2_cdte_9m"
    assert detector_base({"description": "  ", "detector_number": "E-08-0106"}, "eiger") \
        == "e_08_0106"
    assert detector_base({"detector_serial_number": "0106"}, "eiger") == "d_0106"
    assert detector_base({}, "eiger") == "eiger"
    assert detector_name("eiger2_cdte_9m", "threshold_1", 1) == "eiger2_cdte_9m"
    assert detector_name("eiger2_cdte_9m", "threshold_2", 2) == "eiger2_cdte_9m_threshold_2"


@pytest.mark.system
def test_emulator_motor_points_reach_a_motor_lane_bound_after_it_started(tmp_path):
    """The emulator started before the processor (a daemon still warming up): its motor
    points queue for a lane not yet bound and must reach it once bound, not be dropped
    when the emulator exits after its last image (all 60 points went on without motors)."""
    motors, detector = f"ipc://{tmp_path}/motors.sock", f"ipc://{tmp_path}/detector.sock"
    status = {}

    def receive(first: str) -> list:
        assert "emulating" in first  # bound, its first motor point queued
        with DectrisSource(endpoint=detector, version=2, listen=motors,
                           join_timeout=30.0) as src:
            msgs = decoded(collect(src))
            status.update(src.machine.status())
        return msgs

    msgs, _, _, err, code = run_emulator_cli(
        ["--endpoint", detector, "--simulate", "20", "--shape", "128", "160", "--spots", "3",
         "--motors-to", motors], receive)
    assert code == 0, err
    points = [m for m in msgs if type(m).__name__ == "Point"]
    assert len(points) == 20 and all("omega" in p.motors for p in points), points[:2]
    assert status["without_motors"] == 0
