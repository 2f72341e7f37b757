"""What the web view keeps on the server: the scan in progress (or the last one) and the
scans seen so far, fed by the live lane. Pages only read it, so a page opened mid-scan
shows the scan so far and ten pages cost the processor nothing.

`Inbox` is the live lane's subscriber, in a thread of its own: the snapshot topics
(progress, frame, map) are kept latest-only, the event topics (peaks, cliques, and the
progress message that reports a scan's end) go through a bounded queue (the oldest
dropped and counted when it is full). `LiveState.drain` takes both on the server's own
loop, so the state has one writer and needs no lock.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import numpy as np
import zmq

from stream.service.live import unpack
from stream.service.web import adapters

log = logging.getLogger(__name__)

SNAPSHOTS = ("progress", "map", "frame")
EVENTS = ("peaks", "cliques", "param")
EVENT_QUEUE = 20_000  # peaks / cliques messages held between two drains
KEEP_POINTS = 100_000  # points whose 2D peaks and radial pattern are kept (map clicks)
KEEP_CLIQUES = 500  # rows of the cliques table
KEEP_SCANS = 200  # rows of the scans table
KEEP_CHANGES = 50  # parameter changes kept for the pages
HISTORY_TRIES = 5  # progress messages at which a resumed scan's file is read, at most


class Inbox:
    """The live lane's SUB in a thread: latest snapshots and a bounded event queue."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.events: collections.deque = collections.deque(maxlen=EVENT_QUEUE)
        self.dropped = 0
        self.bad = 0
        self.received = 0
        self.last_message: float | None = None  # time.monotonic() of the newest
        self._lock = threading.Lock()
        self._stop = threading.Event()
        sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:  # here, so that an endpoint zmq cannot read is refused at once, in one line
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ValueError(f"not a live lane endpoint zmq can connect to: {endpoint!r} "
                             f"({exc}; e.g. tcp://127.0.0.1:5556)") from None
        self._thread = threading.Thread(target=self._run, args=(sock,), name="web-live-lane",
                                        daemon=True)  # the socket is the thread's from now
        self._thread.start()

    def _run(self, sock: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                message = sock.recv()
                try:
                    topic, body = unpack(message)
                except Exception as exc:  # not ours, or damaged: counted, never fatal
                    self.bad += 1
                    log.warning("live lane: a message that cannot be read (%s)", exc)
                    continue
                self.put(topic, body)
        finally:
            sock.close(linger=0)

    def put(self, topic: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.received += 1
            self.last_message = time.monotonic()
            if topic == "progress" and body.get("ended"):  # a scan's end is never conflated
                self.snapshots.pop("progress", None)  # (what came before it is older)
                self._event(topic, body)
            elif topic in SNAPSHOTS:
                self.snapshots[topic] = body
            elif topic in EVENTS:
                self._event(topic, body)

    def _event(self, topic: str, body: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append((topic, body))

    def take(self) -> tuple[list[tuple[str, dict]], dict[str, dict]]:
        """The queued events (in order) and the newest snapshot of each topic."""
        with self._lock:
            events, self.events = list(self.events), collections.deque(maxlen=EVENT_QUEUE)
            snapshots, self.snapshots = self.snapshots, {}
        return events, snapshots

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class ScanView:
    """One scan as the page shows it, built from its live messages."""

    def __init__(self, scan_id: str):
        self.scan_id = scan_id
        self.fast = ""  # the motor the per-point plot is drawn against
        self.rows: dict[str, list] = {k: [] for k in ("point_id", "x", "npeaks", "intensity")}
        self.seen: set[int] = set()
        self.max_intensity = 0.0  # for the per-point plot's right axis
        self.peaks: collections.OrderedDict[int, dict[str, np.ndarray]] = \
            collections.OrderedDict()
        self.xs: dict[int, float] = {}
        self.scalars: dict[str, dict[int, float]] = {"peak count": {}}
        self.radial_name = ""
        self.radials: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.radial_latest: np.ndarray | None = None
        self.radial_total: np.ndarray | None = None
        self.radial_n = 0
        self.frame: dict[str, Any] | None = None
        self.map: dict[str, Any] | None = None
        self.cliques: collections.deque = collections.deque(maxlen=KEEP_CLIQUES)
        self.ncliques = 0
        self.clique_ids: set[int] = set()  # (a resumed scan's file and lane may both say one)
        self.history = 0  # tries to read a resumed scan's points before its restart (-1: done)
        self.history_file = ""  # the file they were read from
        self.status: dict[str, Any] = {}
        self.rates: dict[str, float] = {}
        self.npoints: int | None = None
        self.ended: dict[str, Any] | None = None
        self.version = {k: 0 for k in ("points", "frame", "map", "cliques", "radial")}

    def add_point(self, body: dict[str, Any]) -> None:
        pid = int(body["point_id"])
        if pid in self.seen:
            return
        self.seen.add(pid)
        if not self.fast:
            self.fast = adapters.fast_motor(body.get("motors") or {})
        row = adapters.point_row(body, self.fast)
        for k in self.rows:
            self.rows[k].append(row[k])
        self.xs[pid] = row["x"]
        self.max_intensity = max(self.max_intensity, row["intensity"])
        self.scalars["peak count"][pid] = row["npeaks"]
        if "s_raw" in body:
            self.peaks[pid] = {k: body[k] for k in ("s_raw", "f_raw", "sum_intensity", "npx")
                               if k in body}
            if len(self.peaks) > KEEP_POINTS:
                self.peaks.popitem(last=False)
        for name, value in (body.get("outputs") or {}).items():
            value = np.asarray(value)
            if value.ndim == 0 or value.size == 1:
                self.scalars.setdefault(name, {})[pid] = float(value.reshape(-1)[0])
            elif value.ndim == 1 and (not self.radial_name or name == self.radial_name) \
                    and not name.endswith("_error"):
                self._add_radial(name, pid, value)
        self.version["points"] += 1

    def _add_radial(self, name: str, pid: int, value: np.ndarray) -> None:
        value = value.astype(np.float32)
        if self.radial_total is not None and self.radial_total.shape != value.shape:
            return
        self.radial_name = name
        self.scalars.setdefault(f"{name} sum", {})[pid] = float(np.nansum(value))
        self.radials[pid] = value
        if len(self.radials) > KEEP_POINTS:
            self.radials.popitem(last=False)
        self.radial_latest = value
        self.radial_total = value.astype(np.float64) if self.radial_total is None \
            else self.radial_total + value
        self.radial_n += 1
        self.version["radial"] += 1

    def add_cliques(self, body: dict[str, Any], older: bool = False) -> None:
        """A `cliques` message's new cliques (`older`: closed before those shown)."""
        rows = adapters.clique_rows(body, self.fast or "omega")
        new = [{k: v[i] for k, v in rows.items()} for i, c in enumerate(rows["clique_id"])
               if c not in self.clique_ids]
        self.clique_ids.update(r["clique_id"] for r in new)
        self.ncliques += len(new)
        if older:
            new += list(self.cliques)
            self.cliques.clear()
        self.cliques.extend(new)
        self.version["cliques"] += 1

    def add_history(self, stored: dict[str, dict[str, np.ndarray]]) -> None:
        """A resumed scan's points before its restart and the cliques its file holds
        (`adapters.stored_messages`), before what the live lane brought since."""
        bodies, cliques = adapters.stored_messages(stored)
        live_rows, live_peaks = self.rows, self.peaks
        self.rows = {k: [] for k in live_rows}
        self.peaks = collections.OrderedDict()
        for body in bodies:
            self.add_point(body)
        for k, values in live_rows.items():
            self.rows[k] += values
        self.peaks.update(live_peaks)
        while len(self.peaks) > KEEP_POINTS:
            self.peaks.popitem(last=False)
        self.add_cliques(cliques, older=True)
        self.history = -1

    def layout(self) -> tuple[str, int, int] | None:
        return adapters.map_layout(self.map) if self.map is not None else None

    def counts(self) -> dict[str, Any]:
        status = dict(self.status)
        if self.ended:
            status.update({k: self.ended[k] for k in ("linked", "received", "missing", "bad")
                           if k in self.ended})
            status["lag"] = 0
        hint = self.npoints
        if hint is None and self.map is not None:
            hint = int(np.asarray(self.map["sum_intensity"]).size) if self.ended else None
        return adapters.scan_counts(status, hint)


class LiveState:
    """The current scan (or the last one), the scans so far, and when the lane last spoke."""

    def __init__(self, stale_after: float = 3.0):
        self.stale_after = stale_after
        self.scan: ScanView | None = None
        self.scans: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.state = ""
        self.last_message: float | None = None
        self.generation = 0  # bumped when another scan becomes the current one
        self.changes: list[str] = []  # parameter changes: asked from a page, applied
        self.nchanges = 0  # changes so far (the list keeps the last KEEP_CHANGES)

    def add_change(self, text: str) -> None:
        self.changes = [*self.changes[-(KEEP_CHANGES - 1):], text]
        self.nchanges += 1

    def _view(self, scan_id: str, again: bool = False) -> ScanView:
        """The scan's view (`again`: a new one for the same scan id)."""
        if self.scan is None or self.scan.scan_id != scan_id or again:
            self.scan = ScanView(scan_id)
            self.generation += 1
            self.scans[scan_id] = adapters.scan_row({"scan_id": scan_id})
            while len(self.scans) > KEEP_SCANS:
                self.scans.popitem(last=False)
        return self.scan

    def apply(self, topic: str, body: dict[str, Any]) -> None:
        """One live message."""
        if topic == "peaks":
            self._view(body["scan_id"]).add_point(body)
        elif topic == "cliques":
            self._view(body["scan_id"]).add_cliques(body)
        elif topic == "progress":
            self._progress(body)
        elif topic == "param":
            self.add_change(adapters.param_applied_text(body))
        elif topic in ("frame", "map"):
            if self.scan is not None and self.scan.scan_id != body["scan_id"]:
                return  # a late message of an older scan (its points come first)
            view = self._view(body["scan_id"])
            setattr(view, topic, body)
            view.version[topic] += 1

    def _progress(self, body: dict[str, Any]) -> None:
        self.state = body.get("state", "")
        scan = body.get("scan")
        if scan:
            view = self._view(scan["scan_id"])
            if view.history_file and scan.get("file") != view.history_file:
                view = self._view(scan["scan_id"], again=True)  # another acquisition of
                # that scan id, written to a new file (the resumed one is left as it was)
            view.status = scan
            view.rates = body.get("rates") or {}
            if scan.get("npoints") is not None:
                view.npoints = int(scan["npoints"])
            if scan.get("resumed_at") and 0 <= view.history < HISTORY_TRIES:
                self._history(view, scan["file"], int(scan["resumed_at"]))
            self.scans[view.scan_id] = adapters.scan_row(scan, view.npoints)
        ended = body.get("ended")
        if ended:
            sid, npoints = ended["scan_id"], None
            if self.scan is not None and self.scan.scan_id == sid:
                self.scan.ended = ended
                npoints = self.scan.counts()["npoints"]
            self.scans[sid] = adapters.scan_row(ended, npoints)

    def _history(self, view: ScanView, path: str, before: int) -> None:
        """A resumed scan: its points before the restart from its file (the lane never
        sent them); every page then draws the scan again, from its first point."""
        from stream.store.reader import open_output, points_before

        view.history += 1
        try:
            with open_output(path) as f:
                stored = points_before(f, before)
        except (OSError, KeyError, ValueError) as exc:  # (a commit under way: tried again)
            if view.history == HISTORY_TRIES:
                log.warning("scan %s: its points before the restart are not shown: %s",
                            view.scan_id, exc)
            return
        view.add_history(stored)
        view.history_file = path
        self.generation += 1

    def drain(self, inbox: Inbox) -> int:
        """Apply what the inbox holds: events in order, then the newest snapshots."""
        events, snapshots = inbox.take()
        for topic, body in events:
            self._safe(topic, body)
        for topic in SNAPSHOTS:
            if topic in snapshots:
                self._safe(topic, snapshots[topic])
        if inbox.last_message is not None:
            self.last_message = inbox.last_message
        return len(events) + len(snapshots)

    def _safe(self, topic: str, body: dict[str, Any]) -> None:
        try:
            self.apply(topic, body)
        except (KeyError, TypeError, ValueError) as exc:  # a message not as documented
            log.warning("live lane: %s message skipped: %r", topic, exc)

    def age(self) -> float | None:
        """s since the live lane last spoke (None: never)."""
        return None if self.last_message is None else time.monotonic() - self.last_message

    def header(self) -> dict[str, Any]:
        view = self.scan
        counts = view.counts() if view else adapters.scan_counts(None)
        state = self.state
        if view is not None and view.ended and state != "running":
            state = view.ended.get("status", state)
        return adapters.header(view.scan_id if view else "", state, counts,
                               view.rates if view and not view.ended else {}, self.age(),
                               self.stale_after)
