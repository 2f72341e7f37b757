"""PvaSource: an EPICS areaDetector's NTNDArray PV over pvAccess (p4p), as our messages.

The image PV is monitored (`Context("pva").monitor`, queue of `queue` updates);
each update is a frame: `uniqueId` numbers it (point_id = uniqueId - the scan's
first), the codec areaDetector's codec plugin names is honoured (none; lz4 and
bslz4 are passed on compressed, in our framing, and decoded by the chain), and
motors and counters are the NDAttributes named in `[source] channels` (by
default the attribute of the same name). A scan starts and ends:

* with `acquire_pv` (areaDetector's Acquire, 1 while acquiring) and
  `images_pv` (NumImages): a scan per acquisition of that many points; it ends
  when the last image is in, or `series_timeout` s after Acquire went to 0
  (status abort if images are missing at the end because acquisition stopped early).
  Point 0 is uniqueId ArrayCounter + 1, ArrayCounter (`counter_pv`) read as Acquire
  goes 0 -> 1: areaDetector numbers an acquisition's frames on from it, so frames
  lost at the start are missing points, not a shift of every id. An acquisition
  already running when we connect has no such reference: it is not taken (warned);
* otherwise at the first frame received (point 0, whatever uniqueId it has: no
  sound reference), and it ends `series_timeout` s after the last one
  (open-ended), or when uniqueId goes back (areaDetector counts anew).

pvAccess drops updates when a client falls behind: a gap in `uniqueId` is
counted (`gaps`, `dropped`) and logged, and its points are missing in the scan.
The update a monitor delivers on (re)connecting is the PV's last value, not a
new frame: it is skipped. pvAccess reaches servers through the EPICS
environment (EPICS_PVA_ADDR_LIST, EPICS_PVA_AUTO_ADDR_LIST ...).
"""

from __future__ import annotations

import logging
import queue
import re
import time
from collections import Counter
from typing import Any

import numpy as np

from stream.core.messages import DetectorInfo, End, Point, Start
from stream.sources.bridge import Bridge
from stream.sources.ntndarray import FrameError, attributes, frame_of, stamp

log = logging.getLogger(__name__)

POLL = 0.1  # s the thread waits for an update at most (it checks for stop and timeouts)
UNCONNECTED_REPEAT = 300.0  # s between warnings that a PV is still not connected


