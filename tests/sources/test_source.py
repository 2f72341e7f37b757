"""The one source contract: `open_source` gives run, daemon and replay a `Source` of
every kind, our zmq lane, a DECTRIS detector and a recording, each a real one."""

from __future__ import annotations

import numpy as np
import pytest

from stream.config.schema import Config
from stream.core.messages import DetectorInfo, End, Point, Start
from stream.sources.base import RecordingSource, Source, open_source
from stream.sources.dectris.source import DectrisSource
from stream.sources.zmq import ZmqSource
from stream.wire.codec import decode, encode

START = Start("rec", {"d": DetectorInfo((4, 5), "uint16")}, ["omega"], [], 3)


def point(i: int) -> Point:
    return Point("rec", i, float(i), {"omega": 0.5 * i}, {},
                 {"d": np.full((4, 5), i, np.uint16)})


def drain(source: Source) -> list:
    out = []
    while not source.done:
        out += [decode(parts) for parts in source.receive(0.0)]
    return out


def test_the_config_kinds_open_live_sources():
    zmq_src = open_source(Config({"source": {"listen": "tcp://127.0.0.1:0"}}))
    with zmq_src:
        assert isinstance(zmq_src, ZmqSource) and isinstance(zmq_src, Source)
        assert zmq_src.endpoint.startswith("tcp://127.0.0.1:") and not zmq_src.done
        # what a sender pushes comes out as our messages
        import zmq

        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(zmq_src.endpoint)
        push.send_multipart(encode(START))
        got = zmq_src.receive(5.0)
        push.close(linger=0)
        assert [decode(p) for p in got] == [START]
    dectris = open_source(Config({"source": {"kind": "dectris",
                                             "detector_endpoint": "tcp://127.0.0.1:9",
                                             "listen": "tcp://127.0.0.1:0"}}))
    with dectris:
        assert isinstance(dectris, DectrisSource) and isinstance(dectris, Source)
        assert dectris.status()["kind"] == "dectris" and dectris.receive(0.0) == []


def test_a_recording_gives_start_points_and_end_as_on_the_wire():
    source = open_source(Config({}), (START, [point(i) for i in range(3)]), "rec.h5")
    assert isinstance(source, RecordingSource) and isinstance(source, Source)
    assert source.sockets == [] and source.endpoint == "rec.h5"
    msgs = drain(source)
    assert msgs[0] == START and msgs[-1] == End("rec", "success", 3)
    assert [m.point_id for m in msgs[1:-1]] == [0, 1, 2]
    np.testing.assert_array_equal(msgs[2].frames["d"], np.full((4, 5), 1, np.uint16))
    assert source.receive(0.0) == [] and source.error == ""


def test_a_recording_that_breaks_off_ends_the_scan_as_fail():
    def points():
        yield point(0)
        raise OSError("the file went away")

    with open_source(Config({}), (START, points()), "rec.h5") as source:
        msgs = drain(source)
    # the scan's npoints stays the start's 3 (1 given): the others are its missing points
    assert msgs[-1] == End("rec", "fail", 3, "replay stopped: the file went away")
    assert source.error == "the file went away" and source.points == 1


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="kind 'tango'"):
        open_source({"source": {"kind": "tango"}})
