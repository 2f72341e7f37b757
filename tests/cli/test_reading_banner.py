"""The banner of `run` says "listening on" for a DECTRIS source too (real sockets): the
documented wait for it (README, cli.md) never ended with `[source] kind = "dectris"`."""

from __future__ import annotations

from stream.cli.commands import _reading
from stream.sources.dectris.source import DectrisSource


def test_a_dectris_source_with_a_motor_lane_says_where_it_listens():
    with DectrisSource(endpoint="tcp://127.0.0.1:1", listen="tcp://127.0.0.1:0") as src:
        line = _reading(src)
        assert line == (f"listening on {src.endpoint_bound} (motor lane), reading DECTRIS "
                        "stream v2 from tcp://127.0.0.1:1")


def test_a_dectris_source_without_a_motor_lane_says_so_as_the_daemon():
    with DectrisSource(endpoint="tcp://127.0.0.1:1", version=1) as src:
        assert _reading(src) == ("listening on - (no motor lane), reading DECTRIS stream v1 "
                                 "from tcp://127.0.0.1:1")
