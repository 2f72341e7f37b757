"""Scan sessions: apply PROTOCOL.md's rules to decoded messages.

`ScanRunner.handle(parts)` takes one multipart message (from a socket, or
from a replayed file through the same encoding) and drives the scan it
belongs to: start opens an output file and sets the chain up, points are
numbered and handed to the workers (`stream.run.executors`: inline, threads
or processes), their results go to the collector, end waits for the points
still out and closes the file with its status. Everything bad is counted,
logged with the reason, recorded in the open scan's file, and dropped; the
runner never raises on input.

Flow control (lossless): at most `[workers] queue` points are out between
receiver and collector (at a worker, or held in the reorder buffer behind one
still at a worker), and (overrun = "block") the lag stays below `[source]
max_lag`; `ready()` says whether the receiver may read another message
(`stream.run.loop`). With overrun = "abort" a lag beyond max_lag aborts the scan.

Counters of a scan (`status()["scan"]`, and the file's counters at each
flush): received (its points), accepted (handed to the workers), processed
and bad (came back), duplicate, rejected, malformed, missing, linked,
written, cliques, fit_failed, overruns, max_lag. At any time accepted = processed + bad +
in_flight and processed + bad + missing = linked + waiting (results held by the reorder
buffer); at the end linked = written = npoints. A scan refused or failed is `refused`.

For the daemon: `watch` holds more sockets for `step()` to serve; `params` are the
control socket's node parameter changes, sent with each task, recorded and published with
the point id from which they apply; `live` (LiveLane) sees every result and closed clique.
A collector that sets `failed` ends the scan as fail; a start whose file cannot be made is
refused (`last_error`); `accepting = False` refuses new scans.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.config.schema import Config
from stream.core.messages import End, MessageError, Point, Start
from stream.run import admission
from stream.run.acquisition import resent_point
from stream.run.admission import admit_start, frame_problem, id_problem, same_start
from stream.run.badinput import count_bad, count_refused, fail_scan, unusable_frame
from stream.run.ending import followed, timed_out
from stream.run.executors import make_executor, queue_bound
from stream.run.loop import drain, freeze_long_lived, step
from stream.run.openscan import COUNTERS, GAUGES, OpenScan
from stream.run.params import ParamState
from stream.run.resuming import ResumeFinder
from stream.run.tasks import Result, as_result
from stream.store.naming import Namer
from stream.store.resume import SETUP_FAILED, ResumeError
from stream.store.scanfile import ScanStore
from stream.wire.codec import decode, encode

log = logging.getLogger(__name__)

__all__ = ["ScanRunner", "OpenScan", "COUNTERS", "GAUGES"]


class ScanRunner:
    """Turns a stream of messages into one output file per scan."""

    def __init__(self, config: Config, output_dir: str | Path | None = None,
                 output_file: str | Path | None = None,
                 on_scan_end: Callable[[dict[str, Any]], None] | None = None):
        self.config = config
        self.output_dir = Path(output_dir or config["output"]["directory"])
        self.output_file = Path(output_file) if output_file else None
        self.namer = Namer(self.output_dir, config["output"]["pattern"])
        self.on_scan_end = on_scan_end
        self.params = ParamState(config)
        self.live: Any = None  # a stream.live.LiveLane
        self.watch: dict[Any, Callable[[], None]] = {}  # more sockets for step() to serve
        self.accepting = True  # False: new scans are refused (the daemon is stopping)
        self.last_error = ""  # why the last scan could not start or be written
        self.refused = ""  # scan_id of a scan refused or failed: its points are dropped
        # which crashed file a scan continues (`resumer.resume_file`: replay --resume's)
        self.resumer = ResumeFinder(config, self.output_dir, self.output_file, self)
        self.counters: Counter = Counter({k: 0 for k in COUNTERS})
        self.warned: Counter = Counter()  # bad input logged, per kind, since the last start
        self.current: OpenScan | None = None
        self.results: list[dict[str, Any]] = []
        self.executor = make_executor(config)
        self.queue = queue_bound(config)
        self.started = time.monotonic()
        self._seq = 0  # every point handed to the workers gets the next number
        self._scans = 0
        self._blocked = False
        self.freeze_gc = False  # freeze_long_lived() after the first scan (run, daemon)
        self._finishing = False
        self.poller: tuple[Any, Any] | None = None  # (source, watch), its zmq.Poller

    # ------------------------------------------------------------ messages

    def handle(self, parts: list) -> None:
        """One multipart message off the wire."""
        self.counters["received"] += 1
        try:
            msg = decode(parts, self.config["source"]["max_frame_bytes"])  # frames: views
        except MessageError as exc:
            self._reject("malformed", str(exc))
        else:
            self.handle_message(msg, parts)

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
        # results held behind a point at a worker count too: a slow worker holds the receiver
        held = cur.collector.buffer.held if cur is not None else 0
        full = self.executor.in_flight + held >= self.queue
        if cur is not None and src["overrun"] == "block" and cur.lag >= src["max_lag"]:
            full = True
        if full and not self._blocked:
            self.counters["overruns"] += 1
            if cur is not None:
                cur.counters["overruns"] += 1
        self._blocked = full
        return not full

    def step(self, source: Any, timeout: float = 0.2) -> None:
        """One turn of a receive loop on `source` (`stream.run.loop.step`)."""
        step(self, source, timeout)

    def wait(self, timeout: float) -> None:
        """The receiver holds back (queues full): take results for up to `timeout` s.
        The sender is held by us, so its silence does not count towards end_timeout."""
        self.pump(timeout)
        cur = self.current
        if cur is not None:
            cur.last_message = time.monotonic()
            if not self.executor.in_flight:  # held back by the lag alone: a gap may time out
                self._collect(cur.collector.poll)

    def pump(self, timeout: float = 0.0) -> None:
        """Hand the results that came back (waiting up to `timeout` s) to the collector."""
        for parts in self.executor.collect(timeout):
            self.take_result(parts)

    def poll(self, source: Any = None) -> None:
        """Call when the input is idle: overdue gaps become missing, a scan that
        has heard nothing for `end_timeout` s (since we last finished with a
        message, so our own backlog never counts) is aborted, unless `source` still
        follows it (`stream.run.ending.followed`: Bliss, EPICS end their scans)."""
        self.pump()
        cur = self.current
        if cur is None:
            return
        if self._collect(cur.collector.poll):
            return
        # our workers hold points, or the source waits with the control system: the
        # silence is not the sender's
        if self.executor.in_flight or followed(source, cur.scan.scan_id):
            cur.last_message = time.monotonic()
        idle = time.monotonic() - cur.last_message
        limit = self.config["source"]["end_timeout"]
        if idle > limit:  # (every point came: complete, with an event no_end)
            self._finish(*timed_out(cur, limit))

    def close(self, reason: str = "stopped") -> None:
        """Shut down: a scan still open ends as aborted with the reason."""
        if self.current is not None:
            self._finish("abort", reason)
        self.executor.close()

    def abort(self, reason: str, status: str = "abort") -> None:
        """End the open scan now with the status and reason (it is written)."""
        if self.current is not None:
            self._finish(status, reason)

    def status(self) -> dict[str, Any]:
        """Counters, queue depths, lag and memory, now; the open scan's under "scan"."""
        import psutil

        out: dict[str, Any] = {
            "uptime": time.monotonic() - self.started, "scans": len(self.results),
            **self.counters, "in_flight": self.executor.in_flight, "queue": self.queue,
            "blocked": self._blocked, "rss": psutil.Process().memory_info().rss,
            "workers": self.executor.status(), "last_error": self.last_error,
            "gc_frozen": gc.get_freeze_count()}
        if self.current is not None:
            out["scan"] = self.current.status()
        return out

    # ------------------------------------------------------------ start / end

    def _start(self, start: Start, resumed: Any = None) -> None:
        if not self.accepting:  # the scan in progress finishes untouched
            self._refuse(start.scan_id, "the daemon is stopping: no new scans")
            return
        if isinstance(checked := admit_start(start, self.config), str):  # refused: untouched
            self._refuse(start.scan_id, checked)  # its points are dropped quietly
            return
        scan, detector, info = checked
        if self.current is not None:
            if same_start(self.current.scan.start, start):  # a sender resending its scan
                return self._count("duplicate", f"the start of {start.scan_id!r} again")
            self._finish("abort", f"a new start ({start.scan_id!r}) arrived before the end")
        self.refused, path = "", None
        self.warned.clear()  # the log limit of bad input is per scan
        try:
            if resumed is None:
                resumed = self.resumer.for_start(start)
            if resumed is not None:
                path, store = resumed.store.path, resumed.store
            else:
                path = self.output_path(start.scan_id, start.meta)
                self.resumer.warn_earlier(start.scan_id, path)  # a resend: a second file
                store = ScanStore.for_scan(path, scan, self.config, detector,
                                           applied=self.params.config_text())  # after a set
        except ResumeError as exc:
            self._refuse(start.scan_id, f"cannot resume: {exc}")
            return
        except OSError as exc:  # an output directory that cannot be made or written
            where = path if path is not None else self.output_dir
            self._refuse(start.scan_id, f"cannot create {where}: {exc}")
            return
        if self.params.version and resumed is None:  # a resumed file has its own
            store.event("params", json.dumps(self.params.changes), 0)
        self._scans += 1
        self.current = OpenScan.create(self._scans, self.config, scan, detector, store, path,
                                       self.executor.status, self.live)
        try:
            self.current.set_up()
        except Exception as exc:  # bad dark shape, unsupported trajectory, ...
            return fail_scan(self, f"{SETUP_FAILED}: {exc}")
        self.current.begin(info, resumed)
        admission.warn_start(start, self.current.collector.store)  # (events: warning)
        self.executor.start_scan(self._scans, encode(start), detector,
                                 self.config["source"]["max_frame_bytes"])
        if self.live is not None:
            self.live.scan_started(self.current)
        log.info("scan %s started: %s %s, %s points -> %s", start.scan_id, detector,
                 list(info.shape), start.npoints if start.npoints is not None else "open-ended",
                 path)

    def _end(self, end: End) -> None:
        cur = self.current
        if cur is None or end.scan_id != cur.scan.scan_id:
            if cur is None and self.refused and end.scan_id == self.refused:
                self.counters["rejected"] += 1  # a scan refused or failed: said then
            else:
                self._reject("rejected", f"end of scan {end.scan_id!r}, which is not open")
            return
        if problem := admission.end_npoints(end, cur, self.config):  # another than the start's, ...
            self._count("rejected", problem)
        self._finish(end.status, end.reason)

    def _finish(self, status: str, reason: str) -> None:
        self._finishing = True
        try:
            drain(self)
        finally:
            self._finishing = False
        cur, self.current = self.current, None
        status, reason = cur.finish(status, reason)
        if status == "fail" and reason.startswith("write failed"):
            self.last_error = f"scan {cur.scan.scan_id}: {reason}"
            self.refused = cur.scan.scan_id  # its remaining points are dropped
        summary = {"scan_id": cur.scan.scan_id, "status": status, "reason": reason,
                   "file": str(cur.path), **cur.counters}
        ended = ("accepted", "processed", "bad", "linked", "written", "missing", "cliques",
                 "fit_failed")
        self.counters.update({k: cur.counters[k] for k in ended})  # (a Counter: it sums)
        self.results.append(summary)
        log.log(logging.ERROR if status == "fail" else logging.INFO, "scan %s ended: %s%s",
                cur.scan.scan_id, status, f" ({reason})" if reason else "")
        if self.live is not None:
            self.live.scan_ended(summary)
        if self.on_scan_end is not None:
            self.on_scan_end(summary)
        del cur
        if self.freeze_gc:
            freeze_long_lived()
            self.freeze_gc = False  # once

    # ------------------------------------------------------------ points

    def _point(self, point: Point, parts: list) -> None:
        cur = self.current
        if cur is None and self.refused and point.scan_id == self.refused:
            self.counters["rejected"] += 1  # its start was refused (reported once)
            return
        if cur is None:
            resumed = self.resumer.for_point(point.scan_id)
            if resumed is not None:
                self._start(resumed.start(), resumed)
                cur = self.current if (self.current is not None
                                       and self.current.scan.scan_id == point.scan_id) else None
        if cur is None or point.scan_id != cur.scan.scan_id:
            what = "no scan is open" if cur is None else f"the open scan is {cur.scan.scan_id!r}"
            self._reject("rejected", f"point {point.point_id} of scan {point.scan_id!r}: {what}")
            return
        pid = point.point_id
        cur.counters["received"] += 1
        if problem := id_problem(pid, cur, self.config):  # npoints, max_points, max_gap
            self._reject("rejected", f"point {pid}: {problem}")
            return
        if cur.resumed is not None and cur.resumed.stored(pid):
            return resent_point(self, cur, point, parts)  # kept, unless another acquisition's
        if cur.collector.seen(pid) and not cur.collector.retake(pid):  # (bad, held: taken)
            self._count("duplicate", f"point {pid}: {cur.collector.why_seen(pid)}; dropped", pid)
            return
        if problem := frame_problem(point, cur, self.config["source"]["allow_refs"]):
            self._count("rejected", f"point {pid}: {problem}; refused", pid)
            cur.collector.refuse(pid, problem)
            return
        if problem := cur.unusable(point):  # a dense frame, a chain for sparse ones only
            return unusable_frame(self, cur, problem)
        cur.taken(point)  # replaces a message refused before; the first sparse frame's notes
        cur.last_message = time.monotonic()  # only the open scan's valid points count
        while not self.ready():  # a caller that does not ask ready() first (replay)
            self.wait(0.2)
        cur.newest = max(cur.newest, pid)
        cur.collector.expect(pid)
        for change in self.params.take_unapplied():  # in force from this point on
            cur.collector.store.event("param", json.dumps(change), pid)
            if self.live is not None:
                self.live.param(cur.scan.scan_id, change, pid)
            log.info("scan %s: set %s applies from point %d", cur.scan.scan_id, change, pid)
        preview = self.live.preview_bin() if self.live is not None else 0
        self.executor.submit(self._seq, cur.key, pid, parts, self.params.in_force, preview, point)
        self._seq += 1
        cur.counters["accepted"] += 1
        self.pump()
        cur.last_message = time.monotonic()  # our own work on it (a compile, ...) never counts
        cur.counters["max_lag"] = max(cur.counters["max_lag"], cur.lag)
        src = self.config["source"]
        if self.current is cur and src["overrun"] == "abort" and cur.lag > src["max_lag"]:
            self._finish("abort", f"overrun: lag {cur.lag} points (newest received "
                                  f"{cur.newest}, newest linked {cur.collector.last_linked}) "
                                  f"exceeds max_lag {src['max_lag']}: processing cannot keep "
                                  f"up with the acquisition")

    def take_result(self, parts: list | Result) -> None:
        """A point back from the workers (wire message, or a thread's Result): to the collector."""
        res = as_result(parts)
        cur = self.current
        if cur is None or res.scan != cur.key:
            log.debug("result of point %d of an earlier scan dropped", res.point_id)
            return
        if res.status == "ok":
            failed = self._collect(cur.collector.add, res.item)
        else:
            cur.log_bad(res.point_id, res.reason)
            failed = self._collect(cur.collector.add_bad, res.point_id, res.reason, res.item)
        cur.counters["max_lag"] = max(cur.counters["max_lag"], cur.lag)
        if self.live is not None and not failed:
            self.live.result(cur, res)

    def _collect(self, call: Callable, *args: Any) -> bool:
        """A collector call that may write the file. A write error (disk full, file too
        large, ...), raised or set as the collector's `failed`, ends the scan as fail."""
        cur = self.current
        try:
            call(*args)
            failed = getattr(cur.collector, "failed", None)
        except OSError as exc:
            failed = f"{exc}"
        if failed and not self._finishing:
            self._finish("fail", f"write failed: {failed}")
        return bool(failed)

    # ------------------------------------------------------------ helpers
    def output_path(self, scan_id: str, meta: dict[str, Any] | None = None) -> Path:
        """The file a new scan is written to."""
        if self.output_file is not None:
            return self.output_file
        return self.namer.path(scan_id, meta)  # named by [output] pattern, never overwrites

    def _refuse(self, scan_id: str, reason: str) -> None:
        """A start that cannot be taken: counted, logged, in the status; its points dropped."""
        self.last_error = f"scan {scan_id}: start refused: {reason}"
        self.refused = scan_id
        log.error("%s", self.last_error)
        count_refused(self, self.last_error)  # counted, and an event of the open scan's

    def _count(self, kind: str, reason: str, point_id: int = -1) -> None:
        count_bad(self, kind, reason, point_id)  # (logged within a limit per scan)

    def _reject(self, kind: str, reason: str) -> None:
        """Malformed or out-of-place messages: counted, logged, recorded, dropped."""
        self._count(kind, reason)  # a malformed message counts once, as malformed
