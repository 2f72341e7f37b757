"""A scan whose chain cannot be set up (a dark of another shape than the detector's)
ends fail with the reason once; its points are dropped without a line each: they were
logged 'rejected: point N of scan ...: no scan is open' one by one (20, then every
1000th), burying the reason in a replay's or daemon's log."""

from __future__ import annotations

import dataclasses
import logging

import h5py
import numpy as np

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS


def test_the_points_of_a_scan_whose_setup_failed_are_dropped_quietly(tmp_path, caplog):
    with h5py.File(tmp_path / "dark.h5", "w") as f:
        f["dark"] = np.zeros((10, 10), np.float32)  # the detector's frames are not 10 x 10
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    config = Config.load(CONFIGS / "simulated.toml")
    config["node"][0]["dark"] = f"{tmp_path / 'dark.h5'}::/dark"
    runner = ScanRunner(config, output_file=tmp_path / "out.h5")
    with caplog.at_level(logging.INFO):
        runner.handle(encode(sim.start("s1")))
        for i in range(24):
            runner.handle(encode(sim.point(i, "s1")))
        runner.handle(encode(sim.end("s1")))
        runner.close()
    [result] = runner.results
    assert result["status"] == "fail" and "setup failed" in result["reason"]
    assert "shape" in result["reason"]
    assert runner.counters["rejected"] == 25  # its 24 points and its end: counted
    assert not [r for r in caplog.records if "no scan is open" in r.getMessage()]
