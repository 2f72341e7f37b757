"""Scan sessions: apply PROTOCOL.md's rules to decoded messages.

`ScanRunner.handle(parts)` takes one multipart message (from a socket, or
from a replayed file through the same encoding) and drives the scan it
belongs to: start opens an output file and sets the chain up, points are
numbered and handed to the workers (`stream.dispatch`: inline, threads or
processes), their results go to the collector, end waits for the points
still out and closes the file with its status. Everything bad is counted,
logged with the reason, recorded in the open scan's file, and dropped; the
runner never raises on input.

Flow control (lossless): at most `[workers] queue` points are out between
receiver and collector, and (overrun = "block") the lag stays below
`[source] max_lag`; `ready()` says whether the receiver may read another
message, `step()` is one turn of a receive loop that stops reading when it
may not, so ZeroMQ's high-water mark pushes back to the sender. With overrun
= "abort" a lag beyond max_lag aborts the scan instead.

Counters of a scan (`status()["scan"]`, and the file's counters at each
flush): received (its points), accepted (handed to the workers), processed
and bad (came back), duplicate, rejected, malformed, missing, linked,
written, cliques, overruns, max_lag. At any time accepted = processed + bad +
in_flight and processed + bad + missing = linked + waiting (results held by
the reorder buffer); at the end linked = written = npoints.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import zmq

from .collector import Collector
from .config import Config
from .dispatch import make_executor, queue_bound
from .item import PEAK_COLUMNS
from .message import End, MessageError, Point, Start, decode, encode
from .pipeline import Pipeline
from .scan import Scan
from .store import ScanStore
from .workers import decode_result

log = logging.getLogger(__name__)

SCAN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
COUNTERS = ("received", "accepted", "processed", "bad", "linked", "written", "missing",
            "duplicate", "rejected", "malformed", "cliques", "overruns", "max_lag")
# measured, not counted: also in the file's counters, different from run to run
GAUGES = ("lag", "rss", "reassigned", "restarted")


def clique_columns(motors: list[str]) -> dict[str, str]:
    cols = {"clique_id": "int64", "n2d": "int32", "npx": "int64", "sum_intensity": "float64",
            "s_raw": "float64", "f_raw": "float64"}
    cols.update({k: "float64" for k in ("s_1", "s_I", "s_sI", "s_fI", "s_ssI", "s_ffI", "s_sfI")})
    cols.update({"first_point": "int64", "last_point": "int64", "point": "float64"})
    cols.update({m: "float64" for m in motors})
    return cols


class OpenScan:
    """The scan in progress: its chain, collector, store and counters."""

    def __init__(self, key: int, scan: Scan, detector: str, pipeline: Pipeline,
                 collector: Collector, path: Path, counters: Counter):
        self.key = key  # numbers this scan's tasks, so a late result is never misplaced
        self.scan = scan
        self.detector = detector
        self.pipeline = pipeline
        self.collector = collector
        self.path = path
        self.counters = counters
        self.last_message = time.monotonic()
        self.newest = -1  # newest point_id received
        self.workers0: dict[str, Any] = {}  # the executor's counts when the scan started

    @property
    def lag(self) -> int:
        """Points between the newest received and the newest linked."""
        return max(self.newest - self.collector.last_linked, 0)


class ScanRunner:
    """Turns a stream of messages into one output file per scan."""

    def __init__(self, config: Config, output_dir: str | Path | None = None,
                 output_file: str | Path | None = None,
                 on_scan_end: Callable[[dict[str, Any]], None] | None = None):
        self.config = config
        self.output_dir = Path(output_dir or config["output"]["directory"])
        self.output_file = Path(output_file) if output_file else None
        self.on_scan_end = on_scan_end
        self.counters: Counter = Counter({k: 0 for k in COUNTERS})
        self.current: OpenScan | None = None
        self.results: list[dict[str, Any]] = []
        self.executor = make_executor(config)
        self.queue = queue_bound(config)
        self.started = time.monotonic()
        self._seq = 0  # every point handed to the workers gets the next number
        self._scans = 0
        self._blocked = False
        self._poller: tuple[Any, Any] | None = None

    # ------------------------------------------------------------ messages

    def handle(self, parts: list) -> None:
        """One multipart message off the wire."""
        self.counters["received"] += 1
        try:
            msg = decode(parts, self.config["source"]["max_frame_bytes"])
        except MessageError as exc:
            self._reject("malformed", str(exc))
        else:
            self.handle_message(msg, parts)
        if self.current is not None:
            self.current.last_message = time.monotonic()

    def handle_message(self, msg: Start | Point | End, parts: list | None = None) -> None:
        """A decoded message (`parts`: its wire form, encoded again if not given)."""
        if isinstance(msg, Start):
            self._start(msg)
        elif isinstance(msg, Point):
            self._point(msg, parts if parts is not None else encode(msg))
        elif isinstance(msg, End):
            self._end(msg)
        else:
            raise TypeError(f"not a message: {type(msg).__name__}")

    def ready(self) -> bool:
        """May the receiver read another message? No while the queues are full (or, with
        overrun = "block", while the lag is at max_lag): ZeroMQ then holds the sender."""
        cur, src = self.current, self.config["source"]
        full = self.executor.in_flight >= self.queue
        if cur is not None and src["overrun"] == "block" and cur.lag >= src["max_lag"]:
            full = True
        if full and not self._blocked:
            self.counters["overruns"] += 1
            if cur is not None:
                cur.counters["overruns"] += 1
        self._blocked = full
        return not full

    def step(self, source: Any, timeout: float = 0.2) -> None:
        """One turn of a receive loop on `source` (a ZmqSource): read a message if there
        is room, take the workers' results, and treat a quiet input as idle."""
        if not self.ready():
            self.wait(timeout)
            return
        if self._poller is None or self._poller[0] is not source:
            poller = zmq.Poller()
            for sock in (source.socket, *self.executor.sockets):
                poller.register(sock, zmq.POLLIN)
            self._poller = (source, poller)
        events = dict(self._poller[1].poll(int(timeout * 1000)))
        if source.socket in events:
            self.handle(source.socket.recv_multipart(copy=False))
            self.pump()
        else:
            self.poll()

    def wait(self, timeout: float) -> None:
        """The receiver holds back (queues full): take results for up to `timeout` s.
        The sender is held by us, so its silence does not count towards end_timeout."""
        self.pump(timeout)
        cur = self.current
        if cur is not None:
            cur.last_message = time.monotonic()
            if not self.executor.in_flight:  # held back by the lag alone: a gap may time out
                cur.collector.poll()

    def pump(self, timeout: float = 0.0) -> None:
        """Hand the results that came back (waiting up to `timeout` s) to the collector."""
        for parts in self.executor.collect(timeout):
            self._result(parts)

    def poll(self) -> None:
        """Call when the input is idle: overdue gaps become missing, a scan that
        has heard nothing for `end_timeout` s (since we last finished with a
        message, so our own backlog never counts) is aborted."""
        self.pump()
        cur = self.current
        if cur is None:
            return
        cur.collector.poll()
        if self.executor.in_flight:  # our workers hold points: the silence is ours
            cur.last_message = time.monotonic()
        idle = time.monotonic() - cur.last_message
        limit = self.config["source"]["end_timeout"]
        if idle > limit:
            self._finish("abort", f"timeout: no end message within {limit:g} s "
                                  f"of the last message")

    def close(self, reason: str = "stopped") -> None:
        """Shut down: a scan still open ends as aborted with the reason."""
        if self.current is not None:
            self._finish("abort", reason)
        self.executor.close()

    def status(self) -> dict[str, Any]:
        """Counters, queue depths, lag and memory, now (for progress lines and status
        requests); the open scan's under "scan"."""
        import psutil

        out: dict[str, Any] = {
            "uptime": time.monotonic() - self.started, "scans": len(self.results),
            **self.counters, "in_flight": self.executor.in_flight, "queue": self.queue,
            "blocked": self._blocked, "rss": psutil.Process().memory_info().rss,
            "workers": self.executor.status()}
        cur = self.current
        if cur is not None:
            buf = cur.collector.buffer
            out["scan"] = {"scan_id": cur.scan.scan_id, "npoints": buf.npoints,
                           **cur.counters, "lag": cur.lag, "newest": cur.newest,
                           "last_linked": cur.collector.last_linked,
                           "waiting": len(buf.waiting) - buf.pending, "pending": buf.pending}
        return out

    # ------------------------------------------------------------ start / end

    def _start(self, start: Start) -> None:
        if self.current is not None:
            self._finish("abort", f"a new start ({start.scan_id!r}) arrived before the end")
        if not SCAN_ID.fullmatch(start.scan_id) or ".." in start.scan_id:
            self._reject("rejected", f"start: scan_id {start.scan_id!r} is not a safe file "
                                     f"name (letters, digits, '.', '_', '-'; no '..')")
            return
        try:
            scan = Scan.from_start(start)
        except ValueError as exc:  # a trajectory map that decode() did not see
            self._reject("rejected", f"start: {exc}")
            return
        wanted = self.config["source"]["detector"] or None
        try:
            detector, info = scan.detector(wanted)
        except KeyError as exc:
            self._reject("rejected", f"start: {exc.args[0]}")
            return
        path = self._output_path(start.scan_id)
        counters: Counter = Counter({k: 0 for k in COUNTERS})
        try:
            store = ScanStore(path, scan_id=start.scan_id, detector=detector,
                              motors=start.motors, counters=start.counters,
                              peak_columns=PEAK_COLUMNS,
                              clique_columns=clique_columns(start.motors),
                              config_text=self.config.text(), start_json=_start_json(start),
                              trajectory=scan.trajectory.describe(),
                              flush_interval=self.config["output"]["flush_interval"])
        except OSError as exc:
            self._reject("rejected", f"start: cannot create {path}: {exc}")
            return
        store.set_shape(info.shape, info.dtype)
        from nodes.link import Linker  # the linker is a node; the collector runs it

        linker = Linker(**self.config["linker"])
        pipeline = Pipeline(self.config.build_nodes())  # checks the setup before the workers
        src = self.config["source"]
        opened: list[OpenScan] = []
        collector = Collector(linker, store, counters, window=src["reorder_window"],
                              timeout=src["point_timeout"], npoints=start.npoints,
                              motors=start.motors, counter_names=start.counters,
                              gauges=lambda: self._gauges(opened[0]))
        self._scans += 1
        self.current = OpenScan(self._scans, scan, detector, pipeline, collector, path,
                                counters)
        self.current.workers0 = self.executor.status()
        opened.append(self.current)
        try:
            linker.setup(scan)
            pipeline.setup(scan)
        except Exception as exc:  # bad dark shape, unsupported trajectory, ...
            log.error("scan %s: setup failed: %s", start.scan_id, exc)
            self._finish("fail", f"setup failed: {exc}")
            return
        self.executor.start_scan(self._scans, encode(start), detector, src["max_frame_bytes"])
        log.info("scan %s started: %s %s, %s points -> %s", start.scan_id, detector,
                 list(info.shape), start.npoints if start.npoints is not None else "open-ended",
                 path)

    def _end(self, end: End) -> None:
        cur = self.current
        if cur is None or end.scan_id != cur.scan.scan_id:
            self._reject("rejected", f"end of scan {end.scan_id!r}, which is not open")
            return
        if end.npoints is not None and cur.collector.buffer.npoints is None:
            cur.collector.buffer.npoints = end.npoints
        self._finish(end.status, end.reason)

    def _finish(self, status: str, reason: str) -> None:
        self._drain()
        cur, self.current = self.current, None
        try:
            cur.collector.finish(status, reason)
        except Exception as exc:  # disk full, ...: the scan fails, the runner goes on
            log.error("scan %s: could not be written: %s", cur.scan.scan_id, exc)
            status, reason = "fail", f"write failed: {exc}"
            try:
                cur.collector.store.close(status, reason)
            except Exception:
                pass
        summary = {"scan_id": cur.scan.scan_id, "status": status, "reason": reason,
                   "file": str(cur.path), **cur.counters}
        self.counters.update({k: cur.counters[k] for k in ("processed", "bad", "linked",
                                                           "written", "missing", "cliques")})
        self.results.append(summary)
        log.info("scan %s ended: %s%s", cur.scan.scan_id, status, f" ({reason})" if reason else "")
        if self.on_scan_end is not None:
            self.on_scan_end(summary)

    def _drain(self) -> None:
        """Wait for the points still out; give up after end_timeout s without a result
        (the collector then writes them as bad)."""
        limit = self.config["source"]["end_timeout"]
        last = time.monotonic()
        while self.executor.in_flight and time.monotonic() - last < limit:
            results = self.executor.collect(timeout=0.2)
            if results:
                last = time.monotonic()
            for parts in results:
                self._result(parts)

    # ------------------------------------------------------------ points

    def _point(self, point: Point, parts: list) -> None:
        cur = self.current
        if cur is None or point.scan_id != cur.scan.scan_id:
            what = "no scan is open" if cur is None else f"the open scan is {cur.scan.scan_id!r}"
            self._reject("rejected", f"point {point.point_id} of scan {point.scan_id!r}: {what}")
            return
        pid = point.point_id
        cur.counters["received"] += 1
        npoints = cur.collector.buffer.npoints
        if npoints is not None and pid >= npoints:
            self._reject("rejected", f"point {pid}: beyond npoints {npoints}")
            return
        if cur.collector.seen(pid):
            self._count("duplicate", f"point {pid}: already received (duplicate or late), "
                                     f"dropped")
            return
        while not self.ready():  # a caller that does not ask ready() first (replay)
            self.wait(0.2)
        cur.newest = max(cur.newest, pid)
        cur.collector.expect(pid)
        self.executor.submit(self._seq, cur.key, pid, parts)
        self._seq += 1
        cur.counters["accepted"] += 1
        self.pump()
        cur.counters["max_lag"] = max(cur.counters["max_lag"], cur.lag)
        src = self.config["source"]
        if self.current is cur and src["overrun"] == "abort" and cur.lag > src["max_lag"]:
            self._finish("abort", f"overrun: lag {cur.lag} points (newest received "
                                  f"{cur.newest}, newest linked {cur.collector.last_linked}) "
                                  f"exceeds max_lag {src['max_lag']}: processing cannot keep "
                                  f"up with the acquisition")

    def _result(self, parts: list) -> None:
        """A point back from the workers: to the collector."""
        res = decode_result(parts)
        cur = self.current
        if cur is None or res.scan != cur.key:
            log.debug("result of point %d of an earlier scan dropped", res.point_id)
            return
        if res.status == "ok":
            cur.collector.add(res.item)
        else:
            log.warning("scan %s point %d is bad: %s", cur.scan.scan_id, res.point_id,
                        res.reason)
            cur.collector.add_bad(res.point_id, res.reason, res.item)
        cur.counters["max_lag"] = max(cur.counters["max_lag"], cur.lag)

    def _gauges(self, cur: OpenScan) -> dict[str, int]:
        """Figures besides the counters for the file, at each flush: lag, RSS, and the
        points handed to another worker / workers started again during the scan."""
        import psutil

        w = self.executor.status()
        return {"lag": cur.lag, "rss": psutil.Process().memory_info().rss,
                **{k: w[k] - cur.workers0[k] for k in ("reassigned", "restarted")}}

    # ------------------------------------------------------------ helpers

    def _output_path(self, scan_id: str) -> Path:
        if self.output_file is not None:
            return self.output_file
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{scan_id}.h5"
        n = 1
        while path.exists():  # never overwrite an earlier scan's file
            path = self.output_dir / f"{scan_id}-{n}.h5"
            n += 1
        return path

    def _count(self, kind: str, reason: str) -> None:
        self.counters[kind] += 1
        cur = self.current
        if cur is not None:
            cur.counters[kind] += 1
            cur.collector.store.event(kind, reason)
        log.warning("%s: %s", kind, reason)

    def _reject(self, kind: str, reason: str) -> None:
        """Malformed or out-of-place messages: counted, logged, recorded, dropped."""
        if kind == "malformed":
            self.counters["rejected"] += 1
            if self.current is not None:
                self.current.counters["rejected"] += 1
        self._count(kind, reason)


def _start_json(start: Start) -> str:
    d = asdict(start)
    d["detectors"] = {k: {"shape": list(v.shape), "dtype": v.dtype}
                      for k, v in start.detectors.items()}
    return json.dumps(d, default=str)
