"""A Bliss scan that has had no data for `quiet_warning` s while Bliss keeps it open:
blissdata cannot tell a Bliss that died from one that pauses (no heartbeat, no writer
state), so the scan is never ended for its silence; status says how long it has been
quiet and how to end it (close it in Redis, as blissdata's memory tracker does after a
day), the log warns once, and a scan so closed ends abort with Bliss's reason (its
streams never sealed: it was followed for good, even once the tracker deleted it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.core.messages import End, Point
from stream.sources.blissdata import BlissdataSource
from stream.wire.codec import decode
from tests.support.bliss import collect, dying_scan
from tests.support.dectris import sim_scan


def quiet_scan(redis, session: str, close) -> tuple[list, str, str]:
    """A scan whose Bliss died after 3 points, followed until status warns; `close(key,
    warning)` then ends it. (messages, status's warning, the scan's key)"""
    frames, motors, _ = sim_scan("uint16")
    with BlissdataSource(redis_url=redis.url, motors=["omega"], counters=[],
                         channels={"omega": "axis:diffrz"}, session=session,
                         trajectory={"kind": "sweep", "fast": "omega"},
                         quiet_warning=0.5) as src:
        assert src.status()["quiet_s"] is None  # no scan followed
        scan = dying_scan(redis.url, session, 1, frames[:3], [m["omega"] for m in motors[:3]],
                          {"type": "fscan", "npoints": 8})
        out: list[list] = []
        for _ in range(600):  # a safety net: the asserts below say what was missing
            out += src.receive(0.1)
            if "warning" in src.status():
                break
        status = src.status()
        assert status["scan"] == f"{session}_1_fscan" and status["quiet_s"] >= 0.5
        close(scan.key, status["warning"])
        out += collect(src)
    return out, status["warning"], scan.key


def ended_abort(out: list[list]) -> End:
    msgs = [decode(p) for p in out]
    assert [m.point_id for m in msgs if isinstance(m, Point)] == [0, 1, 2]
    assert isinstance(msgs[-1], End) and msgs[-1].status == "abort"
    return msgs[-1]


def test_a_quiet_scan_is_said_once_and_ends_when_closed_in_redis(redis, caplog):
    from blissdata.redis_engine.store import DataStore

    def close(key: str, warning: str) -> None:  # as blissdata's memory tracker does
        DataStore(redis.url).delete_scan(key, force=True)

    out, said, key = quiet_scan(redis, "quiet", close)
    assert said.startswith("Bliss scan quiet_1_fscan has had no data for ")
    assert key in said and "delete_scan" in said
    assert "end_reason DELETION" in ended_abort(out).reason  # closed, then deleted
    logged = [r.getMessage() for r in caplog.records if "has had no data" in r.getMessage()]
    assert len(logged) == 1 and key in logged[0]


@pytest.mark.system  # runs the command status gives
def test_the_command_status_gives_ends_the_scan(redis):
    def close(key: str, warning: str) -> None:
        code = warning[warning.index("python -c '") + 11:].removesuffix("'")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

    out, _, _ = quiet_scan(redis, "command", close)
    assert "DELETION" in ended_abort(out).reason
