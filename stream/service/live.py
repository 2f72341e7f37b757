"""The live lane (PROTOCOL.md "Live lane topics"): a PUB socket that never slows processing.

Each message is one part, b"<topic> " + a msgpack map; arrays travel as raw
little-endian bytes (msgpack bin) with their dtype and shape beside them
(`unpack` turns them back into numpy arrays). The PUB has a small send
high-water mark and every send is non-blocking: a subscriber that is slow,
or that never reads, loses messages; processing never waits for it.

Topics:

* `progress` at most every `interval` s: state, the open scan's counters,
  lag, rates (points/s received and linked since the last one), queues, RSS;
* `peaks` for every point as its result comes back from the workers (before
  the reorder buffer, so at the earliest moment): point_id, time (the
  point's own), motors, counters, the 2D peaks' s_raw, f_raw,
  sum_intensity, npx; and under `outputs` the node outputs small enough to
  draw (scalars such as ROI sums, 1D ones such as `integrate1d`, at most
  `MAX_OUTPUT` values);
* `cliques` for each linker step that closed cliques: their ids, n2d, npx,
  sum_intensity, s_raw, f_raw, first/last point and motor centroids; and
  their member 2D peaks, one entry each: member_clique_id, member_point_id,
  member_index (the peak's row in that point's `peaks` message), member_share
  (a resumed scan's members linked before the restart are known from its file);
* `frame` at most `frame_rate` a second: a `frame_bin` x `frame_bin` binned
  (summed) float32 image of a recent frame. The dense frame lives only in the
  workers, so the runner asks a worker for it with the task
  (`stream.workers.binned`): the frame as it arrived, before any correction;
  a sparse frame's preview is binned from its kept pixels;
* `map` at most every `interval` s and at the end of a scan: the summed 2D
  peak intensity of each point placed by its index (a sweep: one value per
  point; grid / snake with `nfast`: a (rows, nfast) array, snake rows turned
  so that columns follow the fast motor), with each motor's position in the
  same layout. Kept by `RunningMap`, written by index, never rebuilt; a resumed
  scan's holds the points before the restart too (from its file).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

import msgpack
import numpy as np
import zmq

from stream.core.grid import MapGrid
from stream.store.rows import POINT_STATUS
from stream.wire.sockets import bind

log = logging.getLogger(__name__)

TOPICS = ("progress", "peaks", "cliques", "frame", "map")
PEAK_FIELDS = ("s_raw", "f_raw", "sum_intensity", "npx")
OK = POINT_STATUS.index("ok")
MAX_OUTPUT = 4096  # values of a node output sent with a point's peaks (a radial pattern)
CLIQUE_FIELDS = ("clique_id", "n2d", "npx", "sum_intensity", "s_raw", "f_raw", "first_point",
                 "last_point")


def array(a: np.ndarray) -> dict[str, Any]:
    """An array as msgpack-ready: raw bytes, dtype, shape."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def unpack(message: bytes) -> tuple[str, dict[str, Any]]:
    """(topic, body) of a live message, with the arrays as numpy arrays."""
    topic, _, payload = bytes(message).partition(b" ")
    body = msgpack.unpackb(payload, raw=False)
    return topic.decode(), _arrays(body)


def _arrays(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"dtype", "shape", "data"} and isinstance(value["data"], bytes):
            return np.frombuffer(value["data"], np.dtype(value["dtype"])).reshape(value["shape"])
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return value


