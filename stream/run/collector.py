"""Reorder buffer -> linker -> stores: the one place with cross-point state.

Processed points reach the collector in any order. A point handed to the workers holds
its place in the reorder buffer (`expect`) until its result comes back, so a point still
being processed is never declared missing. The reorder buffer releases points in
`point_id` order; a point that has not come is declared missing when the buffer holds
more than `window` points past it, when the oldest waiting point has waited `timeout`
seconds, or at the end of the scan (never waited on forever). Each released point goes
through the linker and its rows are appended to the store, flushed every
`flush_interval` s, or sooner when the rows held exceed `MAX_BUFFERED` bytes (so memory
does not follow the rate).

Counters (the scan's dict, written into the file at each flush): `processed` and `bad`
when a result arrives, `missing`, `linked` when a point is released, `written` the point
rows flushed to the file, `cliques`, `fit_failed` (linker split "pixels": cliques whose
Gaussian fit failed, `stream.run.fits`). So processed + bad + missing = linked + the
results still waiting, and at the end linked = written = processed + bad + missing.

Every flush is a checkpoint (`ScanStore.checkpoint`): the rows, the counters and
`state()` (the linker's frontier, the next point to link, the points later points may
still link to) are committed together, so a process killed at any instant leaves a file
that `stream.resume.resume` continues from (`restore`). `checkpoint()` makes one on
request. A write that fails (disk full, file too large, I/O error) sets `failed` to the
reason: the collector stops writing the scan, leaves the file as of its last checkpoint
(marked failed when the disk allows) and never raises; the caller ends the scan.

Right before the linker sees a point, the scan's trajectory observes its motor positions
(`Trajectory.observe`; a missing or bad point with no motors), so rules that link by
position know where the point is. A point the trajectory flags (a motor it needs is
missing or NaN) is processed and stored but never linked; the reason goes into its
flags. Every trajectory link between two points that both reached the linker with data
is written to the links table (point_a, point_b, kind).
"""

from __future__ import annotations

import json
import logging
import math
import time as _time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from stream.core.item import Item
from stream.run.ending import lowered
from stream.run.fits import fit_failed, log_fit_failed
from stream.run.reorder import ReorderBuffer, Slot
from stream.store.rows import STATUS_CODE, RowWriter
from stream.store.scanfile import ScanStore

log = logging.getLogger(__name__)

MAX_BUFFERED = 32 << 20  # bytes of rows held between flushes, whatever the rate
MAX_REFUSED = 4096  # points remembered as refused on arrival (written as bad if none comes)


