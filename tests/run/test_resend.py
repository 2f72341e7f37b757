"""A sender that sends its scan again (a restart): the open scan's own start again is
a duplicate that changes nothing; a point that comes after it was recorded missing is
dropped with that reason (replay --fill completes the scan)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.flow import SIMCONF, reference_tables, tables
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