class RunningMap:
    """Summed 2D peak intensity by scan position, written by point index."""

    def __init__(self, start: Any, max_cells: int = 4_000_000):
        """ValueError if the map would hold more than `max_cells` cells."""
        self.max_cells = max_cells
        traj = dict(start.trajectory or {})
        self.kind = traj.get("kind", "sweep")
        self.motors = list(start.motors)
        npoints = start.npoints
        # a 2D scan: the map writer's grid (stream.core.grid); otherwise one row of points
        self.grid = (MapGrid.from_trajectory(traj, npoints)
                     if self.kind in ("grid", "snake") and traj.get("nfast") else None)
        if self.grid is not None:  # open-ended: one row to begin with, grown as needed
            shape: tuple[int, ...] = (self.grid.nslow or 1, self.grid.nfast)
        else:
            shape = (npoints or 256,)
        if math.prod(shape) > max_cells:
            raise ValueError(f"a map of {' x '.join(map(str, shape))} cells is more than "
                             f"[live] max_map_cells ({max_cells})")
        self.growable = not npoints
        self.values = np.full(shape, np.nan, np.float32)
        self.positions = {m: np.full(shape, np.nan) for m in self.motors}
        self.updated = False

    def index(self, point_id: int) -> tuple[int, ...] | None:
        if point_id < 0:
            return None
        i = (point_id,) if self.grid is None else self.grid.place(point_id)
        if i[0] >= self.values.shape[0]:
            if not self.growable or (i[0] + 1) * (self.values.size // self.values.shape[0]) \
                    > self.max_cells:
                return None
            self._grow(i[0] + 1)
        return i

    def _grow(self, need: int) -> None:
        """Open-ended scans: double the length (the values move, never recomputed)."""
        n = max(need, min(2 * self.values.shape[0],
                          self.max_cells // (self.values.size // self.values.shape[0])))
        pad = [(0, n - self.values.shape[0])] + [(0, 0)] * (self.values.ndim - 1)
        self.values = np.pad(self.values, pad, constant_values=np.nan)
        self.positions = {m: np.pad(p, pad, constant_values=np.nan)
                          for m, p in self.positions.items()}

    def add(self, point_id: int, intensity: float, motors: dict[str, float]) -> None:
        i = self.index(point_id)
        if i is None:
            return
        self.values[i] = intensity
        for m, p in self.positions.items():
            p[i] = motors.get(m, np.nan)
        self.updated = True

    def message(self, scan_id: str) -> dict[str, Any]:
        axes = ["slow", "fast"] if self.grid is not None else ["point"]
        return {"scan_id": scan_id, "kind": self.kind, "axes": axes,
                "sum_intensity": array(self.values),
                "positions": {m: array(p) for m, p in self.positions.items()}}


class PeakOwners:
    """The point of each of a scan's 2D peaks, from the linker's steps: a peak's global
    id (the linker's numbering) -> (point_id, its row in the point's peaks)."""

    def __init__(self) -> None:
        self.points = np.empty(1024, np.int64)
        self.offsets = np.empty(1024, np.int64)
        self.n = 0

    def add(self, point_id: int, offset: int) -> None:
        """A linked point and the global id of its first peak (points in order)."""
        if self.n == self.points.shape[0]:
            self.points = np.concatenate([self.points, np.empty_like(self.points)])
            self.offsets = np.concatenate([self.offsets, np.empty_like(self.offsets)])
        self.points[self.n], self.offsets[self.n] = point_id, offset
        self.n += 1

    def locate(self, peak_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point_id, row) of each peak; point_id -1 for a peak linked before the first
        point seen (a resumed scan's)."""
        k = np.searchsorted(self.offsets[:self.n], peak_id, side="right") - 1
        kk = k.clip(0)
        point = np.where(k >= 0, self.points[:self.n][kk] if self.n else -1, -1)
        return point, peak_id - (self.offsets[:self.n][kk] if self.n else 0)


class LiveLane:
    """The PUB socket, the running map and the rate limits; fed by the runner."""

    def __init__(self, endpoint: str, interval: float = 0.5, frame_rate: float = 2.0,
                 frame_bin: int = 8, sndhwm: int = 16, context: zmq.Context | None = None,
                 max_map_cells: int = 4_000_000):
        self.interval, self.frame_rate, self.frame_bin = interval, frame_rate, frame_bin
        self.max_map_cells = max_map_cells
        self.socket = (context or zmq.Context.instance()).socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDTIMEO, 0)
        self.endpoint = bind(self.socket, endpoint, "live lane: cannot bind {endpoint}")
        self.sent: Counter = Counter()
        self.dropped = 0
        self.map: RunningMap | None = None
        self.scan_id = ""
        self._last_frame = -math.inf
        self._last_progress = -math.inf
        self._prev: tuple[float, dict[str, Any]] | None = None
        self.owners = PeakOwners()
        log.info("live lane on %s", endpoint)

    # ------------------------------------------------------------ sending

    def publish(self, topic: str, body: dict[str, Any]) -> bool:
        """Send now or drop; never waits."""
        try:
            self.socket.send(topic.encode() + b" " + msgpack.packb(body, use_bin_type=True),
                             zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent[topic] += 1
        return True

    def close(self) -> None:
        self.socket.close(linger=0)

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "sent": dict(self.sent), "dropped": self.dropped}

    # ------------------------------------------------------------ hooks (the runner)

    def preview_bin(self) -> int:
        """The bin factor if the next point should bring a frame preview, else 0."""
        now = time.monotonic()
        if self.frame_rate <= 0 or now - self._last_frame < 1.0 / self.frame_rate:
            return 0
        self._last_frame = now
        return self.frame_bin

    def scan_started(self, cur: Any) -> None:
        self.scan_id = cur.scan.scan_id
        try:
            self.map = RunningMap(cur.scan.start, self.max_map_cells)
        except ValueError as exc:  # never allocated: the scan runs without a live map
            self.map = None
            log.warning("scan %s: no live map: %s", self.scan_id, exc)
        self._prev = None
        self.owners = PeakOwners()
        if cur.resumed is not None:  # the points before the restart: from the file
            self._stored(cur.collector.store.file, cur.resumed.next_point)

    def _stored(self, f: Any, before: int) -> None:
        """A resumed scan's points 0..before-1 as its file holds them: in the map, and
        their 2D peaks' ids known (for the members of the cliques closed from now on)."""
        from stream.store.reader import points_before

        stored = points_before(f, before)
        peaks, points = stored["peaks"], stored["points"]
        first = np.searchsorted(peaks["point_id"], np.arange(before))  # their peaks' rows
        for pid, offset in enumerate(first.tolist()):
            self.owners.add(pid, offset)
        if self.map is None:
            return
        sums = np.bincount(peaks["point_id"], peaks["sum_intensity"], minlength=before)
        motors = {k.split("/", 1)[1]: v for k, v in points.items() if k.startswith("motors/")}
        for i, pid in enumerate(points["point_id"].tolist()):
            if points["status"][i] == OK:  # (missing and bad ones have no peaks)
                self.map.add(pid, float(sums[pid]), {m: float(v[i]) for m, v in motors.items()})

    def result(self, cur: Any, res: Any) -> None:
        """A point back from the workers: its peaks, its place in the map, its preview."""
        item = res.item
        peaks = item.peaks or {}
        body: dict[str, Any] = {
            "scan_id": cur.scan.scan_id, "point_id": res.point_id, "status": res.status,
            "time": item.time, "motors": item.motors, "counters": item.counters,
            "npeaks": len(peaks.get("npx", ())), "sent": time.time()}
        for name in PEAK_FIELDS:
            if name in peaks:
                body[name] = array(peaks[name])
        outputs = {k: array(np.asarray(v)) for k, v in (item.outputs or {}).items()
                   if np.ndim(v) <= 1 and np.size(v) <= MAX_OUTPUT}
        if outputs:
            body["outputs"] = outputs
        if res.status != "ok":
            body["reason"] = res.reason
        self.publish("peaks", body)
        if self.map is not None and res.status == "ok":
            total = float(np.sum(peaks["sum_intensity"])) if "sum_intensity" in peaks else 0.0
            self.map.add(res.point_id, total, item.motors)
        if res.preview is not None:
            self.publish("frame", {"scan_id": cur.scan.scan_id, "point_id": res.point_id,
                                   "bin": self.frame_bin, "image": array(res.preview)})

    def linked(self, cur: Any, result: Any) -> None:
        """A linker result (the collector's `on_link`): the cliques it closed, if any,
        with their members' points."""
        if result.point_id >= 0:
            self.owners.add(result.point_id, result.peak_offset)
        c = result.cliques
        if not len(c.get("clique_id", ())):
            return
        body: dict[str, Any] = {"scan_id": cur.scan.scan_id, "point_id": result.point_id,
                                "count": len(c["clique_id"])}
        for name in (*CLIQUE_FIELDS, *cur.scan.start.motors):
            if name in c:
                body[name] = array(c[name])
        m = result.members
        if len(m.get("peak_id", ())):
            point, row = self.owners.locate(np.asarray(m["peak_id"], np.int64))
            keep = point >= 0
            body.update(member_clique_id=array(np.asarray(m["clique_id"], np.int64)[keep]),
                        member_point_id=array(point[keep]), member_index=array(row[keep]),
                        member_share=array(np.asarray(m["share"], np.float64)[keep]))
        self.publish("cliques", body)

    def param(self, scan_id: str, change: dict[str, Any], point_id: int) -> None:
        """A parameter change, with the point from which it applies (the first accepted
        after it): what the file's "param" event records."""
        self.publish("param", {"scan_id": scan_id, "point_id": int(point_id),
                               **{k: change.get(k) for k in ("node", "key", "value", "old",
                                                               "version")}})

    def scan_ended(self, summary: dict[str, Any]) -> None:
        if self.map is not None:
            self.publish("map", self.map.message(summary["scan_id"]))
        self.map = None
        self.publish("progress", {"state": "idle", "time": time.time(), "scan": None,
                                  "ended": summary})

    def progress(self, status: dict[str, Any], state: str, force: bool = False) -> None:
        """Progress (and the map, if it changed) at most every `interval` s."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.interval:
            return
        self._last_progress = now
        scan = status.get("scan")
        body: dict[str, Any] = {"state": state, "time": time.time(), "scans": status["scans"],
                                "in_flight": status["in_flight"], "queue": status["queue"],
                                "rss": status["rss"], "scan": scan}
        if scan is not None:
            rates = {}
            if self._prev is not None and self._prev[1].get("scan_id") == scan["scan_id"]:
                dt = max(now - self._prev[0], 1e-9)
                rates = {k: (scan[k] - self._prev[1][k]) / dt for k in ("received", "linked")}
            body["rates"] = rates
            self._prev = (now, dict(scan))
        self.publish("progress", body)
        if self.map is not None and self.map.updated:
            self.map.updated = False
            self.publish("map", self.map.message(self.scan_id))