class PvaScans:
    """The scan state machine over frame updates, Acquire and NumImages (no pvAccess
    here: `update`, `acquire`, `tick` return our messages)."""

    def __init__(self, name: str, detector: str, motors: list[str], counters: list[str],
                 channels: dict[str, str], trajectory: dict, series_timeout: float,
                 use_acquire: bool, use_counter: bool = False):
        self.name, self.detector = name, detector
        self.motors, self.counters, self.channels = motors, counters, channels
        self.trajectory = trajectory or {"kind": "sweep", **({"fast": motors[0]}
                                                              if motors else {})}
        self.series_timeout, self.use_acquire = series_timeout, use_acquire
        self.use_counter = use_acquire and use_counter
        self.counts: Counter = Counter(scans=0, frames=0, gaps=0, dropped=0, bad=0,
                                       stale=0, outside=0)
        self.counter: int | None = None  # ArrayCounter's last value
        self.base: int | None = None  # ArrayCounter as this acquisition started
        self.joined = False  # this acquisition was running when we connected
        self.taken = False  # this acquisition's scan has started
        self.warned = False  # why its frames are not taken (or not sound) was logged
        self.scan_id = ""
        self.first = self.last = -1
        self.npoints: int | None = None
        self.acquiring = False
        self.images: int | None = None
        self.stopped_at: float | None = None
        self.last_time = 0.0
        self.last_error = ""

    def update(self, value: Any, now: float) -> list:
        uid = int(value.uniqueId)
        out: list = []
        if self.scan_id and uid <= self.last:  # counting anew: a new acquisition
            out += self._end("success", f"uniqueId went back from {self.last} to {uid}")
        if not self.scan_id:
            first = self._first(uid)
            if first is None:
                self.counts["outside"] += 1
                return out
            out += self._start(value, first)
        gap = uid - self.last - 1
        if gap > 0:
            self.counts["gaps"] += 1
            self.counts["dropped"] += gap
            self.last_error = (f"uniqueId {self.last} -> {uid}: {gap} update(s) dropped "
                               f"by pvAccess (points missing)" if self.last >= self.first else
                               f"the acquisition's first {gap} frame(s) (uniqueId {self.first}"
                               f"..{uid - 1}) not received: dropped by pvAccess, or sent before "
                               f"the image PV connected (points missing)")
            log.warning("pva %s: %s", self.name, self.last_error)
        self.last, self.last_time = uid, now
        attrs = attributes(value)
        point = Point(self.scan_id, uid - self.first, stamp(value),
                      {m: attrs[k] for m in self.motors
                       if (k := self.channels.get(m, m)) in attrs},
                      {c: attrs[k] for c in self.counters
                       if (k := self.channels.get(c, c)) in attrs})
        try:
            point.frames[self.detector] = frame_of(value)
            self.counts["frames"] += 1
        except FrameError as exc:
            self.counts["bad"] += 1
            point.extra["error"] = f"uniqueId {uid}: {exc}"
            self.last_error = point.extra["error"]
        out.append(point)
        if self.npoints is not None and point.point_id + 1 >= self.npoints:
            out += self._end("success", "")
        return out

    def _first(self, uid: int) -> int | None:
        """The uniqueId of the scan's point 0 for a frame outside a scan (None: the
        frame is not part of a scan)."""
        if not self.use_acquire:
            return uid
        why = ""
        if not self.acquiring or self.taken:
            return None
        if self.joined:
            why = (f"the acquisition was running when peakstream connected: its first "
                   f"uniqueId is not known, its frames are not taken (uniqueId {uid})")
        elif not self.use_counter or self.base is None:
            if not self.warned and self.use_counter:
                log.warning("pva %s: no ArrayCounter value as the acquisition started (its "
                            "PV not connected): point ids count from the first frame "
                            "received, uniqueId %d", self.name, uid)
            self.warned = True
            return uid
        elif uid <= self.base:
            why = (f"uniqueId {uid} is not after ArrayCounter {self.base} at the "
                   f"acquisition's start: a frame from before it, not taken")
        if why:
            self.last_error = why
            if not self.warned:
                log.warning("pva %s: %s", self.name, why)
            self.warned = True
            return None
        return self.base + 1

    def counted(self, value: int) -> None:
        """ArrayCounter's new value; one that goes down after Acquire went to 1 but before
        the scan started is a reset for this acquisition (seen late) and is its base."""
        if self.acquiring and not self.taken and self.base is not None and value < self.base:
            self.base = value
        self.counter = value

    def _start(self, value: Any, first: int) -> list:
        uid = int(value.uniqueId)
        self.first, self.last = first, first - 1
        self.taken = True
        self.counts["scans"] += 1
        self.scan_id = f"{self.name}-{int(time.time())}-{uid}"
        self.npoints = self.images if self.use_acquire else None
        try:
            f = frame_of(value)
            info = DetectorInfo(tuple(f.shape), np.dtype(f.dtype).name)
        except FrameError:
            dims = [d.size for d in value.dimension][::-1]
            info = DetectorInfo(tuple(dims[-2:]) if len(dims) >= 2 else (0, 0), "uint16")
        log.info("pva %s: scan %s (%s points)", self.name, self.scan_id, self.npoints or "open")
        return [Start(self.scan_id, {self.detector: info}, list(self.motors),
                      list(self.counters), self.npoints, dict(self.trajectory),
                      {"pva": {"pv": self.name, "first_unique_id": first}})]

    def acquire(self, state: bool, now: float, joined: bool = False) -> list:
        """Acquire's new value; `joined`: the first value after connecting (1: an
        acquisition already running, whose start we did not see)."""
        was, self.acquiring = self.acquiring, state
        if state and not was:
            out = self._end("abort", "a new acquisition started") if self.scan_id else []
            self.stopped_at = None
            self.base, self.joined, self.taken, self.warned = self.counter, joined, False, False
            return out
        if was and not state:
            self.stopped_at = now
        return []

    def tick(self, now: float) -> list:
        if not self.scan_id:
            return []
        if self.use_acquire and self.stopped_at is not None \
                and now - max(self.stopped_at, self.last_time) > self.series_timeout:
            n = self.last - self.first + 1
            if self.npoints is not None and n < self.npoints:
                return self._end("abort", f"acquisition stopped after {n} of "
                                          f"{self.npoints} images")
            return self._end("success", "")
        if not self.use_acquire and now - self.last_time > self.series_timeout:
            return self._end("success", "")
        return []

    def _end(self, status: str, reason: str) -> list:
        n = self.last - self.first + 1
        end = End(self.scan_id, status, self.npoints or n, reason)  # the start's npoints
        log.info("pva %s: scan %s ends %s (%d points)%s", self.name, self.scan_id, status, n,
                 f": {reason}" if reason else "")
        self.scan_id = ""
        return [end]