class Collector:
    """Owns the reorder buffer, the linker and the store of one scan."""

    def __init__(self, linker: Any, store: ScanStore, counters: dict[str, int], *,
                 window: int = 64, timeout: float = 5.0, npoints: int | None = None,
                 motors: list[str] = (), counter_names: list[str] = (),
                 on_link: Callable[[Item | None, Any], None] | None = None,
                 gauges: Callable[[], dict[str, int]] | None = None,
                 clock: Callable[[], float] = _time.monotonic, state_interval: float = 0.0):
        self.linker = linker
        if hasattr(linker, "separate_in_background"):  # the lane never waits for it
            linker.separate_in_background()
        self.store = store
        self.counters = counters
        self.buffer = ReorderBuffer(window, timeout, npoints)
        self.rows = RowWriter(store, motors, counter_names)
        # called with every linker result (the point's item, None for a missing or bad
        # point or the end of the scan): the live lane's one hook
        self.on_link = on_link
        self.gauges = gauges  # extra figures for the file's counters at each flush
        self.clock = clock
        self._last_flush = clock()
        self._row_bytes = [(t, sum(8 if dt.kind == "O" else dt.itemsize
                                   for dt in t.columns.values())) for t in store.tables]
        self.last_linked = -1
        self.refused: dict[int, str] = {}  # point -> why its message was refused on arrival
        self.motor_limit = math.inf  # motor positions beyond these are not used
        self.motor_ranges: dict[str, tuple[float, float]] = {}
        self._linkable: set[int] = set()  # points with data that later points may link to
        self.failed: str | None = None  # why writing the scan failed (then nothing more is)
        self.first_bad = ""  # the first bad point and why (a scan of bad points fails)
        self.point_offset = 0  # added to the point ids its lines name (`Scan.point_offset`)
        self._missing: deque[tuple[int, int]] = deque(maxlen=MAX_REFUSED)  # ranges
        # s between checkpoints that hold the resume state (0: every one; see flush())
        self.state_interval = state_interval
        self._last_state = -np.inf

    def seen(self, point_id: int) -> bool:
        return self.buffer.seen(point_id)

    def why_seen(self, point_id: int) -> str:
        """Why a point that `seen` says came before is not taken: a duplicate, or a
        point that came after it was recorded missing."""
        if any(a <= point_id < b for a, b in self._missing):
            return ("came after it was recorded missing (the reorder window had passed it; "
                    "`peakstream replay RECORDING --fill FILE` completes the scan)")
        return "already received (a duplicate; or recorded missing before a restart)"

    def expect(self, point_id: int) -> None:
        """A point handed to the workers: it holds its place until its result comes."""
        self.buffer.push(Slot(point_id, None, "pending", "", self.clock()))

    def add(self, item: Item) -> None:
        """A processed point."""
        if self.failed is not None:
            self.counters["processed"] += 1
            return
        if item.sparse is None:
            self.add_bad(item.point_id, "no sparse frame", item)
            return
        self.counters["processed"] += 1
        self.buffer.push(Slot(item.point_id, item, "ok", "", self.clock()))
        self._drain(idle=False)

    def add_bad(self, point_id: int, reason: str, item: Item | None = None) -> None:
        """A point that arrived but could not be processed: recorded as bad."""
        self.counters["bad"] += 1
        self.first_bad = self.first_bad or f"point {point_id + self.point_offset}: {reason}"
        if self.failed is not None:
            return
        self.buffer.push(Slot(point_id, item, "bad", reason, self.clock()))
        self._drain(idle=False)

    def poll(self) -> None:
        """Input is idle: declare overdue gaps missing, flush on the interval."""
        if self.failed is None:
            self._drain(idle=True)

    def finish(self, status: str, reason: str = "", gaps: bool = True) -> None:
        """End of scan: release everything, declare the points that never came missing
        (not with `gaps` false: a scan whose chain could not be set up took none), close
        all cliques, write the status (a scan whose writing failed stays failed)."""
        if self.failed is None and gaps:
            self._drain(idle=True, final=True)
        status, reason = lowered(status, reason, self.counters["missing"], self.counters["bad"],
                                 self.counters["processed"], self.first_bad)
        self.final = (status, reason)
        if self.failed is None:
            result = self.linker.finish()
            self._write_link(result)
            if self.on_link is not None:
                self.on_link(None, result)
            log_fit_failed(self.store.path, self.counters["fit_failed"])
            self.counters["written"] = self.store.points.nrows  # close() flushes them all
            self._write("close", self.store.close, status, reason, self._file_counters())
        self.store.close("fail", self.failed or "")  # no-op unless still open

    def flush(self, background: bool = False) -> bool:
        """Checkpoint now: the buffered rows, the counters and the state; False if the
        scan's writing has failed. With `state_interval` the state (the linker's
        frontier: large for 2D scans of big frames) is written at most that often; a
        resume then goes back to the last checkpoint with a state and processes the
        points after it again (those not delivered again become missing).
        `background`: written by the store's thread while points go on (the periodic
        checkpoints; its failure ends the scan's writing at the next one)."""
        now = self._last_flush = self.clock()
        if self.failed is not None:
            return False
        written = self.counters["written"]
        self.counters["written"] = self.store.points.nrows  # the checkpoint writes them all
        state = None
        if now - self._last_state >= self.state_interval:
            self._drain_linker()  # the state holds no separation under way: its cliques go first
            state = self.state()
        if not self._write("checkpoint", self.store.checkpoint, self._file_counters(), state,
                           background):
            self.counters["written"] = written
            return False
        if state is not None:
            self._last_state = now
        return True

    checkpoint = flush  # on request (the control socket's `checkpoint`)

    def state(self) -> dict[str, Any]:
        """What a resume needs besides the rows: the linker's frontier, the next point to
        link, the points a later point may still link to."""
        return {"linker": self.linker.state(),
                "collector": {"next_point": self.buffer.next_id,
                              "npoints": -1 if self.buffer.npoints is None
                              else self.buffer.npoints,
                              "linkable": np.array(sorted(self._linkable), np.int64)}}

    def restore(self, resumed: Any) -> None:
        """Continue the scan a `stream.resume.Resumed` holds: call after the linker's
        setup(scan). Points before `resumed.next_point` count as received (a copy that
        comes again is a duplicate); the trajectory sees their positions again."""
        if resumed.linker_state is not None:  # None: killed before anything was linked
            self.linker.restore(resumed.linker_state)
        trajectory = self._trajectory()
        for point_id, motors in resumed.observed():
            trajectory.observe(point_id, motors)
        self.buffer.next_id = resumed.next_point
        if self.buffer.npoints is None:
            self.buffer.npoints = resumed.npoints
        self.last_linked = resumed.next_point - 1
        self._linkable = set(resumed.linkable)
        self.counters.update(resumed.counters)
        self.counters["fit_failed"] = fit_failed(self.linker)  # (in the linker's state)

    def _write(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        """A store call that writes the file; a failure ends the scan's writing."""
        try:
            fn(*args)
            return True
        except (OSError, RuntimeError) as exc:  # h5py reports HDF5 write errors as these
            self.failed = f"{what} failed: {exc}"
            log.error("%s: %s; the scan stops writing (the file keeps its last checkpoint)",
                      self.store.path, self.failed)
            self.store.abandon(self.failed)
            return False

    def _file_counters(self) -> dict[str, int]:
        return {**self.counters, **(self.gauges() if self.gauges is not None else {})}

    # ------------------------------------------------------------------

    def _drain(self, idle: bool, final: bool = False) -> None:
        now = self.clock()
        for slot in self.buffer.pop(now if idle else None, final):
            if self.failed is not None:
                return
            if isinstance(slot, range):
                self._link_gap(slot)
            else:
                self._link_point(slot.point_id, slot.item, slot.status, slot.reason)
        if (now - self._last_flush >= self.store.flush_interval
                or sum([t.nbuffered * n for t, n in self._row_bytes]) > MAX_BUFFERED):
            self.flush(background=True)

    def refuse(self, point_id: int, reason: str) -> None:
        """A message for this point was refused on arrival (a bad frame): if no valid
        one comes, the point is written as bad with this reason, not as missing."""
        if len(self.refused) < MAX_REFUSED or point_id in self.refused:
            self.refused[point_id] = reason

    def replaces(self, point_id: int) -> None:
        """A valid message for this point came: one refused before it is recorded as
        replaced."""
        if self.refused.pop(point_id, None) is not None:
            self.store.event("replaced", f"point {point_id}: a valid message replaces the "
                                         f"refused one", point_id)

    def retake(self, point_id: int) -> bool:
        """A copy of a point the workers found bad (a frame that does not decode), held
        and not linked yet: its bad result is dropped, the copy is taken (event `replaced`;
        the point counts as accepted once). False if not held as bad: a duplicate."""
        slot = self.buffer.waiting.get(point_id)
        if slot is None or slot.status != "bad":
            return False
        del self.buffer.waiting[point_id]
        self.counters["bad"] -= 1
        self.counters["accepted"] -= 1
        if self.first_bad.startswith(f"point {point_id + self.point_offset}: "):
            bad = sorted((s.point_id, s.reason) for s in self.buffer.waiting.values()
                         if s.status == "bad")  # another held one, if any
            self.first_bad = f"point {bad[0][0] + self.point_offset}: {bad[0][1]}" if bad else ""
        self.store.event("replaced", f"point {point_id}: a later message replaces the one "
                                     f"found bad ({slot.reason})", point_id)
        return True

    def _link_gap(self, gap: range) -> None:
        """Points that never came: written as one range (rows, event, log line), never
        point by point; those whose message was refused on arrival are bad."""
        bad = sorted(p for p in self.refused if p in gap) if self.refused else []
        start = gap.start
        for p in [*bad, gap.stop]:
            if p > start:
                self._link_missing(start, p)
            if p < gap.stop:
                self.counters["bad"] += 1
                self._link_point(p, None, "bad", self.refused.pop(p))
            start = p + 1

    def _link_missing(self, first: int, stop: int) -> None:
        n = stop - first
        self._missing.append((first, stop))  # (the last MAX_REFUSED ranges)
        a = first + self.point_offset  # (a chunk's: in the scan)
        what = f"point {a}" if n == 1 else f"points {a}..{a + n - 1} ({n})"
        self.counters["missing"] += n
        log.warning("%s missing: no data received", what)
        self.store.event("missing", f"{what}: no data received", first)
        self._trajectory().observe_missing(first, stop)
        result = self.linker.skip(first, stop)
        self.rows.points(np.arange(first, stop, dtype=np.int64), np.full(n, np.nan),
                         np.full(n, STATUS_CODE["missing"], np.uint8), [""] * n, {}, {})
        self.rows.no_pixels(n)
        self.store.outputs.skip(n)
        self._write_link(result)
        self.counters["linked"] += n
        self.last_linked = stop - 1
        if self.on_link is not None:
            self.on_link(None, result)

    def _link_point(self, point_id: int, item: Item | None, status: str, reason: str) -> None:
        ok = status == "ok" and item is not None and item.sparse is not None
        if status == "missing":
            self.counters["missing"] += 1
            log.warning("point %d missing: %s", point_id + self.point_offset, reason)
        elif not ok:
            if status == "lost":  # never came back from the workers: bad, counted here
                self.counters["bad"] += 1
            status = "bad"  # (refused on arrival, lost: not through add_bad)
            self.first_bad = self.first_bad or (f"point {point_id + self.point_offset}: "
                                                f"{reason or 'no sparse frame'}")
        if status != "ok":
            self.store.event(status, reason or "no sparse frame", point_id)
        if ok:
            check_motors(item, self.motor_limit, self.motor_ranges)
        trajectory = self._trajectory()
        flagged = trajectory.observe(point_id, item.motors if ok else {})
        if ok and flagged:
            item.flags.append(f"trajectory: {flagged}")
        if ok:
            result = self.linker.add_point(point_id, item.sparse, item.peaks, item.motors)
            self._write_sparse(point_id, item)
            if not flagged:
                self._write_trajectory_links(trajectory, point_id)
        else:
            result = self.linker.add_point(point_id, None, None, {})
            self.rows.no_pixels()
        self._write_point(point_id, item, status)
        self._write_link(result)
        self.counters["linked"] += 1
        self.last_linked = point_id
        if self.on_link is not None:
            self.on_link(item if ok else None, result)

    def _trajectory(self) -> Any:
        # the linker holds the scan's trajectory from its setup(scan)
        return self.linker.trajectory

    def _write_trajectory_links(self, trajectory: Any, point_id: int) -> None:
        """The links of this point to earlier points with data; forget points no later
        point can reach."""
        links = [(i, kind) for i, kind in trajectory.links_before(point_id)
                 if i in self._linkable]
        if links:
            self.rows.links([i for i, _ in links], [point_id] * len(links),
                            [kind for _, kind in links])
        if trajectory.last_neighbour(point_id) > point_id:
            self._linkable.add(point_id)
        if len(self._linkable) > 64 and point_id % 64 == 0:
            self._linkable = {i for i in self._linkable
                              if trajectory.last_neighbour(i) > point_id}

    def _write_point(self, point_id: int, item: Item | None, status: str) -> None:
        if item is None:
            self.rows.points([point_id], [np.nan], [STATUS_CODE[status]], [""], {}, {})
        else:
            self.rows.points([point_id], [item.time], [STATUS_CODE[status]],
                             [json.dumps(item.flags) if item.flags else ""],
                             {m: [v] for m, v in item.motors.items()},
                             {c: [v] for c, v in item.counters.items()})
        self.rows.outputs(point_id, item.outputs if item is not None and status == "ok" else {})
        if item is not None:
            for flag in item.flags:
                self.store.event("flag", flag, point_id, item.time)

    def _write_sparse(self, point_id: int, item: Item) -> None:
        sp = item.sparse
        self.rows.sparse(sp.row, sp.col, sp.intensity, sp.label, [sp.nnz])
        peaks = item.peaks
        n = len(next(iter(peaks.values()))) if peaks else 0
        if n:
            self.rows.peaks(np.full(n, point_id, np.int64), peaks)

    def _drain_linker(self) -> None:
        if getattr(self.linker, "pending", 0):
            result = self.linker.drain()
            self._write_link(result)
            if self.on_link is not None:
                self.on_link(None, result)

    def _write_link(self, result: Any) -> None:
        self.counters["cliques"] += self.rows.link_result(result)
        self.counters["fit_failed"] = fit_failed(self.linker)


def check_motors(item: Item, limit: float, ranges: dict[str, tuple[float, float]]) -> None:
    """Positions beyond +-`limit` (or outside `ranges`) or infinite are not used: set to
    NaN (so the point is never linked) with a flag that says why."""
    for name, value in item.motors.items():
        lo, hi = ranges.get(name, (-limit, limit))
        if math.isinf(value):
            item.flags.append(f"motor {name} = {value:g} is not finite: not used")
        elif not lo <= value <= hi and not math.isnan(value):
            item.flags.append(f"motor {name} = {value:g} is outside [{lo:g}, {hi:g}]: not used")
        else:
            continue
        item.motors[name] = math.nan
