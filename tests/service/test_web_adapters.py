"""The web view without a browser: live-lane messages (packed and unpacked as the live
lane does) through the adapters and the server's state, with known answers; a page's
Bokeh document built and refreshed from that state."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from stream.service.live import RunningMap, array, unpack
from stream.service.web import adapters
from stream.service.web.state import Inbox, LiveState


def wire(topic: str, body: dict) -> dict:
    """A body as a subscriber gets it: packed as LiveLane.publish does, then unpacked."""
    got_topic, got = unpack(topic.encode() + b" " + msgpack.packb(body, use_bin_type=True))
    assert got_topic == topic
    return got


def peaks_msg(scan: str, pid: int, s, f, intensity, omega: float, radial=None, roi=None):
    body = {"scan_id": scan, "point_id": pid, "status": "ok", "time": 1.0 + pid,
            "motors": {"dty": 0.0, "omega": omega}, "counters": {}, "npeaks": len(s),
            "s_raw": array(np.asarray(s, float)), "f_raw": array(np.asarray(f, float)),
            "sum_intensity": array(np.asarray(intensity, float)),
            "npx": array(np.full(len(s), 9, np.int32))}
    outputs = {}
    if radial is not None:
        outputs["integrate1d"] = array(np.asarray(radial, np.float32))
    if roi is not None:
        outputs["roi_a"] = array(np.asarray(roi, np.float64))
    if outputs:
        body["outputs"] = outputs
    return wire("peaks", body)


class Start:  # what RunningMap reads of a start message
    def __init__(self, kind: str, npoints: int, nfast: int = 0):
        self.trajectory = {"kind": kind, "nfast": nfast} if nfast else {"kind": kind}
        self.motors, self.npoints = ["omega", "dty"], npoints


def test_fast_motor_prefers_the_trajectory_then_omega():
    assert adapters.fast_motor({"dty": 1, "omega": 2}) == "omega"
    assert adapters.fast_motor({"dty": 1, "omega": 2}, "dty") == "dty"
    assert adapters.fast_motor({"x": 1, "y": 2}) == "x"
    assert adapters.fast_motor({}) == "point"


def test_point_row_and_overlay_from_a_peaks_message():
    body = peaks_msg("a", 7, [10.0, 20.5], [3.0, 4.0], [100.0, 50.0], omega=1.75)
    row = adapters.point_row(body, "omega")
    assert row == {"point_id": 7, "x": 1.75, "npeaks": 2, "intensity": 150.0, "ok": True}
    assert adapters.point_row(body, "point")["x"] == 7.0
    over = adapters.peak_overlay(body)
    assert over["s"] == [10.0, 20.5] and over["f"] == [3.0, 4.0]
    assert over["size"] == [12.0, 12.0]  # 6 + 2 sqrt(9)
    assert adapters.peak_overlay(None) == {"s": [], "f": [], "size": [], "intensity": []}


def test_frame_image_extent_in_detector_pixels_and_log_limits():
    image = np.arange(1, 13, dtype=np.float32).reshape(3, 4) * 10
    img = adapters.frame_image(wire("frame", {"scan_id": "a", "point_id": 5, "bin": 4,
                                              "image": array(image)}))
    np.testing.assert_array_equal(img["image"], image)
    assert (img["dw"], img["dh"], img["point_id"]) == (16, 12, 5)
    assert img["low"] == pytest.approx(np.percentile(image, 1))
    assert img["high"] == pytest.approx(np.percentile(image, 99.9))
    assert adapters.log_limits(10.0, 1000.0) == (1.0, 3.0)
    empty = adapters.frame_image({"image": np.zeros((2, 2)), "bin": 1})
    assert empty["low"] > 0 and empty["high"] >= 10 * empty["low"]  # a log scale can draw it


@pytest.mark.parametrize("kind", ["grid", "snake"])
def test_map_index_and_point_agree_with_the_running_map(kind):
    rm = RunningMap(Start(kind, 12, nfast=4))
    for pid in range(12):
        rm.add(pid, float(pid), {"omega": 0.0, "dty": 0.0})
    body = wire("map", rm.message("a"))
    assert adapters.map_layout(body) == (kind, 3, 4)
    values = np.asarray(body["sum_intensity"])
    for pid in range(12):
        r, c = adapters.map_index(pid, 4, kind)
        assert values[r, c] == pid
        assert adapters.map_point(r, c, 4, kind) == pid
    rebuilt = adapters.values_map({pid: float(pid) for pid in range(10)}, (kind, 3, 4))
    np.testing.assert_array_equal(rebuilt[:2], values[:2])
    assert np.isnan(rebuilt[2]).sum() == 2  # points 10, 11 not given
    m = adapters.map_image(rebuilt)
    assert (m["low"], m["high"], m["filled"], m["dw"], m["dh"]) == (0.0, 9.0, 10, 4, 3)


def test_a_sweep_map_is_not_a_2d_map():
    rm = RunningMap(Start("sweep", 5))
    assert adapters.map_layout(wire("map", rm.message("a"))) is None


def test_radial_lines_and_clique_rows():
    lines = adapters.radial_lines(np.array([1.0, 2.0]), np.array([3.0, 6.0]), 3)
    assert lines == {"x": [0.0, 1.0], "latest": [1.0, 2.0], "average": [1.0, 2.0]}
    assert adapters.radial_lines(None, None, 0)["x"] == []
    body = wire("cliques", {"scan_id": "a", "point_id": 9, "count": 2,
                            "clique_id": array(np.array([4, 5])),
                            "s_raw": array(np.array([1.0, 2.0])),
                            "f_raw": array(np.array([3.0, 4.0])),
                            "sum_intensity": array(np.array([10.0, 20.0])),
                            "first_point": array(np.array([2, 6])),
                            "last_point": array(np.array([4, 6])),
                            "omega": array(np.array([0.5, 1.5]))})
    rows = adapters.clique_rows(body, "omega")
    assert rows["clique_id"] == [4, 5] and rows["omega"] == [0.5, 1.5]
    assert rows["npoints"] == [3, 1] and rows["s"] == [1.0, 2.0]
    assert all(math.isnan(v) for v in rows["npx"])  # not sent: NaN, not made up


def test_rocking_curve_is_the_members_of_the_clique_sorted_by_the_motor():
    peaks = {pid: {"s_raw": np.array([10.0, 10.5]), "f_raw": np.array([10.0, 10.5]),
                   "sum_intensity": np.array([float(pid), 1000.0])} for pid in range(10)}
    xs = {pid: 0.25 * (pid % 5) for pid in range(10)}  # two rows over the same angles
    clique = adapters.clique_rows(wire("cliques", {
        "clique_id": array(np.array([7, 8])), "s_raw": array(np.array([10.0, 10.5])),
        "f_raw": array(np.array([10.0, 10.5])),
        "member_clique_id": array(np.array([7, 7, 8, 7])),
        "member_point_id": array(np.array([3, 8, 3, 4])),
        "member_index": array(np.array([0, 0, 1, 0])),
        "member_share": array(np.array([1.0, 0.5, 1.0, 1.0]))}), "omega")
    assert clique["members"] == [[(3, 0, 1.0), (8, 0, 0.5), (4, 0, 1.0)], [(3, 1, 1.0)]]
    curve = adapters.rocking_curve({"members": clique["members"][0]}, peaks, xs)
    assert curve["point_id"] == [3, 8, 4]  # by the motor: 0.75, 0.75, 1.0
    assert curve["intensity"] == [3.0, 4.0, 4.0]  # never the other peak near it
    assert curve["x"] == [0.75, 0.75, 1.0]


def test_rocking_curve_of_a_snake_scan_is_the_file_s_for_every_clique(tmp_path):
    """A snake scan through the runner with a live lane, its messages through the web
    view's state: each clique's curve is the one `peakstream rocking` reads from the file
    (its members only, not the other spots on the same pixels of other rows)."""
    import zmq

    from stream.config.schema import Config
    from stream.offline.rocking import rocking_curve
    from stream.run.runner import ScanRunner
    from stream.service.live import LiveLane
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig
    from stream.wire.codec import encode
    from tests.support.paths import CONFIGS

    conf = SimConfig(npoints=640, shape=(128, 160), spots=20, seed=5, trajectory="snake",
                     nrows=16)
    lane = LiveLane("tcp://127.0.0.1:0", sndhwm=1_000_000)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(lane.endpoint)
    for _ in range(600):  # the subscription is in place once a message comes through
        lane.publish("hello", {})
        if sub.poll(100):
            break
    else:
        raise AssertionError("the live lane never reached the subscriber")
    path = tmp_path / "snake.h5"
    sim = Simulation(conf)
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=path)
    runner.live = lane
    runner.handle(encode(sim.start("snake")))
    for i in range(conf.npoints):
        runner.handle(encode(sim.point(i, "snake")))
    runner.handle(encode(sim.end("snake")))
    runner.close()
    state = LiveState()
    while True:
        assert sub.poll(10_000), "the scan's end never came"
        topic, body = unpack(sub.recv())
        state.apply(topic, body)
        if topic == "progress" and body.get("ended"):
            break
    sub.close()
    lane.close()
    view = state.scan
    assert view.ncliques == len(view.cliques) > 0
    spanning = 0
    for clique in view.cliques:
        want = rocking_curve(path, clique["clique_id"])
        got = adapters.rocking_curve(clique, view.peaks, view.xs)
        assert sorted(got["point_id"]) == want["point_id"].tolist()
        order = np.argsort(got["point_id"])
        np.testing.assert_allclose(np.asarray(got["intensity"])[order], want["intensity"],
                                   rtol=1e-6)
        np.testing.assert_allclose(np.asarray(got["x"])[order], want["omega"])
        assert got["x"] == sorted(got["x"])
        spanning += clique["last_point"] - clique["first_point"] + 1 > conf.npoints // conf.nrows
    assert spanning  # some cliques span rows: the case the points from first to last got wrong


def test_header_progress_text_and_live_light():
    counts = adapters.scan_counts({"linked": 30, "received": 32, "missing": 1, "bad": 0,
                                   "npoints": 60, "lag": 2})
    h = adapters.header("s1", "running", counts, {"received": 99.6}, 0.5, 3.0)
    assert h["progress"] == "30/60 linked" and h["fraction"] == 0.5 and h["live"] == "live"
    assert "lag 2" in h["details"] and "100/s in" in h["details"]
    assert adapters.header("s1", "running", counts, {}, 4.0, 3.0)["live"] == "stale"
    assert adapters.header("", "", adapters.scan_counts(None), {}, None, 3.0)["live"] == \
        "no data"
    open_ended = adapters.scan_counts({"linked": 5, "npoints": None})
    assert adapters.header("s", "running", open_ended, {}, 0.1, 3.0)["progress"] == "5 linked"


def test_html_table_escapes_text_and_formats_numbers():
    cols = [("name", "name", ""), ("x", "x", ".1f")]
    text = adapters.html_table(cols, [{"name": "<a&b>", "x": 1.25}, {"name": "c",
                                                                      "x": math.nan}])
    assert "<td>&lt;a&amp;b&gt;</td>" in text and '<td class="n">1.2</td>' in text
    assert '<td class="n">-</td>' in text
    assert "none yet" in adapters.html_table(cols, [])


def test_param_change_text_names_the_point():
    ok = {"ok": True, "node": "threshold", "key": "cut", "value": 50.0, "old": 40.0,
          "newest_received": 17}
    assert adapters.param_change_text(ok) == ("threshold.cut = 50.0 (was 40.0), from the "
                                              "first point accepted after point 17")
    assert adapters.param_change_text({"ok": False, "error": "no"}) == "refused: no"


def test_applied_changes_from_the_live_lane_are_kept_with_their_point():
    state = LiveState()
    for i in range(60):
        state.apply("param", {"scan_id": "s", "point_id": 100 + i, "node": "threshold",
                              "key": "cut", "value": float(i), "old": float(i - 1)})
    assert state.nchanges == 60 and len(state.changes) == 50  # the last 50 kept
    assert state.changes[-1] == ("threshold.cut = 59.0 (was 58.0) applies from point 159 "
                                 "of scan s")
    assert state.changes[0].endswith("applies from point 110 of scan s")


def feed_scan(state: LiveState, scan: str, n: int, nfast: int = 4) -> RunningMap:
    rm = RunningMap(Start("snake", n, nfast))
    for pid in range(n):
        body = peaks_msg(scan, pid, [5.0] * (pid % 3), [6.0] * (pid % 3),
                         [10.0] * (pid % 3), omega=0.5 * pid, radial=[pid, 2 * pid],
                         roi=float(pid))
        state.apply("peaks", body)
        rm.add(pid, float(np.sum(body["sum_intensity"])), body["motors"])
    state.apply("map", wire("map", rm.message(scan)))
    state.apply("progress", wire("progress", {
        "state": "running", "scan": {"scan_id": scan, "npoints": n, "linked": n,
                                     "received": n, "missing": 0, "bad": 0, "lag": 0,
                                     "file": f"{scan}.h5"}, "rates": {"linked": 10.0}}))
    return rm


def test_state_keeps_the_scan_so_far_and_follows_the_next():
    state = LiveState()
    feed_scan(state, "s1", 8)
    view = state.scan
    assert view.rows["point_id"] == list(range(8))
    assert view.rows["npeaks"] == [p % 3 for p in range(8)]
    assert view.fast == "omega" and view.xs[3] == 1.5
    assert view.radial_name == "integrate1d" and view.radial_n == 8
    np.testing.assert_allclose(view.radial_total, [28.0, 56.0])
    assert view.scalars["roi_a"][5] == 5.0 and view.scalars["peak count"][4] == 1
    state.apply("peaks", peaks_msg("s1", 3, [1.0], [1.0], [1.0], 0.0))  # a duplicate
    assert len(view.rows["point_id"]) == 8
    assert state.header()["progress"] == "8/8 linked"
    assert state.scans["s1"]["points"] == "8/8"
    state.apply("progress", wire("progress", {"state": "idle", "scan": None, "ended": {
        "scan_id": "s1", "status": "success", "reason": "", "file": "s1.h5", "linked": 8,
        "received": 8, "missing": 0, "bad": 0, "cliques": 3}}))
    assert state.header()["state"] == "success" and state.scans["s1"]["cliques"] == 3
    generation = state.generation
    state.apply("frame", wire("frame", {"scan_id": "s0", "point_id": 1, "bin": 1,
                                        "image": array(np.ones((2, 2), np.float32))}))
    assert state.scan.frame is None  # an older scan's late frame is not shown
    feed_scan(state, "s2", 4)
    assert state.generation == generation + 1 and state.scan.scan_id == "s2"
    assert list(state.scans) == ["s1", "s2"] and state.header()["scan"] == "s2"


def test_inbox_keeps_the_newest_snapshot_and_every_event_in_order():
    inbox = Inbox("inproc://nobody-publishes-here")
    try:
        for i in range(5):
            inbox.put("progress", {"i": i})
            inbox.put("peaks", {"i": i})
        events, snapshots = inbox.take()
        assert snapshots == {"progress": {"i": 4}}
        assert [b["i"] for _, b in events] == list(range(5))
        assert inbox.take() == ([], {})
        # a scan's end is an event: a later progress never hides it, an earlier one goes
        inbox.put("progress", {"state": "running"})
        inbox.put("progress", {"state": "idle", "ended": {"scan_id": "a"}})
        inbox.put("progress", {"state": "idle"})
        events, snapshots = inbox.take()
        assert events == [("progress", {"state": "idle", "ended": {"scan_id": "a"}})]
        assert snapshots == {"progress": {"state": "idle"}}
    finally:
        inbox.close()


def test_page_document_builds_and_refreshes_from_the_state():
    from bokeh.document import Document

    from stream.service.web.page import Page

    state = LiveState()
    page = Page(Document(), state)
    feed_scan(state, "s1", 8)
    state.apply("cliques", wire("cliques", {"scan_id": "s1", "point_id": 8, "count": 1,
                                            "clique_id": array(np.array([0])),
                                            "s_raw": array(np.array([5.0])),
                                            "f_raw": array(np.array([6.0])),
                                            "sum_intensity": array(np.array([30.0])),
                                            "first_point": array(np.array([1])),
                                            "last_point": array(np.array([2])),
                                            "member_clique_id": array(np.zeros(3, int)),
                                            "member_point_id": array(np.array([1, 2, 2])),
                                            "member_index": array(np.array([0, 0, 1])),
                                            "member_share": array(np.ones(3))}))
    page.update()
    assert page.points.data["point_id"] == list(range(8))
    assert page.map.data["image"][0].shape == (2, 4)
    assert "<td class=\"n\">0</td>" in page.cliques.text
    assert page.radial.data["average"] == [3.5, 7.0]
    assert "<td>s1</td>" in page.scans.text and "<td>8/8</td>" in page.scans.text
    assert '"progress": "8/8 linked"' in page.header.text
    assert page.clique_pick.value.startswith("0: omega")  # the newest, until one is picked
    assert page.rocking.data["point_id"] == [1, 2]
    assert page.rocking.data["intensity"] == [10.0, 20.0]
    page.map_what.value = "roi_a"
    assert np.nanmax(page.map.data["image"][0]) == 7.0
    feed_scan(state, "s2", 4)
    page.update()  # a page left open follows the next scan
    assert page.points.data["point_id"] == list(range(4))
    assert "none yet" in page.cliques.text and page.clique_pick.options == []


def test_the_rocking_curve_picker_follows_the_newest_until_one_is_picked():
    """Before: the page's own first choice counted as a pick (it stuck to clique 0), and
    the last scan's clique stayed in the plot's title when the next scan began."""
    from bokeh.document import Document

    from stream.service.web.page import Page

    state = LiveState()
    page = Page(Document(), state)

    def closed(cid: int, scan: str) -> None:
        state.apply("cliques", wire("cliques", {
            "scan_id": scan, "point_id": 8, "count": 1, "clique_id": array(np.array([cid])),
            "s_raw": array(np.array([5.0])), "f_raw": array(np.array([6.0])),
            "sum_intensity": array(np.array([30.0])), "first_point": array(np.array([1])),
            "last_point": array(np.array([2]))}))
        page.update()

    feed_scan(state, "s1", 8)
    closed(0, "s1")
    assert page.clique_pick.value.startswith("0: ")
    closed(1, "s1")
    assert page.clique_pick.value.startswith("1: ")  # the newest
    assert page.rocking_fig.title.text.startswith("rocking curve of clique 1 ")
    page.clique_pick.value = page.clique_pick.options[-1]  # a user picks the oldest, 0
    closed(2, "s1")
    assert page.clique_pick.value.startswith("0: ")  # a pick stays
    assert page.rocking_fig.title.text.startswith("rocking curve of clique 0 ")
    feed_scan(state, "s2", 4)
    page.update()  # the next scan: nothing picked, no title of the last scan's clique
    assert page.clique_pick.value == "" and page.clique_pick.options == []
    assert page.rocking_fig.title.text == "rocking curve: pick a clique"
    closed(0, "s2")
    closed(1, "s2")
    assert page.clique_pick.value.startswith("1: ")  # the newest again
