"""The scan in progress (`OpenScan`: its chain, collector, store and counters; its
setup and its finish), the checks a start message passes (`check_start`), and the
counters' names the runner and the block replay share.

The live lane (`stream.service.live`) sees every linker result through the
collector's one hook, `on_link`.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.core.encoded import EncodedFrame
from stream.core.item import SparseFrame
from stream.core.messages import FrameRef, Start
from stream.core.scan import Scan
from stream.run.collector import Collector
from stream.run.pipeline import Pipeline, sparse_only
from stream.store.outputs import write_scan_outputs
from stream.store.scanfile import ScanStore

log = logging.getLogger(__name__)

BAD_LOGGED = 20  # bad (rejected, duplicate) messages logged one by one, then every 1000th


def warn_counted(what: str, n: int, reason: str, kind: str) -> None:
    """The warning for the n-th of a kind of bad input: the first BAD_LOGGED, then every
    1000th with the count (a flood of them must not flood the log; the file's events
    and the counters hold them all)."""
    if n <= BAD_LOGGED or n % 1000 == 0:
        more = (f" ({n} {kind} so far, counted from the last start; further ones are logged "
                f"every 1000th)"
                if n == BAD_LOGGED or n % 1000 == 0 else "")
        log.warning("%s: %s%s", what, reason, more)

SCAN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
COUNTERS = ("received", "accepted", "processed", "bad", "linked", "written", "missing",
            "duplicate", "rejected", "malformed", "cliques", "fit_failed", "overruns", "max_lag")
# measured, not counted: also in the file's counters, different from run to run
GAUGES = ("lag", "rss", "reassigned", "restarted")


def check_start(start: Start, detector: str | None) -> tuple[Scan, str, Any]:
    """The scan a start message opens, its detector's name and info (`detector`: the
    config's choice, None for the first); ValueError saying why it cannot be taken."""
    if not SCAN_ID.fullmatch(start.scan_id) or ".." in start.scan_id:
        raise ValueError(f"start: scan_id {start.scan_id!r} is not a safe file name "
                         f"(letters, digits, '.', '_', '-'; no '..')")
    try:
        scan = Scan.from_start(start)
    except ValueError as exc:  # a trajectory map that decode() did not see
        raise ValueError(f"start: {exc}") from None
    try:
        name, info = scan.detector(detector)
    except KeyError as exc:
        raise ValueError(f"start: {exc.args[0]}") from None
    return scan, name, info


