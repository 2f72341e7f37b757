"""P9: the web view's latency, from a point's send to its peaks on the page, at 100 Hz.

    python tools/bench_web.py                          # 5 scans of 300 points at 100 Hz
    python tools/bench_web.py --rate 100 --points 500 --repeats 5 --json p9.json

`peakstream daemon` runs in a subprocess with its web view (`[web] port = 0`, a child
process), the simulated 256 x 256 frames of the tests (`--shape`, `--spots`). A headless
Chromium (Debian's, driven by selenium) holds the page open; a MutationObserver in the
page stamps (browser wall clock) every change of the header's `ps-last` element (the
newest point the page has drawn: its peaks are in the per-point plot from that moment).
A point is *visible* at the first stamp that shows it or a later point. This process
sends the points at `--rate` Hz (the wall clock before each send is the point's time)
and, as the reference measured in the same run, takes the live lane's `peaks` messages
on a SUB of its own (P5's latency: send -> live message). One machine, one clock.

Printed: machine, versions, then per scan and over all points min / median / p99 / max
of the page latency, of the live-lane latency and of their difference point by point
(the web view's own share, which the processor's lag on a loaded machine does not move)
in ms, and the ratio page / lane. Target
(TARGETS.md P9): median <= 0.5 s, p99 <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchinfo import cpu_model, package_version  # noqa: E402

from stream.service.live import unpack  # noqa: E402
from stream.sources.simulate import Simulation  # noqa: E402
from stream.sources.simulate.config import SimConfig  # noqa: E402
from stream.wire.codec import encode  # noqa: E402
from tests.support.browser import Browser  # noqa: E402
from tests.support.daemon import DaemonProcess, daemon_config, wait_until  # noqa: E402

PAGE = re.compile(r"peakstream web: the page is on (http://\S+) ")
OBSERVE = """
window.psSeen = [];
const target = document.getElementById("ps-last");
new MutationObserver(() => window.psSeen.push(
    [performance.timeOrigin + performance.now(), target.textContent])
).observe(target, {childList: true, characterData: true, subtree: true});
"""


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, float)
    if not a.size:
        return {"n": 0}
    return {"n": int(a.size), "min": float(a.min()), "median": float(np.median(a)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


class LaneClock:
    """A SUB on the live lane: arrival wall clock of each point's `peaks` message."""

    def __init__(self, endpoint: str):
        self.seen: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"peaks ")
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.connect(endpoint)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(100):
                msg = self.sock.recv()
                now = time.time()
                _, body = unpack(msg)
                self.seen[(body["scan_id"], body["point_id"])] = now

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close(linger=0)


def page_times(seen: list[list], sent: list[float]) -> list[float | None]:
    """Per point, ms from its send to the first page stamp showing it or a later point
    (None: never shown)."""
    stamps = []
    for t_ms, text in seen:
        head = str(text).split(":")[0]
        if head.isdigit():
            stamps.append((t_ms / 1000.0, int(head)))
    out = []
    for pid, t_send in enumerate(sent):
        t = next((ts for ts, shown in stamps if shown >= pid and ts >= t_send), None)
        out.append(None if t is None else (t - t_send) * 1000.0)
    return out


