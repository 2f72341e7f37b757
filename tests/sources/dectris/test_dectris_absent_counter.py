"""A counter named in `[source] counters` that its motor points never carry (real sockets:
emulator and source): it was NaN in the file with no flag and no word, though a null one
is flagged (protocol.md). Now NaN, the point flagged, and the series logs it once."""

from __future__ import annotations

import logging
import math

import numpy as np

from stream.core.messages import Point
from tests.support.dectris import collect, decoded, emulator_and_source, send_in_thread

NPOINTS = 4


def test_a_listed_counter_the_motor_points_do_not_carry_is_flagged(caplog):
    caplog.set_level(logging.WARNING, "stream.sources.dectris")
    with emulator_and_source(motors=["omega"], counters=["monitor", "srcur"]) as (emu, src):
        t = send_in_thread(emu, [np.full((8, 10), 5, np.uint16)] * NPOINTS, series_id=1,
                           motors=[{"omega": 0.1 * i} for i in range(NPOINTS)],
                           counters=[{"srcur": 200.0}] * NPOINTS)
        msgs = decoded(collect(src))
        t.join()
    points = [m for m in msgs if isinstance(m, Point)]
    assert len(points) == NPOINTS
    for p in points:
        assert math.isnan(p.counters["monitor"]) and p.counters["srcur"] == 200.0
        assert p.extra["flags"] == ["counter 'monitor' did not come with its motor point: "
                                    "taken as NaN"], p.extra
    said = [r.getMessage() for r in caplog.records if "did not come with motor point" in
            r.getMessage()]
    assert len(said) == 1 and "'monitor'" in said[0] and "(it has srcur)" in said[0], said
