"""A scan the daemon resumes after a restart is shown whole by the web view: the page
showed only the points since the restart (the map, the per-point plot, the cliques), the
points before it being in the scan's file, which the web view did not read. A runner
with its live lane (a real PUB), killed mid-scan, a new one that resumes the file, and
the web view's state fed by a real SUB, as `peakstream web` is."""

from __future__ import annotations

import time

import numpy as np

from stream.config.schema import Config
from stream.run.loop import drain
from stream.run.runner import ScanRunner
from stream.service.live import LiveLane
from stream.service.web.state import Inbox, LiveState
from stream.sources.simulate import Simulation
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS

KILLED_AT = 30  # the first process dies after point 29


def runner(out) -> ScanRunner:
    config = Config.load(CONFIGS / "simulated.toml")
    config.override("workers", "kind", "inline")
    r = ScanRunner(config, output_dir=out)
    r.live = LiveLane("tcp://127.0.0.1:0", interval=0.0)
    return r


def until(what, why: str):
    for _ in range(600):  # a safety net: each turn waits 0.05 s
        if value := what():
            return value
        time.sleep(0.05)
    raise AssertionError(f"never: {why}")


def test_a_resumed_scan_is_shown_from_its_first_point(tmp_path):
    sim, n, out = Simulation(SIMCONF), SIMCONF.npoints, tmp_path / "out"
    first = runner(out)
    first.handle(encode(sim.start("resumed")))
    for i in range(KILLED_AT):
        first.handle(encode(sim.point(i, "resumed")))
    drain(first)
    first.current.collector.checkpoint()  # with the resume state
    first.current.collector.store.close_unchanged()  # killed: the file as checkpointed
    first.current = None
    first.close()
    first.live.close()

    second = runner(out)  # the restarted daemon, and its new web view
    state, inbox = LiveState(), Inbox(second.live.endpoint)
    try:
        until(lambda: second.live.progress(second.status(), "idle", force=True)
              or inbox.received, "the web view's SUB connected")
        for i in range(KILLED_AT, n):
            second.handle(encode(sim.point(i, "resumed")))
        drain(second)
        second.live.progress(second.status(), "running", force=True)  # as the daemon's tick
        # (the progress comes after the points' peaks: the file is read when it is taken)
        view = until(lambda: state.drain(inbox) * 0 or (state.scan and state.scan.status
                                                         and state.scan), "the progress")
        second.handle(encode(sim.end("resumed", n)))
        second.close()
        until(lambda: state.drain(inbox) * 0 or view.ended, "the scan's end")
    finally:
        inbox.close()
        second.live.close()
    [result] = second.results
    assert result["status"] == "success" and result["file"] == str(out / "resumed.h5")
    assert view.rows["point_id"] == list(range(n))  # before the restart first, then after
    assert view.scalars["peak count"].keys() == set(range(n))
    assert np.isfinite(view.map["sum_intensity"]).sum() == n  # the daemon's map: all
    assert view.ncliques == result["cliques"] == len(view.clique_ids)
    for clique in view.cliques:  # every member 2D peak, those before the restart too
        assert len(clique["members"]) == clique["n2d"], clique

    from bokeh.document import Document

    from stream.service.web.page import Page

    page = Page(Document(), state)
    page.update()
    assert page.points.data["point_id"] == list(range(n))
    assert f'"progress": "{n}/{n} linked"' in page.header.text


def test_a_resumed_scan_that_moves_to_a_new_file_is_shown_again_from_there(tmp_path):
    """Another acquisition with the resumed scan's id goes to a new file (the resumed
    one is left as it was): its points are not the file's, so the page starts again."""
    sim, out = Simulation(SIMCONF), tmp_path / "out"
    r = runner(out)
    for msg in (sim.start("moved"), *(sim.point(i, "moved") for i in range(20)),
                sim.end("moved", 20)):
        r.handle(encode(msg))
    r.close()
    r.live.close()
    state = LiveState()
    status = {"scan_id": "moved", "npoints": SIMCONF.npoints, "linked": 25}
    state.apply("progress", {"state": "running", "scan": {
        **status, "file": str(out / "moved.h5"), "resumed_at": 20}})
    generation = state.generation
    assert state.scan.rows["point_id"] == list(range(20))
    state.apply("progress", {"state": "running", "scan": {**status, "linked": 1,
                                                          "file": str(out / "moved-1.h5")}})
    assert state.generation == generation + 1 and state.scan.rows["point_id"] == []
    assert state.header()["progress"] == f"1/{SIMCONF.npoints} linked"