class PvaSource:
    """An NTNDArray PV (and optionally Acquire / NumImages PVs) as our messages."""

    def __init__(self, *, pv: str, motors: list[str], counters: list[str],
                 channels: dict[str, str] | None = None, acquire_pv: str = "",
                 images_pv: str = "", counter_pv: str = "", trajectory: dict | None = None,
                 series_timeout: float = 30.0, queue_size: int = 16, detector: str = "",
                 rcvhwm: int = 64, connect_warning: float = 10.0):
        try:
            from p4p.client.thread import Context
        except ImportError:
            raise ValueError("[source] kind pva needs the p4p package: "
                             "pip install -e '.[epics]'") from None
        self.pv, self.acquire_pv, self.images_pv = pv, acquire_pv, images_pv
        self.counter_pv = counter_pv if acquire_pv else ""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", pv).strip("_") or "pva"
        self.scans = PvaScans(name, detector or "detector", list(motors), list(counters),
                              dict(channels or {}), dict(trajectory or {}), series_timeout,
                              bool(acquire_pv), bool(counter_pv))
        self.endpoint = self.endpoint_bound = f"pva://{pv}"
        self.done = False  # follows scans until closed
        self.updates: queue.Queue = queue.Queue(maxsize=queue_size)
        self.bridge = Bridge("pva", rcvhwm)
        self.sockets = self.bridge.sockets
        self.connected: dict[str, bool] = {}
        # what -> its PV; a PV not connected connect_warning s after start (or after it
        # went away) is warned about, then every UNCONNECTED_REPEAT s
        self.names = {w: n for w, n in (("image", pv), ("acquire", acquire_pv),
                                        ("images", images_pv), ("counter", self.counter_pv)) if n}
        self.down_since = dict.fromkeys(self.names, time.monotonic())
        self.warned_at: dict[str, float] = {}
        self.connect_warning = connect_warning
        self.context = Context("pva", nt=False)
        self.subs = [self.context.monitor(n, self._on(w), notify_disconnect=True, request=(
            f"record[queueSize={queue_size}]" if w == "image" else None))
            for w, n in self.names.items()]
        if acquire_pv and not counter_pv:
            log.warning("pva: no counter_pv (ArrayCounter): point ids count from each "
                        "acquisition's first frame received, shifted if its first frames are lost")
        elif not acquire_pv:
            log.warning("pva: no acquire_pv: a scan starts at the first frame received and "
                        "counts its point ids from there (no reference for the first frame)")
        self.bridge.start(self._run, "pva-source")
        log.info("pva: monitoring %s%s", pv, f" (acquire {acquire_pv})" if acquire_pv else "")

    def _on(self, what: str):
        def callback(value: Any) -> None:  # p4p's worker: hand over, block when full
            while not self.bridge.stopping.is_set():
                try:
                    self.updates.put((what, value), timeout=POLL)
                    return
                except queue.Full:
                    continue
        return callback

    def _run(self) -> None:
        while not self.bridge.stopping.is_set():
            try:
                what, value = self.updates.get(timeout=POLL)
            except queue.Empty:
                what, value = "", None
            now = time.monotonic()
            out = self._handle(what, value, now) if what else []
            out += self.scans.tick(now)
            self._unconnected(now)
            for msg in out:
                self.bridge.emit(msg)

    def _handle(self, what: str, value: Any, now: float) -> list:
        if isinstance(value, Exception):  # Disconnected, RemoteError, ...
            if self.connected.get(what):
                log.warning("pva: %s: %s", what, value)
                self.down_since[what] = now
            self.connected[what] = False
            return []
        fresh = not self.connected.get(what)
        self.connected[what] = True
        self.down_since.pop(what, None)
        if self.warned_at.pop(what, None) is not None:  # it was warned about: over now
            log.info("pva: PV %s (%s) connected", self.names[what], what)
            if self.scans.last_error.startswith(f"PV {self.names[what]} ({what}) not "):
                self.scans.last_error += f" (recovered at {time.strftime('%H:%M:%S')})"
        if what == "image":
            if fresh:  # the PV's last value on (re)connecting: not a new frame
                self.scans.counts["stale"] += 1
                return []
            return self.scans.update(value, now)
        number = value.value if hasattr(value, "value") else value
        if what == "acquire":
            return self.scans.acquire(bool(int(number)), now, joined=fresh)
        if what == "counter":
            self.scans.counted(int(number))
        if what == "images":
            self.scans.images = int(number) if int(number) > 0 else None
        return []

    def _unconnected(self, now: float) -> None:
        """Warn of a PV that has not connected for a while (a wrong name, no IOC, the
        IOC not reachable with these EPICS settings), then now and then."""
        import os

        for what, since in self.down_since.items():
            last = self.warned_at.get(what)
            if now - since < self.connect_warning or (
                    last is not None and now - last < UNCONNECTED_REPEAT):
                continue
            self.warned_at[what] = now
            env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in (
                "EPICS_PVA_ADDR_LIST", "EPICS_PVA_AUTO_ADDR_LIST", "EPICS_PVA_BROADCAST_PORT"))
            self.scans.last_error = (f"PV {self.names[what]} ({what}) not connected for "
                                     f"{now - since:.0f} s: check its name, that the IOC runs, "
                                     f"and the EPICS address settings ({env})")
            log.warning("pva: %s", self.scans.last_error)

    def receive(self, timeout: float = 0.0) -> list[list]:
        return self.bridge.receive(timeout)

    @property
    def following(self) -> str:
        """The scan of the acquisition in progress (ended here: its NumImages in, Acquire
        0 for series_timeout s, or without acquire_pv series_timeout s without a frame),
        "" once the image PV has been away for series_timeout s (the IOC is gone)."""
        s, down = self.scans, self.down_since.get("image")
        if down is not None and time.monotonic() - down > s.series_timeout:
            return ""
        return s.scan_id

    def status(self) -> dict[str, Any]:
        s = self.scans
        return {"kind": "pva", "pv": self.pv, "scan": s.scan_id, **s.counts,
                "connected": self.connected.get("image", False), "last_error": s.last_error}

    def close(self) -> None:
        self.bridge.stopping.set()
        for sub in self.subs:
            sub.close()
        self.context.close()
        self.bridge.close()

    def __enter__(self) -> PvaSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_source(src: dict[str, Any]) -> PvaSource:
    """A PvaSource from a validated `[source]` table with kind = "pva"."""
    return PvaSource(pv=src["pv"], motors=src["motors"], counters=src["counters"],
                     channels=src["channels"], acquire_pv=src["acquire_pv"],
                     images_pv=src["images_pv"],
                     counter_pv=src["counter_pv"] or default_counter_pv(src["acquire_pv"]),
                     trajectory=src["trajectory"],
                     series_timeout=src["series_timeout"], queue_size=src["queue"],
                     detector=src["detector"], rcvhwm=src["rcvhwm"])


def default_counter_pv(acquire_pv: str) -> str:
    """areaDetector's ArrayCounter_RBV beside its Acquire ("13SIM1:cam1:Acquire" ->
    "13SIM1:cam1:ArrayCounter_RBV"); "" when acquire_pv is not named so."""
    return acquire_pv[:-len("Acquire")] + "ArrayCounter_RBV" \
        if acquire_pv.endswith("Acquire") else ""
