"""Starts and ends that are taken but likely not what was meant are recorded: a grid
whose npoints is not a multiple of nfast (event `warning`), an end whose npoints is not
the start's (event, the start's is kept). Both were accepted silently."""

from __future__ import annotations

import dataclasses

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS


def events_of(path) -> list[tuple[str, str]]:
    ev = load(path)["events"]
    text = [m.decode() if isinstance(m, bytes) else str(m) for m in ev["message"]]
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in ev["kind"]]
    return list(zip(kinds, text, strict=True))


def test_a_grid_that_is_not_whole_rows_and_an_end_with_more_points(tmp_path):
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=20, spots=4))
    start = sim.start("g")
    start = dataclasses.replace(start, trajectory={"kind": "grid", "nfast": 7,
                                                   "fast": start.motors[0]})
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=tmp_path / "g.h5")
    runner.handle(encode(start))
    for i in range(20):
        runner.handle(encode(sim.point(i, "g")))
    runner.handle(encode(sim.end("g", 25)))
    runner.close()
    (result,) = runner.results
    assert result["status"] == "success", result  # the start's 20 points all came
    events = events_of(tmp_path / "g.h5")
    assert ("warning", "start: npoints 20 is not a multiple of nfast 7: the last row of the "
                       "grid holds 6 of its 7 points") in events, events
    assert any("end: npoints 25 is not the start's 20" in m for _, m in events), events
