"""A Bliss scan that starts and ends while the daemon is still warming its kernels up
(a first start: about a minute and more) is taken once the warm-up is done: Bliss cannot
be told to wait, so the source follows from before the warm-up."""

from __future__ import annotations

from stream.config.schema import Config
from stream.service.daemon import Daemon
from stream.store.reader import summary
from tests.support.bliss import FakeBliss, bliss_config, follow
from tests.support.dectris import sim_scan


def test_a_scan_published_during_the_warm_up_is_processed_after_it(redis, tmp_path):
    config = Config.load(bliss_config(tmp_path, redis.url, "warm",
                                      '[control]\nendpoint = ""\n[live]\nendpoint = ""\n'))
    frames, motors, counters = sim_scan("uint16")
    bliss = FakeBliss(redis.url, tmp_path, session="warm")

    def warm(_: Config) -> None:  # the whole scan, start to close, while warming up
        bliss.scan("fscan", 1, frames, {"diffrz": [m["omega"] for m in motors]},
                   {"monitor": [c["monitor"] for c in counters]},
                   info={"fscan_parameters": {"motor": "diffrz", "npoints": 32}})

    d = Daemon(config, tmp_path / "out", warm)
    try:
        results = follow(d.runner, d.source)
    finally:
        d.close()
    assert [(r["scan_id"], r["status"]) for r in results] == [("warm_1_fscan", "success")]
    s = summary(tmp_path / "out" / "warm_1_fscan.h5")
    assert (s["status"], s["points"], s["points_ok"]) == ("success", 32, 32)
