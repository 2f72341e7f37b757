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
