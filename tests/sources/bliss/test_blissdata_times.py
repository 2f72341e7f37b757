"""A point's time is when Bliss acquired it, as its scan data says (the timer's `epoch`,
or its `elapsed_time` from the scan's `start_time`): so a point read again from the
scan's start (a daemon restarted mid-scan) has the time it had when it first came;
tests/sources/bliss/test_blissdata_restart.py restarts a daemon mid-scan."""

from __future__ import annotations

import math

import pytest

from stream.core.messages import Point, Start
from stream.sources.blissdata import BlissdataSource
from stream.sources.blissdata.scaninfo import clock_of
from stream.wire.codec import decode
from tests.support.bliss import FakeBliss, collect
from tests.support.dectris import sim_scan

T0 = 1_780_000_000.0  # 2026-05-28, s since 1970


def followed(redis, tmp_path, number: int, timers: dict, info: dict | None = None,
             counters: list[str] | None = None) -> tuple[Start, list[Point]]:
    frames, motors, _ = sim_scan("uint16")
    frames = frames[:12]
    with BlissdataSource(redis_url=redis.url, motors=["omega"], counters=counters or [],
                         channels={"omega": "axis:diffrz"}) as src:
        FakeBliss(redis.url, tmp_path).scan(
            "fscan", number, frames, {"diffrz": [m["omega"] for m in motors[:12]]},
            info=info, timers=timers)
        msgs = [decode(p) for p in collect(src)]
    return msgs[0], [m for m in msgs if isinstance(m, Point)]


def test_points_are_dated_by_the_timer_epoch(redis, tmp_path):
    epochs = [T0 + 0.5 * i for i in range(12)]
    start, points = followed(redis, tmp_path, 1, {"epoch": epochs,
                                                  "elapsed_time": [0.0] * 12})
    assert [p.time for p in points] == epochs
    assert start.meta["bliss"]["clock"] == "timer:epoch"


def test_points_are_dated_by_elapsed_time_from_the_scan_start(redis, tmp_path):
    elapsed = [0.25 * i for i in range(12)]
    start, points = followed(redis, tmp_path, 2, {"elapsed_time": elapsed},
                             info={"start_time": "2026-05-28T22:26:40+02:00"})
    assert [p.time for p in points] == [T0 + t for t in elapsed]  # +02:00 is 20:26:40 UTC
    assert start.meta["bliss"]["clock"] == "timer:elapsed_time"


def test_a_counter_that_is_the_clock_is_both(redis, tmp_path):
    epochs = [T0 + i for i in range(12)]
    _, points = followed(redis, tmp_path, 3, {"epoch": epochs}, counters=["epoch"])
    assert [p.time for p in points] == epochs == [p.counters["epoch"] for p in points]


def test_without_a_clock_a_point_is_dated_when_it_came(redis, tmp_path):
    start, points = followed(redis, tmp_path, 4, {})
    assert start.meta["bliss"]["clock"] is None
    assert all(math.isfinite(p.time) and p.time > T0 - 1e8 for p in points)


@pytest.mark.parametrize("names, info, clock", [
    (["axis:x", "timer:epoch", "timer:elapsed_time"], {}, ("timer:epoch", 0.0)),
    (["axis:x", "musst:epoch"], {}, ("musst:epoch", 0.0)),
    (["a:epoch", "b:epoch", "timer:elapsed_time"], {"start_time": "1970-01-01T00:01:00Z"},
     ("timer:elapsed_time", 60.0)),  # two epochs, neither Bliss's timer: not guessed
    (["timer:elapsed_time"], {"start_time": "2026-05-28T10:00:00"}, None),  # no time zone
    (["timer:elapsed_time"], {}, None),
    (["axis:x"], {"start_time": "2026-05-28T10:00:00Z"}, None),
])
def test_which_channel_dates_the_points(names, info, clock):
    assert clock_of(names, info) == clock
