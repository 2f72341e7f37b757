"""The web view in a real headless Chromium: a daemon subprocess with `[web] port = 0`
(its child `peakstream web`), a simulated grid scan streamed in; a page open before the
scan, a page opened mid-scan, the same page across two scans; a screenshot for docs/.
And the page's control client against the daemon's control socket."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import h5py
import pytest

from stream.core.table import read_table
from stream.service.web.adapters import param_change_text
from stream.service.web.server import Control
from stream.service.web.state import Inbox
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from tests.support.browser import Browser
from tests.support.daemon import Sender, completed, daemon_config, wait_until
from tests.support.paths import ROOT

pytestmark = pytest.mark.system

GRID = SimConfig(npoints=160, nrows=8, trajectory="snake", shape=(256, 256), spots=40,
                 sigma_px=(1.0, 1.5), seed=1, dty_step=0.0)  # 8 back-and-forth rows
PAGE = re.compile(r"peakstream web: the page is on (http://\S+) ")
# point_timeout, end_timeout: on a loaded CI machine, no point declared missing and no
# scan ended for silence while the test opens a browser between the halves of a scan
WEB = ("[web]\nport = 0\n[live]\ninterval = 0.2\nframe_rate = 5.0\nframe_bin = 2\n"
       "[source]\npoint_timeout = 120.0\nend_timeout = 600.0\n")


def page_url(d) -> str:
    return wait_until(lambda: (m := PAGE.search(d.text())) and m.group(1), limit=120,
                      why="the web view's address on the daemon's stderr")


def test_pages_follow_scans_mid_scan_and_across_two(daemon, tmp_path):
    n = GRID.npoints
    d = daemon(daemon_config(tmp_path, WEB))
    url = page_url(d)
    first, late = Browser(), None
    try:
        first.open(url)
        first.wait_for("ps-live", lambda t: t == "live")  # the idle daemon's progress
        sender = Sender(d.endpoint, Simulation(GRID))
        sender.start("grid1")
        sender.points("grid1", range(n // 2), rate=50)
        # mid-scan: the first page followed it, a page opened now shows the scan so far
        first.wait_for("ps-progress", lambda t: t.startswith(f"{n // 2}/{n}"))
        late = Browser()
        late.open(url)
        assert late.wait_for("ps-scan", lambda t: t == "grid1") == "grid1"
        late.wait_for("ps-progress", lambda t: t.startswith(f"{n // 2}/{n}"))
        assert late.wait_for("ps-state", lambda t: t == "running") == "running"
        late.wait_for("ps-map", lambda t: t.split()[0] == str(n // 2))
        late.wait_for("ps-frame", lambda t: t.startswith("point "))
        # every point in, not yet the end: the screenshot of a scan in progress (the frame
        # preview of a point of the second half: the kernels are warm by then)
        sender.points("grid1", range(n // 2, n), rate=50)
        first.wait_for("ps-progress", lambda t: t.startswith(f"{n}/{n}"))
        first.wait_for("ps-frame", lambda t: int(t.split()[1]) >= n // 2)
        assert first.text("ps-state") == "running"
        first.screenshot(ROOT / "docs" / "web.png")
        sender.end("grid1")
        assert completed(tmp_path / "out" / "grid1.h5") == "success"
        for page in (first, late):
            page.wait_for("ps-progress", lambda t: t.startswith(f"{n}/{n}"))
            assert page.wait_for("ps-state", lambda t: t == "success") == "success"
            page.wait_for("ps-map", lambda t: t.split()[0] == str(n))
            page.wait_for("ps-cliques", lambda t: int(t) > 0)
        # the same page, left open, shows the next scan
        sender.scan("grid2", rate=100)
        assert first.wait_for("ps-scan", lambda t: t == "grid2") == "grid2"
        first.wait_for("ps-progress", lambda t: t.startswith(f"{n}/{n}"))
        assert first.wait_for("ps-state", lambda t: t == "success") == "success"
        sender.close()
    finally:  # on a failure the fixture kills the daemon (and so its web view)
        first.close()
        if late is not None:
            late.close()
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    child = int(re.search(r"web view: started pid (\d+)", d.text()).group(1))
    with pytest.raises(ProcessLookupError):  # the daemon stopped its web view
        os.kill(child, 0)


def test_control_from_the_page_says_from_which_point(daemon, tmp_path):
    d = daemon(daemon_config(tmp_path))
    control = Control(d.control)
    assert "threshold.cut" in control.settable()
    sender = Sender(d.endpoint, Simulation(GRID))
    sender.start("ctl")
    sender.points("ctl", range(10))
    wait_until(lambda: (d.status().get("scan") or {}).get("received", 0) >= 10,
               why="10 points received")
    reply = control.set("threshold", "cut", "55.5")
    assert reply["ok"] and reply["value"] == 55.5
    text = param_change_text(reply)
    assert text.startswith("threshold.cut = 55.5 (was 40.0)")
    assert f"after point {reply['newest_received']}" in text and reply["newest_received"] >= 9
    refused = control.set("threshold", "no_such_key", "1")
    assert not refused["ok"] and param_change_text(refused).startswith("refused: ")
    # the page's own controls (the button's callback), on a document of its own
    from bokeh.document import Document

    from stream.service.web.page import Page
    from stream.service.web.state import LiveState

    inbox = Inbox(d.live)  # the live lane says from which point each change applied
    wait_until(lambda: inbox.received > 0, why="the live lane's idle progress")
    page = Page(Document(), LiveState(), control, inbox=inbox)
    assert "threshold.cut" in page.param.options
    page.param.value, page.value.value = "threshold.cut", "60"
    page._apply()
    assert "threshold.cut = 60" in page.changes.text
    assert "(was 55.5), from the first point accepted after point" in page.changes.text
    assert d.ask({"cmd": "get", "node": "threshold", "key": "cut"})["params"] == {"cut": 60.0}
    sender.points("ctl", range(10, GRID.npoints))
    sender.end("ctl")
    path = tmp_path / "out" / "ctl.h5"
    assert completed(path) == "success"
    sender.close()
    with h5py.File(path, "r") as f:
        events = read_table(f["entry/process/events"])
    applied = {json.loads(m)["value"]: int(p) for k, m, p in
               zip(events["kind"], events["message"], events["point_id"], strict=True)
               if k == "param"}
    assert sorted(applied) == [55.5, 60.0] and applied[55.5] <= applied[60.0]

    def shown() -> bool:
        page.update()
        return "applies from point" in page.changes.text and "= 60.0" in page.changes.text

    wait_until(shown, why="the applied changes on the page")
    inbox.close()
    for value, pid in applied.items():  # the point the file records, on the page
        assert f"= {value!r} (was" in page.changes.text
        assert f"applies from point {pid} of scan ctl" in page.changes.text


def test_the_daemon_restarts_its_web_view_and_status_shows_it(daemon, tmp_path):
    """A web child killed (-9) was neither logged nor restarted, and status did not mention
    the web view (with port = 0 its port was only on one stderr line). A page left open
    reloads itself from the restarted web view (it stayed stale for ever)."""
    import urllib.request

    d = daemon(daemon_config(tmp_path, WEB))
    url = page_url(d)
    web = wait_until(lambda: (w := d.status()["web"]) and w["state"] == "running" and w,
                     why="the web view in status")
    assert web["url"] == url and web["restarts"] == 0
    with urllib.request.urlopen(url, timeout=60) as page:
        assert page.status == 200
    browser = Browser()
    try:
        browser.open(url)
        browser.wait_for("ps-state", lambda t: t == "waiting")
        browser.driver.execute_script("window.psBeforeRestart = true;")
        with urllib.request.urlopen(url + "ps-alive", timeout=60) as alive:
            before = alive.read().decode()
        assert before in browser.driver.page_source  # the page knows its server
        os.kill(web["pid"], signal.SIGKILL)
        # the page left open reloads itself once the restarted web view answers (before,
        # it stayed on Bokeh's "Reconnecting" for ever): the mark set above is gone
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(browser.driver, 180, poll_frequency=0.2).until(
            lambda drv: drv.execute_script("return window.psBeforeRestart === undefined"
                                           " && document.getElementById('ps-live') !== null"))
        with urllib.request.urlopen(url + "ps-alive", timeout=60) as alive:
            instance = alive.read().decode()
        assert instance != before and instance in browser.driver.page_source
    finally:
        browser.close()
    again = wait_until(lambda: (w := d.status()["web"])["restarts"] == 1
                       and w["state"] == "running" and w, why="the web view's restart")
    assert again["pid"] != web["pid"] and again["url"] == url  # the same port
    assert f"web view: pid {web['pid']} exited with code -9; restarting it (1/3)" in d.text()
    wait_until(lambda: len(PAGE.findall(d.text())) == 2, limit=120, why="its start-up line")
    with urllib.request.urlopen(url, timeout=60) as page:
        assert page.status == 200
    status = subprocess.run([sys.executable, "-m", "stream.cli", "status", "--control",
                             d.control], capture_output=True, text=True, timeout=60)
    assert f"web view    {url} running, 1 restart(s)" in status.stdout, status.stdout