def run_scan(push, sim: Simulation, scan_id: str, n: int, rate: float) -> list[float]:
    points = [encode(sim.point(i, scan_id)) for i in range(n)]  # made before the clock
    push.send_multipart(encode(sim.start(scan_id)), copy=False)
    sent = []
    t0 = time.perf_counter()
    for i, msg in enumerate(points):
        pause = t0 + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent.append(time.time())
        push.send_multipart(msg, copy=False)
    push.send_multipart(encode(sim.end(scan_id)), copy=False)
    return sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="points per second (100)")
    ap.add_argument("--points", type=int, default=300, help="points per scan (300)")
    ap.add_argument("--repeats", type=int, default=5, help="measured scans (5)")
    ap.add_argument("--shape", type=int, nargs=2, default=(256, 256))
    ap.add_argument("--spots", type=int, default=24)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    sim = Simulation(SimConfig(npoints=args.points, shape=tuple(args.shape),
                               spots=args.spots, seed=3))
    tmp = Path(tempfile.mkdtemp(prefix="bench_web-"))
    config = daemon_config(tmp, "[web]\nport = 0\n[live]\ninterval = 0.2\n")
    d = DaemonProcess(config, tmp / "out")
    browser = lane = None
    push = zmq.Context.instance().socket(zmq.PUSH)
    try:
        url = wait_until(lambda: (m := PAGE.search(d.text())) and m.group(1), limit=120,
                         why="the web view's address")
        lane = LaneClock(d.live)
        browser = Browser()
        browser.open(url)
        browser.wait_for("ps-live", lambda t: t == "live", timeout=300)
        push.setsockopt(zmq.SNDHWM, 100_000)
        push.connect(d.endpoint)
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
        print(f"versions: python {sys.version.split()[0]}, bokeh {package_version('bokeh')}, "
              f"selenium {package_version('selenium')}, chromium "
              f"{browser.driver.capabilities.get('browserVersion', '?')}")
        print(f"frames {tuple(args.shape)} uint16, {args.spots} spots, {args.points} points "
              f"per scan at {args.rate:g} Hz, 1 warm-up scan + {args.repeats} measured")
        print(f"{'scan':>8} {'what':>6} {'n':>5} {'min':>8} {'median':>8} {'p99':>8} "
              f"{'max':>8}  (ms)")
        all_page, all_lane, all_extra, per_scan = [], [], [], []
        for k in range(args.repeats + 1):
            scan = f"web{k}"
            browser.driver.execute_script(OBSERVE)
            sent = run_scan(push, sim, scan, args.points, args.rate)
            browser.wait_for("ps-state", lambda t, s=scan: t in ("success", "abort", "fail")
                             and browser.text("ps-scan") == s, timeout=600)
            seen = browser.driver.execute_script("return window.psSeen;")
            shown = page_times(seen, sent)
            page = [v for v in shown if v is not None]
            lane_ms = [(lane.seen[(scan, i)] - t) * 1000.0 for i, t in enumerate(sent)
                       if (scan, i) in lane.seen]
            # the web view's own share: page minus live lane, point by point
            extra = [v - (lane.seen[(scan, i)] - sent[i]) * 1000.0
                     for i, v in enumerate(shown) if v is not None and (scan, i) in lane.seen]
            if k == 0:
                continue  # warm-up
            all_page += page
            all_lane += lane_ms
            all_extra += extra
            per_scan.append({"scan": scan, "page": stats(page), "lane": stats(lane_ms),
                             "page_minus_lane": stats(extra)})
            for what, v in (("page", stats(page)), ("lane", stats(lane_ms)),
                            ("p-l", stats(extra))):
                print(f"{scan:>8} {what:>6} {v['n']:>5} {v.get('min', 0):8.1f} "
                      f"{v.get('median', 0):8.1f} {v.get('p99', 0):8.1f} "
                      f"{v.get('max', 0):8.1f}")
        sp, sl, se = stats(all_page), stats(all_lane), stats(all_extra)
        medians = [s["page"]["median"] for s in per_scan]
        print(f"{'all':>8} {'page':>6} {sp['n']:>5} {sp['min']:8.1f} {sp['median']:8.1f} "
              f"{sp['p99']:8.1f} {sp['max']:8.1f}")
        print(f"{'all':>8} {'lane':>6} {sl['n']:>5} {sl['min']:8.1f} {sl['median']:8.1f} "
              f"{sl['p99']:8.1f} {sl['max']:8.1f}")
        print(f"{'all':>8} {'p-l':>6} {se['n']:>5} {se['min']:8.1f} {se['median']:8.1f} "
              f"{se['p99']:8.1f} {se['max']:8.1f}   (page minus lane: the web view's share)")
        print(f"page median over scans: min {min(medians):.1f} / median "
              f"{statistics.median(medians):.1f} / max {max(medians):.1f} ms")
        print(f"page / lane: median {sp['median'] / sl['median']:.1f}x, p99 "
              f"{sp['p99'] / sl['p99']:.1f}x; points not on the page "
              f"{args.repeats * args.points - sp['n']}")
        print(f"P9 target: median <= 500 ms ({'met' if sp['median'] <= 500 else 'NOT met'}), "
              f"p99 <= 1500 ms ({'met' if sp['p99'] <= 1500 else 'NOT met'})")
        if args.json:
            figures = {"page": sp, "lane": sl, "page_minus_lane": se, "scans": per_scan,
                       "args": vars(args)}
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        push.close(linger=0)
        if browser is not None:
            browser.close()
        if lane is not None:
            lane.close()
        d.signal(signal.SIGTERM)
        d.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
