"""A worker process started again after a crash loads the calibration files as they
are then: one whose dark (flat, mask, PONI, ...) is not what the processor loaded at
its start, and records in its scan files, is refused, and the points are bad saying
why; never processed silently with the other dark."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from stream.config.schema import Config
from stream.run.dispatch import Dispatcher
from stream.run.tasks import decode_result
from stream.sources.simulate import Simulation
from stream.wire.codec import encode
from tests.support.files import SIMCONF, corrected_chain


def results(d: Dispatcher, count: int) -> list:
    """The next `count` results (the workers' deadlines bound the wait: a point whose
    workers all died is bad, never lost)."""
    out: list = []
    while len(out) < count:
        out += [decode_result(r) for r in d.collect(timeout=0.2)]
    return out


@pytest.mark.system
def test_a_worker_started_again_with_another_dark_is_refused(tmp_path, caplog):
    np.save(tmp_path / "dark.npy", np.full(SIMCONF.shape, 2.0, np.float32))
    config = Config.from_text(corrected_chain(dark="dark.npy"), "scan.toml", tmp_path)
    sim = Simulation(SIMCONF)
    d = Dispatcher(config, "processes", 1, heartbeat=0.1, timeout=5.0)
    try:
        d.start_scan(1, encode(sim.start("recal")), "eiger", 1 << 26)
        d.submit(0, 1, 0, encode(sim.point(0, "recal")))
        assert [r.status for r in results(d, 1)] == ["ok"]
        np.save(tmp_path / "dark.npy", np.full(SIMCONF.shape, 30.0, np.float32))  # again
        d.children[0].kill()  # a crash mid-scan: a new worker starts, loading the files
        d.children[0].wait()  # (the point after it is not processed by the old one)
        d.submit(1, 1, 1, encode(sim.point(1, "recal")))
        d.submit(2, 1, 2, encode(sim.point(2, "recal")))
        with caplog.at_level(logging.ERROR, "stream.run.dispatch"):
            bad = results(d, 2)
        assert sorted(r.point_id for r in bad) == [1, 2]
        for r in bad:
            assert r.status == "bad", r
            assert "no worker is left (a worker was refused" in r.reason, r.reason
            assert "dark = 'dark.npy'" in r.reason and "holds another content" in r.reason
        assert "refused worker pid" in caplog.text and "no worker is started again" in \
            caplog.text
        assert d.restarted == 1 and d.status()["workers"] == 0
    finally:
        d.close()
