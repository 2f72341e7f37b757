"""A sender that sends its scan again (a restart): the open scan's own start again is
a duplicate that changes nothing; a point that comes after it was recorded missing is
dropped with that reason (replay --fill completes the scan); a valid copy of a point
the workers found bad replaces it until the linker has taken it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream.config.schema import Config
from stream.core.encoded import compress
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load, summary
from stream.wire.codec import encode
from tests.support.flow import SIMCONF, reference_tables, tables, workers_config
from tests.support.paths import CONFIGS


def test_the_same_start_again_is_the_same_scan(tmp_path):
    sim, n = Simulation(SIMCONF), SIMCONF.npoints
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=tmp_path / "s.h5")
    runner.handle(encode(sim.start("ref")))
    for i in range(n // 2):
        runner.handle(encode(sim.point(i, "ref")))
    runner.handle(encode(sim.start("ref")))  # the sender starts over
    for i in range(n):  # its first half again: duplicates
        runner.handle(encode(sim.point(i, "ref")))
    runner.handle(encode(sim.end("ref", n)))
    totals = dict(runner.status())
    runner.close()
    (result,) = runner.results
    assert totals["accepted"] == totals["processed"] == n  # the process's totals add up
    assert result["status"] == "success" and result["duplicate"] == 1 + n // 2, result
    (tmp_path / "ref").mkdir()
    ref, got = reference_tables(tmp_path / "ref"), tables(tmp_path / "s.h5")
    for name in ("points", "links", "sparse", "peaks2d", "overlaps", "cliques"):
        for col in ref[name]:  # (the events hold the duplicates)
            assert np.array_equal(ref[name][col], got[name][col],
                                  equal_nan=ref[name][col].dtype.kind == "f"), (name, col)
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_dir=tmp_path / "o")
    runner.handle(encode(sim.start("ref")))
    runner.handle(encode(sim.point(0, "ref")))
    other = dataclasses.replace(sim.start("ref"), npoints=n + 1)  # not the same scan
    runner.handle(encode(other))  # so the open one ends abort
    assert runner.results[0]["status"] == "abort" and "new start" in runner.results[0]["reason"]
    runner.close()


def test_a_point_after_it_was_recorded_missing_says_so(tmp_path):
    sim = Simulation(SIMCONF)
    config = Config.load(CONFIGS / "simulated.toml")
    config["source"]["reorder_window"] = 4
    runner = ScanRunner(config, output_file=tmp_path / "s.h5")
    runner.handle(encode(sim.start("m")))
    for i in [0, *range(6, 20), 3, 12]:  # 1..5 pass the window: missing; 3 comes late
        runner.handle(encode(sim.point(i, "m")))
    runner.close()
    events = load(tmp_path / "s.h5")["events"]
    text = dict(zip(events["point_id"].tolist(), events["message"].tolist(), strict=False))
    late = [m for p, m in zip(events["point_id"], events["message"], strict=True)
            if "came after it was recorded missing" in str(m)]
    assert len(late) == 1 and "point 3:" in str(late[0]) and "--fill" in str(late[0])
    assert text[3] == late[0]  # the event names its point
    assert any("point 12: already received (a duplicate" in str(m)
               for m in events["message"]), text
    assert np.count_nonzero(load(tmp_path / "s.h5")["points"]["status"] == 1) >= 5


def test_a_scan_resent_after_it_ended_incomplete_names_the_earlier_file(tmp_path, caplog):
    sim, n = Simulation(SIMCONF), SIMCONF.npoints
    config = Config.load(CONFIGS / "simulated.toml")
    config["output"]["pattern"] = "{sample}_{scan_number:04d}_{scan_id}.h5"
    runner = ScanRunner(config, output_dir=tmp_path)

    def send(scan_id, points):
        runner.handle(encode(sim.start(scan_id)))
        for i in points:
            runner.handle(encode(sim.point(i, scan_id)))
        runner.handle(encode(sim.end(scan_id, n)))

    def earlier_warnings():
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and "an earlier file" in r.getMessage()]

    with caplog.at_level("WARNING"):
        send("rec", [i for i in range(n) if i not in (20, 21)])  # two points lost
        assert not earlier_warnings()  # the first file of the scan: nothing to say
        link = tmp_path / "unknown_0001_rec-link.h5"  # a link is never opened
        link.symlink_to(runner.results[0]["file"])
        send("rec", range(n))  # the whole scan again: a second file
        send("other", range(4))
    runner.close()
    first, second, other = (Path(r["file"]) for r in runner.results)
    assert [r["status"] for r in runner.results] == ["incomplete", "success", "incomplete"]
    assert first != second and first.is_file() and second.is_file()
    (text,) = earlier_warnings()  # not for "other", nor for the link
    assert str(first) in text and str(second) in text, text
    assert "ended incomplete (2 missing points)" in text, text
    assert f"peakstream replay RECORDING --fill {first}" in text, text


def bslz4_point(sim: Simulation, i: int, scan_id: str, corrupt: bool = False) -> list:
    """Point i's message with its frame as bslz4; `corrupt`: its first block's size field
    runs past the data, so that the frame does not decode (bad at the worker: the
    receiver does not decode frames)."""
    point = sim.point(i, scan_id)
    (name, frame), = point.frames.items()
    enc = compress(frame, "bslz4")
    if corrupt:
        data = bytearray(enc.buffer)
        data[12:16] = b"\x7f\xff\xff\xff"
        enc = dataclasses.replace(enc, buffer=memoryview(bytes(data)))
    point.frames = {name: enc}
    return encode(point)


@pytest.mark.system
def test_a_valid_copy_replaces_a_point_found_bad_until_the_linker_takes_it(run_process,
                                                                             tmp_path):
    """Inline workers: each message is processed before the next is read. Point 6 is found
    bad while point 5 has not come (held, not linked): its valid copy replaces it. Point
    10 is found bad when every point before it is in: linked at once, its copy is a
    duplicate and it stays bad."""
    sim, n = Simulation(SIMCONF), SIMCONF.npoints
    run = run_process(workers_config(tmp_path, "inline", name="resend"), "--scans", "1")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 10_000)
    push.connect(run.endpoint)
    order = [*range(5), (6, True), 6, 5, *range(7, 10), (10, True), 10, *range(11, n)]
    try:
        push.send_multipart(encode(sim.start("again")))
        for p in order:
            i, corrupt = p if isinstance(p, tuple) else (p, False)
            push.send_multipart(bslz4_point(sim, i, "again", corrupt))
        push.send_multipart(encode(sim.end("again", n)))
        rc, _, err = run.wait()
    finally:
        push.close()
    assert rc == 0, err
    t = tables(tmp_path / "out" / "again.h5")
    assert t["points"]["status"].tolist() == [2 if i == 10 else 0 for i in range(n)]
    c = t["counters"]
    assert (c["accepted"], c["processed"], c["bad"], c["duplicate"]) == (n, n - 1, 1, 1), c
    events = {(k, p): str(m) for k, p, m in zip(t["events"]["kind"], t["events"]["point_id"],
                                                 t["events"]["message"], strict=True)}
    assert "a later message replaces the one found bad (node " in events["replaced", 6]
    assert "bslz4 frame: block 0" in events["replaced", 6]
    assert "already received (a duplicate" in events["duplicate", 10]
    assert ("replaced", 10) not in events and ("bad", 6) not in events
    s = summary(tmp_path / "out" / "again.h5")  # the first bad point is 10, not 6
    assert s["status"] == "incomplete" and "point 10: node " in s["reason"], s["reason"]
