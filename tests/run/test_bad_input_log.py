"""Bad input is logged within a limit per scan: the first 20 of each kind since the
last start, then every 1000th. The limit was per process, so a long-running daemon
stopped logging malformed input after its 20th, for every later scan."""

from __future__ import annotations

import dataclasses
import logging

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS


def test_each_scan_logs_its_own_first_malformed_messages(tmp_path, caplog):
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_dir=tmp_path)
    caplog.set_level(logging.WARNING, logger="stream.run.openscan")
    runner.handle(encode(sim.start("first")))
    for _ in range(25):
        runner.handle([b"\xc1first"])
    logged_first = [r for r in caplog.records if "header is not msgpack" in r.getMessage()]
    assert len(logged_first) == 20
    assert "counted from the last start" in logged_first[-1].getMessage()
    runner.handle(encode(sim.end("first", 24)))
    caplog.clear()
    runner.handle(encode(sim.start("second")))
    runner.handle([b"\xc1second"])
    runner.handle(encode(sim.end("second", 24)))
    runner.close()
    logged = [r.getMessage() for r in caplog.records if "header is not msgpack" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith("malformed: header is not msgpack"), logged
    assert runner.counters["malformed"] == 26
