"""A Bliss sequence (`sequence`, `group`: a scan that runs child scans while it runs,
each child's info `group` naming it, their keys in its SUBSCANS stream, as Bliss's
ScanSequence publishes them) followed for its own image channel: its children do not
say it is over, as a newer scan of the session does; and a restart during it finds it."""

from __future__ import annotations

import time

import numpy as np

from stream.core.messages import End, Point
from stream.sources.blissdata import BlissdataSource
from stream.sources.blissdata.running import running_scans, superseded
from stream.sources.blissdata.source import SUPERSEDED_EVERY
from stream.wire.codec import decode
from tests.support.bliss import collect
from tests.support.dectris import sim_scan


def open_scan(store, session: str, number: int, name: str = "loopscan", group: str = "",
              sequence: bool = False, streams: dict | None = None):
    """A scan of `session`, started: a sequence (SUBSCANS stream, is_scan_sequence) or a
    child of `group`; `streams`: name -> definition of its other streams."""
    from blissdata.streams.scan_sequence.stream import ScanStream

    info: dict = {"type": name, "title": name}
    if sequence:
        info["is_scan_sequence"] = True
    if group:
        info["group"] = group
    scan = store.create_scan({"name": name, "number": number, "session": session,
                              "data_policy": "no_policy"}, info=info)
    made = {n: scan.create_stream(d) for n, d in (streams or {}).items()}
    if sequence:
        made["SUBSCANS"] = scan.create_stream(ScanStream.make_definition("SUBSCANS"))
    scan.prepare()
    scan.start()
    return scan, made


def close(scan, streams: dict) -> None:
    for s in streams.values():
        s.seal()
    scan.stop()
    scan.info["end_reason"] = "SUCCESS"
    scan.close()


def child(store, session: str, number: int, parent, subscans) -> tuple:
    """A child scan of the sequence `parent`, announced in its SUBSCANS stream."""
    scan, streams = open_scan(store, session, number, group=parent.key)
    subscans.send({"key": scan.key, "scan_number": number})
    return scan, streams


def test_a_sequence_is_not_superseded_by_the_scans_it_runs(redis):
    from blissdata.redis_engine.store import DataStore

    store = DataStore(redis.url)
    seq, streams = open_scan(store, "seq", 1, "sequence", sequence=True)
    first, _ = child(store, "seq", 2, seq, streams["SUBSCANS"])
    inner, inner_streams = open_scan(store, "seq", 3, "sequence", group=seq.key,
                                     sequence=True)
    streams["SUBSCANS"].send({"key": inner.key, "scan_number": 3})
    grandchild, _ = child(store, "seq", 4, inner, inner_streams["SUBSCANS"])
    open_scan(store, "other", 5)  # another session's
    assert superseded(store, seq.key, "seq") == ""
    # the sequence's next scans: its first child is over
    assert superseded(store, first.key, "seq") in (inner.key, grandchild.key)
    newer, _ = open_scan(store, "seq", 6)  # not the sequence's: its Bliss died
    assert superseded(store, seq.key, "seq") == newer.key


def test_a_sequence_whose_child_has_closed_is_running(redis):
    """A daemon restarted during a sequence whose first child has closed: the sequence
    and its running child are running; an older scan never closed is not."""
    from blissdata.redis_engine.store import DataStore

    store = DataStore(redis.url)
    open_scan(store, "restarted", 1)  # its Bliss died
    seq, streams = open_scan(store, "restarted", 2, "sequence", sequence=True)
    close(*child(store, "restarted", 3, seq, streams["SUBSCANS"]))
    running, _ = child(store, "restarted", 4, seq, streams["SUBSCANS"])
    assert running_scans(store, "restarted")[1] == [seq.key, running.key]
    close(running, {})
    assert running_scans(store, "restarted")[1] == [seq.key]


def test_a_sequence_with_an_image_channel_is_followed_to_its_end(redis, tmp_path):
    from blissdata.redis_engine.store import DataStore
    from blissdata.streams.default import Stream

    frames, motors, _ = sim_scan("uint16")
    omega = [m["omega"] for m in motors]
    store = DataStore(redis.url)
    with BlissdataSource(redis_url=redis.url, motors=["omega"], counters=[],
                         channels={"omega": "axis:diffrz"}, session="group",
                         trajectory={"kind": "sweep", "fast": "omega"}) as src:
        seq, streams = open_scan(store, "group", 1, "sequence", sequence=True, streams={
            "eiger:image": Stream.make_definition("eiger:image", "uint16", frames[0].shape),
            "axis:diffrz": Stream.make_definition("axis:diffrz", "float64")})
        streams["eiger:image"].send(np.stack(frames[:8]))
        streams["axis:diffrz"].send(np.asarray(omega[:8]))
        out = []
        for _ in range(600):  # a safety net: the asserts below say what was missing
            out += src.receive(0.1)
            if sum(isinstance(decode(p), Point) for p in out) == 8:
                break
        scan, child_streams = child(store, "group", 2, seq, streams["SUBSCANS"])
        # the sequence publishes nothing while its child runs, for longer than the source
        # waits before it looks for a newer scan of the session
        time.sleep(3 * SUPERSEDED_EVERY)
        close(scan, child_streams)
        streams["eiger:image"].send(np.stack(frames[8:16]))
        streams["axis:diffrz"].send(np.asarray(omega[8:16]))
        close(seq, streams)
        out += collect(src, ends=1)
    msgs = [decode(p) for p in out]
    ends = [m for m in msgs if isinstance(m, End)]
    assert [(e.scan_id, e.status, e.reason) for e in ends] == [("group_1_sequence", "success",
                                                                "")]
    assert [m.point_id for m in msgs if isinstance(m, Point)] == list(range(16))
