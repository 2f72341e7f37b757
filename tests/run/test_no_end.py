"""A scan whose every announced point came but whose end never did ends as a success,
with an event `no_end` (it was aborted with reason timeout); one with points that never
came still ends abort (timeout)."""

from __future__ import annotations

import dataclasses

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS


def run_without_end(tmp_path, name: str, points: range) -> dict:
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    config = Config.load(CONFIGS / "simulated.toml")
    config["source"]["end_timeout"] = 0.5
    runner = ScanRunner(config, output_file=tmp_path / f"{name}.h5")
    runner.handle(encode(sim.start(name)))
    for i in points:
        runner.handle(encode(sim.point(i, name)))
    while not runner.results:  # idle: end_timeout passes, then the scan ends
        runner.pump(0.05)
        runner.poll()
    runner.close()
    return runner.results[0]


def test_every_point_came_but_no_end(tmp_path):
    result = run_without_end(tmp_path, "whole", range(24))
    assert result["status"] == "success", result
    events = load(tmp_path / "whole.h5")["events"]
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in events["kind"]]
    assert "no_end" in kinds


def test_points_missing_and_no_end_is_still_a_timeout(tmp_path):
    result = run_without_end(tmp_path, "short", range(20))
    assert result["status"] == "abort" and result["reason"].startswith("timeout"), result
