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
  (status abort if images are missing at the end because acquisition stopped early);
* otherwise at the first frame, and it ends `series_timeout` s after the last
  one (open-ended), or when uniqueId goes back (areaDetector counts anew).

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
import struct
import time
from collections import Counter
from typing import Any

import numpy as np

from stream.core.encoded import EncodedFrame
from stream.core.messages import DetectorInfo, End, Point, Start
from stream.sources.bridge import Bridge

log = logging.getLogger(__name__)

# areaDetector's NDDataType_t, as its codec plugin stores it in codec.parameters
ND_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "float32", "float64")
POLL = 0.1  # s the thread waits for an update at most (it checks for stop and timeouts)


class FrameError(ValueError):
    """An NTNDArray update that is not a frame we can take; the text says why."""


def frame_of(value: Any) -> np.ndarray | EncodedFrame:
    """The frame of an NTNDArray Value: an array, or an EncodedFrame for lz4 / bslz4."""
    dims = [d.size for d in value.dimension]
    if len(dims) != 2:
        raise FrameError(f"frames are 2D (ColorMode mono), got dimensions {dims}")
    shape = (int(dims[1]), int(dims[0]))  # dimension[0] is the fastest: columns
    data = value.value
    if data is None:
        raise FrameError("the update carries no data")
    codec = value.codec.name or ""
    if codec == "":
        if data.size != shape[0] * shape[1]:
            raise FrameError(f"{data.size} elements for a {shape[0]}x{shape[1]} frame")
        return np.asarray(data).reshape(shape)
    if codec not in ("lz4", "bslz4"):
        raise FrameError(f"codec {codec!r} is not supported (none, lz4, bslz4)")
    code = value.codec.parameters
    if not isinstance(code, (int, np.integer)) or not 0 <= code < len(ND_TYPES):
        raise FrameError(f"codec {codec}: parameters {code!r} is not an NDDataType")
    dtype = np.dtype(ND_TYPES[code])
    body = np.asarray(data).view(np.uint8).tobytes()
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if codec == "bslz4":  # bshuf_compress_lz4 blocks: the HDF5 filter's body
        head = struct.pack(">QI", nbytes, 0)
    else:  # one LZ4 block of the whole frame, without a size: framed as one filter block
        head = struct.pack(">QI", nbytes, nbytes) + struct.pack(">I", len(body))
    try:
        return EncodedFrame.from_buffer(codec, shape, dtype, head + body)
    except ValueError as exc:
        raise FrameError(f"codec {codec}: {exc}") from None


def attributes(value: Any) -> dict[str, float]:
    """The NDAttributes of an update that are numbers."""
    out: dict[str, float] = {}
    for a in value.attribute:
        v = a.value
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[a.name] = float(v)
    return out


def stamp(value: Any) -> float:
    ts = value.dataTimeStamp
    t = ts.secondsPastEpoch + ts.nanoseconds * 1e-9
    return t if t > 0 else time.time()


class PvaScans:
    """The scan state machine over frame updates, Acquire and NumImages (no pvAccess
    here: `update`, `acquire`, `tick` return our messages)."""

    def __init__(self, name: str, detector: str, motors: list[str], counters: list[str],
                 channels: dict[str, str], trajectory: dict, series_timeout: float,
                 use_acquire: bool):
        self.name, self.detector = name, detector
        self.motors, self.counters, self.channels = motors, counters, channels
        self.trajectory = trajectory or {"kind": "sweep", **({"fast": motors[0]}
                                                              if motors else {})}
        self.series_timeout, self.use_acquire = series_timeout, use_acquire
        self.counts: Counter = Counter(scans=0, frames=0, gaps=0, dropped=0, bad=0,
                                       stale=0, outside=0)
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
            if self.use_acquire and not self.acquiring:
                self.counts["outside"] += 1
                return out
            out += self._start(value, uid)
        gap = uid - self.last - 1
        if gap > 0:
            self.counts["gaps"] += 1
            self.counts["dropped"] += gap
            self.last_error = (f"uniqueId {self.last} -> {uid}: {gap} update(s) dropped "
                               f"by pvAccess (points missing)")
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

    def _start(self, value: Any, uid: int) -> list:
        self.first, self.last = uid, uid - 1
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
                      {"pva": {"pv": self.name, "first_unique_id": uid}})]

    def acquire(self, state: bool, now: float) -> list:
        was, self.acquiring = self.acquiring, state
        if state and not was:
            out = self._end("abort", "a new acquisition started") if self.scan_id else []
            self.stopped_at = None
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
        end = End(self.scan_id, status, self.npoints if status == "success" and self.npoints
                  else n, reason)
        log.info("pva %s: scan %s ends %s (%d points)%s", self.name, self.scan_id, status, n,
                 f": {reason}" if reason else "")
        self.scan_id = ""
        return [end]


class PvaSource:
    """An NTNDArray PV (and optionally Acquire / NumImages PVs) as our messages."""

    def __init__(self, *, pv: str, motors: list[str], counters: list[str],
                 channels: dict[str, str] | None = None, acquire_pv: str = "",
                 images_pv: str = "", trajectory: dict | None = None,
                 series_timeout: float = 30.0, queue_size: int = 16, detector: str = "",
                 rcvhwm: int = 64):
        try:
            from p4p.client.thread import Context
        except ImportError:
            raise ValueError("[source] kind pva needs the p4p package: "
                             "pip install 'peakstream[epics]'") from None
        self.pv, self.acquire_pv, self.images_pv = pv, acquire_pv, images_pv
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", pv).strip("_") or "pva"
        self.scans = PvaScans(name, detector or "detector", list(motors), list(counters),
                              dict(channels or {}), dict(trajectory or {}), series_timeout,
                              bool(acquire_pv))
        self.endpoint = self.endpoint_bound = f"pva://{pv}"
        self.done = False  # follows scans until closed
        self.updates: queue.Queue = queue.Queue(maxsize=queue_size)
        self.bridge = Bridge("pva", rcvhwm)
        self.sockets = self.bridge.sockets
        self.connected: dict[str, bool] = {}
        self.context = Context("pva", nt=False)
        self.subs = [self.context.monitor(pv, self._on("image"), notify_disconnect=True,
                                          request=f"record[queueSize={queue_size}]")]
        if acquire_pv:
            self.subs.append(self.context.monitor(acquire_pv, self._on("acquire"),
                                                  notify_disconnect=True))
        if images_pv:
            self.subs.append(self.context.monitor(images_pv, self._on("images"),
                                                  notify_disconnect=True))
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
            for msg in out:
                self.bridge.emit(msg)

    def _handle(self, what: str, value: Any, now: float) -> list:
        if isinstance(value, Exception):  # Disconnected, RemoteError, ...
            if self.connected.get(what):
                log.warning("pva: %s: %s", what, value)
            self.connected[what] = False
            return []
        fresh = not self.connected.get(what)
        self.connected[what] = True
        if what == "image":
            if fresh:  # the PV's last value on (re)connecting: not a new frame
                self.scans.counts["stale"] += 1
                return []
            return self.scans.update(value, now)
        number = value.value if hasattr(value, "value") else value
        if what == "acquire":
            return self.scans.acquire(bool(int(number)), now)
        if what == "images":
            self.scans.images = int(number) if int(number) > 0 else None
        return []

    def receive(self, timeout: float = 0.0) -> list[list]:
        return self.bridge.receive(timeout)

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
                     images_pv=src["images_pv"], trajectory=src["trajectory"],
                     series_timeout=src["series_timeout"], queue_size=src["queue"],
                     detector=src["detector"], rcvhwm=src["rcvhwm"])