def record_warnings(store: ScanStore, scan_id: str, warnings: list[str],
                    point_id: int = -1) -> None:
    """Log what a scan's chain will not do, and record it in its file (events `warning`:
    `peakstream inspect` shows them)."""
    for warning in warnings:
        store.event("warning", warning, point_id)
        log.warning("scan %s: %s", scan_id, warning)


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
        self.bad_logged = 0  # bad points logged (`log_bad`)
        self.workers0: dict[str, Any] = {}  # the executor's counts when the scan started
        self.started = time.time()
        self.resumed: Any = None  # a stream.resume.Resumed: the scan continues a crashed file
        self.ptyd: Any = None  # a stream.store.ptyd.PtydWriter when the chain has a ptyd node
        self.sparse_noted = False  # the chain's sparse notes were logged (`taken`)
        self.is_set_up = False  # `set_up` passed: its points are expected (else none are)
        self.sparse_only = sparse_only([n.kind for n in pipeline.nodes])  # (`unusable`)

    def log_bad(self, point_id: int, reason: str) -> None:
        """A bad point's warning (`warn_counted`: a scan of bad frames would write a line
        per frame; inspect lists them all)."""
        self.bad_logged += 1
        warn_counted(f"scan {self.scan.scan_id} point {point_id + self.scan.point_offset} "
                     f"is bad", self.bad_logged,
                     reason, "bad")

    def unusable(self, point: Any) -> str:
        """Why no point of this scan can go through its chain, seen at this point's frame,
        or "": a dense frame (the start does not say how frames are sent) for a chain that
        takes sparse frames only (every point would fail in label, one by one)."""
        frame = point.frames.get(self.detector)
        if not self.sparse_only or frame is None or isinstance(frame, SparseFrame):
            return ""
        kind = (f"{frame.encoding} (compressed)" if isinstance(frame, EncodedFrame) else
                "a reference to a file's frame" if isinstance(frame, FrameRef) else "raw")
        return (f"point {point.point_id}'s frame is {kind}, a detector frame, but the chain "
                f"({', '.join(n.kind for n in self.pipeline.nodes)}) has no threshold before "
                f"label, so it takes sparse frames only (encoding \"sparse\"): put a "
                f"threshold node before label")

    def taken(self, point: Any) -> None:
        """A point that passed the checks takes its place: it replaces a message refused
        before (if any); at the scan's first sparse frame, log and record (events
        `warning`) what the chain does not do to sparse frames (`nodes.sparse`: the
        nodes that need the dense frame), so a file whose config names them does not
        pass for their work."""
        self.collector.replaces(point.point_id)
        if self.sparse_noted or not isinstance(point.frames.get(self.detector), SparseFrame):
            return
        self.sparse_noted = True
        record_warnings(self.collector.store, self.scan.scan_id,
                        [f"sparse frames: {note}" for note in self.pipeline.sparse_notes],
                        point.point_id)

    @classmethod
    def create(cls, key: int, config: Any, scan: Scan, detector: str, store: ScanStore,
               path: Path, workers: Callable[[], dict[str, Any]], live: Any = None) -> OpenScan:
        """A scan's linker, chain (to check its setup), collector and counters around its
        store; `workers` gives the executor's status, `live` (a LiveLane) taps the
        cliques."""
        from nodes.link.linker import Linker  # the linker is a node; the collector runs it

        info = scan.start.detectors[detector]
        store.set_shape(info.shape, info.dtype)
        src = config["source"]
        counters: Counter = Counter({k: 0 for k in COUNTERS})
        linker = Linker(**config["linker"])
        pipeline = Pipeline(config.build_nodes())  # checks the setup before the workers
        collector = Collector(linker, store, counters, window=src["reorder_window"],
                                 timeout=src["point_timeout"], npoints=scan.start.npoints,
                                 motors=scan.start.motors, counter_names=scan.start.counters,
                                 gauges=lambda: cur.gauges(workers()))
        store.max_events = config["output"]["max_events"]
        collector.motor_limit = src["motor_limit"]
        collector.point_offset = scan.point_offset  # the ids its lines name (a chunk's)
        collector.motor_ranges = {k: (float(v[0]), float(v[1]))
                                  for k, v in src["motor_ranges"].items()}
        cur = cls(key, scan, detector, pipeline, collector, path, counters)
        cur.workers0 = workers()
        if live is not None:
            collector.on_link = lambda item, result: live.linked(cur, result)
        return cur

    def set_up(self) -> None:
        """Set the linker and the chain up for the scan (raises what their setup raises:
        a dark of the wrong shape, an unsupported trajectory, ...)."""
        self.collector.linker.setup(self.scan)
        self.pipeline.setup(self.scan)
        self.is_set_up = True

    def begin(self, info: Any, resumed: Any = None) -> None:
        """After `set_up`: write the nodes' scan outputs and the frame shape after the
        chain; continue a `stream.store.resume.Resumed` file from its checkpoint."""
        scan, store, detector = self.scan, self.collector.store, self.detector
        write_scan_outputs(store.file["entry"][detector], self.pipeline.nodes)  # axes, units
        out = self.pipeline.output_scan.start.detectors[detector]  # after a frame node's crop
        if tuple(out.shape) != tuple(info.shape):
            store.set_shape(out.shape, out.dtype)
        self._open_ptyd()
        record_warnings(store, scan.scan_id, self.pipeline.setup_warnings)
        if resumed is not None:
            self.collector.restore(resumed)
            self.resumed = resumed
            store.event("resumed", f"resumed from the checkpoint at point "
                                   f"{resumed.next_point}; points before it are kept")
            log.warning("scan %s: resumed %s at point %d", scan.scan_id, self.path,
                        resumed.next_point)

    def _open_ptyd(self) -> None:
        """A chain with a ptyd node: its .ptyd file beside the scan's, fed with every
        point the collector links (`stream.store.ptyd`)."""
        node = next((n for n in self.pipeline.nodes if getattr(n, "kind", "") == "ptyd"), None)
        if node is None:
            return
        from stream.store.ptyd import PtydWriter

        self.ptyd = writer = PtydWriter(self.path.with_suffix(".ptyd"), node.meta(),
                                        node.min_frames, self.scan.start.npoints,
                                        {"scan_id": self.scan.scan_id})
        weights, then = node.weights, self.collector.on_link

        def on_link(item: Any, result: Any) -> None:
            if item is not None and "ptyd_data" in item.outputs:
                writer.add(item.point_id, item.outputs["ptyd_data"],
                           item.outputs["ptyd_position"], weights)
            if then is not None:
                then(item, result)

        self.collector.on_link = on_link

    def finish(self, status: str, reason: str) -> tuple[str, str]:
        """Close the scan's file with `status`; the status it ended with: fail when its
        file could not be written (disk full, ...), whatever was asked."""
        try:
            self.collector.finish(status, reason, gaps=self.is_set_up)
            status, reason = self.collector.final  # incomplete when points are missing
        except Exception as exc:  # the scan fails, the runner goes on
            log.error("scan %s: could not be written: %s", self.scan.scan_id, exc)
            status, reason = "fail", f"write failed: {exc}"
            try:
                self.collector.store.close(status, reason)
            except Exception:
                pass
        failed = self.collector.failed
        if failed and status != "fail":  # the collector gave up writing its file
            status, reason = "fail", f"write failed: {failed}"
        if self.ptyd is not None:
            try:
                self.ptyd.close(status)
            except Exception as exc:  # the scan's own file matters more: say it, go on
                log.error("ptyd %s: %s", self.ptyd.path, exc)
        return status, reason

    def status(self) -> dict[str, Any]:
        """Its counters, lag, reorder buffer and file, now."""
        buf = self.collector.buffer
        return {"scan_id": self.scan.scan_id, "npoints": buf.npoints, "file": str(self.path),
                "started": self.started, **self.counters, "lag": self.lag,
                "newest": self.newest, "last_linked": self.collector.last_linked,
                "waiting": len(buf.waiting) - buf.pending, "pending": buf.pending,
                **({"resumed_at": self.resumed.next_point} if self.resumed else {})}

    def gauges(self, workers: dict[str, Any]) -> dict[str, int]:
        """Figures besides the counters for the file, at each flush: lag, RSS, and the
        points handed to another worker / workers started again during the scan."""
        import psutil

        return {"lag": self.lag, "rss": psutil.Process().memory_info().rss,
                **{k: workers[k] - self.workers0[k] for k in ("reassigned", "restarted")}}

    @property
    def lag(self) -> int:
        """Points between the newest received and the newest linked."""
        return max(self.newest - self.collector.last_linked, 0)
