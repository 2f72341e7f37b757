"""Scan sessions: apply PROTOCOL.md's rules to decoded messages.

`ScanRunner.handle(parts)` takes one multipart message (from a socket, or
from a replayed file through the same encoding) and drives the scan it
belongs to: start opens an output file and sets the chain up, points are
processed and collected, end closes the file with its status. Everything bad
is counted, logged with the reason, recorded in the open scan's file, and
dropped; the runner never raises on input.
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

import h5py
import numpy as np

from .collector import Collector
from .config import Config
from .item import PEAK_COLUMNS, Item, SparseFrame
from .message import End, FrameRef, MessageError, Point, Start, decode
from .pipeline import Pipeline, PointError
from .scan import Scan
from .store import ScanStore

log = logging.getLogger(__name__)

SCAN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
COUNTERS = ("received", "processed", "linked", "written", "missing", "duplicate", "rejected",
            "malformed", "bad", "cliques")


def clique_columns(motors: list[str]) -> dict[str, str]:
    cols = {"clique_id": "int64", "n2d": "int32", "npx": "int64", "sum_intensity": "float64",
            "s_raw": "float64", "f_raw": "float64"}
    cols.update({k: "float64" for k in ("s_1", "s_I", "s_sI", "s_fI", "s_ssI", "s_ffI", "s_sfI")})
    cols.update({"first_point": "int64", "last_point": "int64", "point": "float64"})
    cols.update({m: "float64" for m in motors})
    return cols


class OpenScan:
    """The scan in progress: its chain, collector, store and counters."""

    def __init__(self, scan: Scan, detector: str, pipeline: Pipeline, collector: Collector,
                 path: Path, counters: Counter):
        self.scan = scan
        self.detector = detector
        self.pipeline = pipeline
        self.collector = collector
        self.path = path
        self.counters = counters
        self.last_message = time.monotonic()
        self.newest = -1  # newest point_id received

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
        self._refs: dict[str, h5py.File] = {}

    # ------------------------------------------------------------ messages

    def handle(self, parts: list) -> None:
        """One multipart message off the wire."""
        self.counters["received"] += 1
        try:
            msg = decode(parts, self.config["source"]["max_frame_bytes"])
        except MessageError as exc:
            self._reject("malformed", str(exc))
        else:
            self.handle_message(msg)
        if self.current is not None:
            self.current.last_message = time.monotonic()

    def handle_message(self, msg: Start | Point | End) -> None:
        if isinstance(msg, Start):
            self._start(msg)
        elif isinstance(msg, Point):
            self._point(msg)
        elif isinstance(msg, End):
            self._end(msg)
        else:
            raise TypeError(f"not a message: {type(msg).__name__}")

    def poll(self) -> None:
        """Call when the input is idle: overdue gaps become missing, a scan that
        has heard nothing for `end_timeout` s (since we last finished with a
        message, so our own backlog never counts) is aborted."""
        cur = self.current
        if cur is None:
            return
        cur.collector.poll()
        idle = time.monotonic() - cur.last_message
        limit = self.config["source"]["end_timeout"]
        if idle > limit:
            self._finish("abort", f"timeout: no end message within {limit:g} s "
                                  f"of the last message")

    def close(self, reason: str = "stopped") -> None:
        """Shut down: a scan still open ends as aborted with the reason."""
        if self.current is not None:
            self._finish("abort", reason)
        for f in self._refs.values():
            f.close()
        self._refs.clear()

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
        pipeline = Pipeline(self.config.build_nodes())
        src = self.config["source"]
        collector = Collector(linker, store, counters, window=src["reorder_window"],
                              timeout=src["point_timeout"], npoints=start.npoints,
                              motors=start.motors, counter_names=start.counters)
        self.current = OpenScan(scan, detector, pipeline, collector, path, counters)
        try:
            linker.setup(scan)
            pipeline.setup(scan)
        except Exception as exc:  # bad dark shape, unsupported trajectory, ...
            log.error("scan %s: setup failed: %s", start.scan_id, exc)
            self._finish("fail", f"setup failed: {exc}")
            return
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
        self.counters.update({k: cur.counters[k] for k in ("linked", "written", "missing",
                                                           "bad", "cliques")})
        self.results.append(summary)
        log.info("scan %s ended: %s%s", cur.scan.scan_id, status, f" ({reason})" if reason else "")
        if self.on_scan_end is not None:
            self.on_scan_end(summary)

    # ------------------------------------------------------------ points

    def _point(self, point: Point) -> None:
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
        cur.newest = max(cur.newest, pid)
        item = Item(pid, cur.detector, point.time, point.motors, point.counters)
        try:
            frame = self._frame(point, cur)
            if isinstance(frame, SparseFrame):
                item.sparse = frame
            else:
                item.frame = frame
            item = cur.pipeline.process(item)
        except (PointError, MessageError, OSError, KeyError, ValueError) as exc:
            log.warning("scan %s point %d is bad: %s", cur.scan.scan_id, pid, exc)
            cur.collector.add_bad(pid, str(exc), item)  # counted when it is written
            return
        cur.counters["processed"] += 1
        self.counters["processed"] += 1
        cur.collector.add(item)

    def _frame(self, point: Point, cur: OpenScan) -> np.ndarray | SparseFrame:
        info = cur.scan.start.detectors[cur.detector]
        frame = point.frames.get(cur.detector)
        if isinstance(point.extra.get("error"), str):
            raise MessageError(point.extra["error"])
        if frame is None:
            raise MessageError(f"point {point.point_id} has no frame for {cur.detector!r}")
        if isinstance(frame, FrameRef):
            frame = self._read_ref(frame)
        if isinstance(frame, SparseFrame):
            if frame.shape != info.shape:
                raise MessageError(f"sparse frame is {list(frame.shape)}, start announced "
                                   f"{list(info.shape)}")
            return frame
        if frame.shape != info.shape or frame.dtype != np.dtype(info.dtype):
            raise MessageError(f"frame is {list(frame.shape)} {frame.dtype}, start announced "
                               f"{list(info.shape)} {info.dtype}")
        return frame

    def _read_ref(self, ref: FrameRef) -> np.ndarray:
        """A frame stored in an HDF5 file (other formats come with file replay)."""
        if ref.path is None:
            raise MessageError(f"frame ref {ref.uri}: only HDF5 references (uri, path, index) "
                               f"are supported")
        f = self._refs.get(ref.uri)
        if f is None:
            f = self._refs[ref.uri] = h5py.File(ref.uri, "r")
        if ref.path not in f:
            raise MessageError(f"frame ref {ref.uri}: no dataset {ref.path!r}")
        ds = f[ref.path]
        return ds[ref.index] if ref.index is not None else ds[()]

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
