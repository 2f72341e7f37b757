"""Admission checks of the runner (issue #13), in process: bounded work per message."""

from __future__ import annotations

import numpy as np

from stream.config.schema import Config
from stream.core.messages import Point
from stream.run.resuming import MAX_LOOKUPS
from stream.run.runner import ScanRunner
from stream.wire.codec import encode


def test_stray_points_of_new_scans_look_the_directory_up_a_bounded_number_of_times(tmp_path):
    runner = ScanRunner(Config({}), output_dir=tmp_path)
    frame = np.zeros((4, 4), np.uint16)
    for i in range(200):
        runner.handle(encode(Point(f"stray-{i}", 0, 0.0, {}, {}, {"det": frame})))
    runner.close()
    assert len(runner.resumer._no_resume) == MAX_LOOKUPS
    assert runner.counters["rejected"] == 200 and runner.current is None


def test_a_flood_of_stray_points_is_counted_whole_but_logged_in_part(tmp_path, caplog):
    """Each rejected point is counted, but only the first BAD_LOGGED are logged, then
    every 1000th with the count: a sender of a dead scan must not flood the log."""
    from stream.run.openscan import BAD_LOGGED

    runner = ScanRunner(Config({}), output_dir=tmp_path)
    frame = np.zeros((4, 4), np.uint16)
    with caplog.at_level("WARNING", logger="stream.run.openscan"):
        for i in range(1000):
            runner.handle(encode(Point("gone", i, 0.0, {}, {}, {"det": frame})))
    runner.close()
    logged = [r.getMessage() for r in caplog.records  # this test's (not another's thread)
              if r.getMessage().startswith("rejected") and "of scan 'gone'" in r.getMessage()]
    assert runner.counters["rejected"] == 1000
    assert len(logged) == BAD_LOGGED + 1, logged[-3:]
    assert f"{BAD_LOGGED} rejected so far" in logged[BAD_LOGGED - 1]
    assert "1000 rejected so far" in logged[-1]
