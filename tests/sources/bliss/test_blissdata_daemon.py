"""`peakstream daemon` with [source] kind = "blissdata" (a real subprocess) follows
scan after scan that a helper acting as Bliss publishes: one file per scan."""

from __future__ import annotations

import signal

import pytest

from tests.support.bliss import FakeBliss, bliss_config
from tests.support.daemon import completed, scans_done
from tests.support.dectris import sim_scan

pytestmark = pytest.mark.system


def test_daemon_follows_two_bliss_scans(redis, tmp_path, daemon):
    config = bliss_config(tmp_path, redis.url, "daemon")
    d = daemon(config)
    assert d.status()["source"]["kind"] == "blissdata"
    frames, motors, counters = sim_scan("uint16")
    bliss = FakeBliss(redis.url, tmp_path, session="daemon")
    axes = {"diffrz": [m["omega"] for m in motors]}
    mon = {"monitor": [c["monitor"] for c in counters]}
    bliss.scan("fscan", 1, frames, axes, mon,
               info={"fscan_parameters": {"motor": "diffrz", "npoints": 32}})
    bliss.scan("fscan", 2, frames[:16], {"diffrz": axes["diffrz"][:16]},
               {"monitor": mon["monitor"][:16]}, abort_after=10)
    status = scans_done(d, 2)
    assert status["scans_done"] == 2
    assert completed(tmp_path / "out" / "daemon_1_fscan.h5") == "success"
    assert completed(tmp_path / "out" / "daemon_2_fscan.h5") == "abort"
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
