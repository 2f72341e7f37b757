"""A counter or motor value that is null or not a number (a Bliss counter that failed
to read gives None) keeps its point: the value is NaN and the point flagged, as for
a NaN counter (not scaled) or a NaN motor (not linked). It dropped the whole point
as malformed, and its frame was then recorded missing, "no data received"."""

from __future__ import annotations

import json

import msgpack
import numpy as np

from stream.store.reader import load, summary
from stream.wire.codec import encode
from tests.support.flow import run_altered

UNUSABLE = {3: ("counters", None), 4: ("counters", "abc"), 5: ("counters", [1]),
            6: ("motors", None)}


def test_a_null_or_text_counter_or_motor_flags_the_point_and_keeps_it(tmp_path):
    path, n = tmp_path / "s.h5", 24

    def alter(i, point):
        parts = encode(point)
        if i not in UNUSABLE:
            return parts
        header = msgpack.unpackb(parts[0], raw=False)
        group, value = UNUSABLE[i]
        header[group][next(iter(header[group]))] = value
        return [msgpack.packb(header), *parts[1:]]

    result = run_altered(path, "nulls", n, alter)
    assert result["status"] == "success", result
    s = summary(path)
    assert s["points_ok"] == n and s["counters"]["malformed"] == 0
    points = load(path)["points"]
    flags = {i: json.loads(f) if f else [] for i, f in enumerate(points["flags"])}
    assert "counter 'monitor' = None is not a number: taken as NaN" in flags[3]
    assert "counter 'monitor' = 'abc' is not a number: taken as NaN" in flags[4]
    assert "counter 'monitor' = [1] is not a number: taken as NaN" in flags[5]
    for i in (3, 4, 5):
        assert np.isnan(points["counters/monitor"][i])
        assert any("not scaled" in f for f in flags[i]), flags[i]
    assert "motor 'omega' = None is not a number: taken as NaN" in flags[6]
    assert np.isnan(points["motors/omega"][6])
    assert any("not linked" in f for f in flags[6]), flags[6]
    assert not flags[2] and not flags[7]
