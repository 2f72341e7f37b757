"""The scan in progress (`OpenScan`) and what the runner and the batch replay share:
the counters' names, the clique columns, the start message as JSON.

`TapCollector` is the collector with a hook on every linker result that
closes cliques, for the live lane (`stream.live`), without touching the
collector itself.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.core.item import PEAK_COLUMNS
from stream.core.messages import Start
from stream.core.messages import start_to_json as _start_json  # the name runner, batch use
from stream.core.scan import Scan
from stream.run.collector import Collector
from stream.run.pipeline import Pipeline
from stream.store.scanfile import ScanStore

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


class TapCollector(Collector):
    """The collector, with `tap(result)` called for every linker result that closes
    cliques (the live lane's `cliques` topic)."""

    tap: Callable[[Any], None] | None = None

    def _write_link(self, result: Any) -> None:
        super()._write_link(result)
        if self.tap is not None and len(result.cliques.get("clique_id", ())):
            self.tap(result)


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
        self.started = time.time()
        self.resumed: Any = None  # a stream.resume.Resumed: the scan continues a crashed file

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
        collector = TapCollector(linker, store, counters, window=src["reorder_window"],
                                 timeout=src["point_timeout"], npoints=scan.start.npoints,
                                 motors=scan.start.motors, counter_names=scan.start.counters,
                                 gauges=lambda: cur.gauges(workers()))
        collector.motor_limit = src["motor_limit"]
        collector.motor_ranges = {k: (float(v[0]), float(v[1]))
                                  for k, v in src["motor_ranges"].items()}
        cur = cls(key, scan, detector, pipeline, collector, path, counters)
        cur.workers0 = workers()
        if live is not None:
            collector.tap = lambda result: live.cliques(cur, result)
        return cur

    def status(self) -> dict[str, Any]:
        """Its counters, lag, reorder buffer and file, now."""
        buf = self.collector.buffer
        return {"scan_id": self.scan.scan_id, "npoints": buf.npoints, "file": str(self.path),
                "started": self.started, **self.counters, "lag": self.lag,
                "newest": self.newest, "last_linked": self.collector.last_linked,
                "waiting": len(buf.waiting) - buf.pending, "pending": buf.pending}

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



def new_store(path: Path, config: Any, start: Start, scan: Scan, detector: str) -> ScanStore:
    """The output file of a scan (OSError when it cannot be made)."""
    return ScanStore(path, scan_id=start.scan_id, detector=detector, motors=start.motors,
                     counters=start.counters, peak_columns=PEAK_COLUMNS,
                     clique_columns=clique_columns(start.motors), config_text=config.text(),
                     start_json=_start_json(start), trajectory=scan.trajectory.describe(),
                     flush_interval=config["output"]["flush_interval"])
