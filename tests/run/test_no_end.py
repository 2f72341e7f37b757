"""A scan whose every announced point came but whose end never did ends as a success,
with an event `no_end` and the reason saying so (it was aborted with reason timeout); one
with points that never came still ends abort (timeout); one with bad points ends
incomplete and its reason says both, on our protocol and after a DECTRIS series alike."""

from __future__ import annotations

import dataclasses

import numpy as np

from stream.config.schema import Config
from stream.core.messages import End
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.store.reader import load, summary
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS


def run_without_end(tmp_path, name: str, points: range, bad: tuple[int, ...] = (),
                    end: End | None = None) -> dict:
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    config = Config.load(CONFIGS / "simulated.toml")
    config["source"]["end_timeout"] = 0.5
    runner = ScanRunner(config, output_file=tmp_path / f"{name}.h5")
    runner.handle(encode(sim.start(name)))
    for i in points:
        point = sim.point(i, name)
        if i in bad:  # another dtype than the start's: refused on arrival, bad
            point.frames = {k: v.astype(np.uint32) for k, v in point.frames.items()}
        runner.handle(encode(point))
    if end is not None:
        runner.handle(encode(end))
    while not runner.results:  # idle: end_timeout passes, then the scan ends
        runner.pump(0.05)
        runner.poll()
    runner.close()
    return runner.results[0]


def kinds_of(path) -> list[str]:
    events = load(path)["events"]
    return [k.decode() if isinstance(k, bytes) else str(k) for k in events["kind"]]


def test_every_point_came_but_no_end(tmp_path):
    result = run_without_end(tmp_path, "whole", range(24))
    assert result["status"] == "success", result
    assert "no end message within 0.5 s" in result["reason"], result
    assert "no_end" in kinds_of(tmp_path / "whole.h5")


def test_bad_points_and_no_end_say_both(tmp_path):
    """A DECTRIS series complete but for its end sends End(success, 'no end of series
    ...'): that reason stood in the file and hid the bad points' ('3 point(s) bad');
    our own protocol's reason said the bad points and only an event the missing end."""
    ours = run_without_end(tmp_path, "ours", range(24), bad=(3, 7))
    dectris = run_without_end(tmp_path, "dectris", range(24), bad=(3, 7), end=End(
        "dectris", "success", 24, "no end of series 1 within 1 s of its last message, "
                                  "but all 24 images came: taken as ended"))
    for result, no_end in ((ours, "no end message within 0.5 s"),
                           (dectris, "no end of series 1 within 1 s")):
        assert result["status"] == "incomplete", result
        assert result["reason"].startswith("2 point(s) bad (the first: point 3"), result
        assert no_end in result["reason"], result
        written = summary(tmp_path / f"{result['scan_id']}.h5")
        assert (written["status"], written["reason"]) == ("incomplete", result["reason"])
    assert "no_end" in kinds_of(tmp_path / "ours.h5")


def test_points_missing_and_no_end_is_still_a_timeout(tmp_path):
    result = run_without_end(tmp_path, "short", range(20))
    assert result["status"] == "abort" and result["reason"].startswith("timeout"), result
