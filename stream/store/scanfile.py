"""The HDF5 output file: append-only column tables, checkpointed at an interval.

Layout: `stream.store.layout` makes it (/entry, process, points and links, and per
detector sparse, peaks2d, overlaps, cliques, shares); docs/files.md describes it.

Every column is its own chunked, resizable 1D dataset (`stream.table`). Rows
are buffered in memory and written by `checkpoint()` (or `flush()`); values
of rows already written (a 2D peak's clique_id, known only once its clique
closes) are set through `assign()`.

Crash safety (the method, chosen by experiment: see `stream.checkpoint`): the
file is written through a `JournaledFile`, so its bytes on disk change only
when a checkpoint commits, all at once: rows, counters, attributes and the
resume state. A process killed at any instant leaves the file of the last
checkpoint (or that file plus a complete journal, which `open_h5` reads
through and `recover` applies). A new file is made under a hidden name
(`.<name>.<pid>.part`) and given its name once it is a complete, empty scan
file, so no half-made file is ever visible. A scan resumes from the last
checkpoint whose state goes with the rows in the file (`state_rows` equals
`rows`; `stream.resume`). A failed write (disk full, EFBIG, EIO) leaves the
disk as of the last checkpoint: `abandon()` releases the file and marks it
failed when the disk allows (`mark_failed`).
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.core.messages import start_to_json
from stream.core.table import Table, existing_columns, make_columns
from stream.core.threads import named_thread
from stream.store.checkpoint import JournaledFile
from stream.store.layout import SHARE_COLUMNS, TABLES, create_layout, now_iso
from stream.store.outputs import OutputTable
from stream.store.state import write_state

if TYPE_CHECKING:
    from stream.config.schema import Config
    from stream.core.scan import Scan

log = logging.getLogger(__name__)

MAX_EVENTS = 100_000  # events kept per scan by default


_OPEN: weakref.WeakSet = weakref.WeakSet()  # stores still open, released at exit


class ScanStore:
    """The output file of one scan, written while the scan runs; every flush is an
    atomic checkpoint (`stream.checkpoint`)."""

    def __init__(self, path: str | Path, *, scan_id: str, detector: str,
                 motors: list[str], counters: list[str], peak_columns: dict[str, str],
                 clique_columns: dict[str, str], config_text: str = "",
                 start_json: str = "{}", trajectory: dict | None = None,
                 flush_interval: float = 1.0, calibration: str = "", given_text: str = ""):
        self.path = Path(path)
        if os.path.lexists(self.path):  # never overwrite (checked again when it is published)
            raise FileExistsError(errno.EEXIST, "output file exists", str(self.path))
        # made under a hidden name, published once it is a complete (empty) scan file
        part = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        self._jf = JournaledFile(part, create=True)
        try:
            self.file = h5py.File(self._jf, "w")
            create_layout(self.file, scan_id, detector, motors, counters, peak_columns,
                          clique_columns, config_text, start_json, trajectory, calibration,
                          given_text)
            # who wrote it: a resume takes only a file at this name and inode (never a copy)
            self.file["entry/process"].attrs.update(file=self.path.name,
                                                    inode=os.fstat(self._jf.fd).st_ino)
            self._bind(detector, flush_interval)
            self.checkpoint()
            _publish(part, self.path)
        except BaseException:
            self._release()
            _unlink(part)
            raise
        self._jf.path = self.path

    @classmethod
    def for_scan(cls, path: str | Path, scan: Scan, config: Config, detector: str, *,
                 peak_columns: dict[str, str] | None = None, start_json: str | None = None,
                 trajectory: dict | None = None, flush_interval: float | None = None,
                 calibration: str | None = None, applied: str | None = None) -> ScanStore:
        """The output file of `scan` as `config` asks (OSError when it cannot be made):
        the start message's motors and counters, the 2D peak and clique columns, the
        config's text (`applied`: with the control `set` changes in force), calibration
        files and flush interval, the trajectory's rule. The keywords override (relink
        keeps what the file it reads holds)."""
        start = scan.start
        return cls(path, scan_id=start.scan_id, detector=detector, motors=start.motors,
                   counters=start.counters,
                   peak_columns=PEAK_COLUMNS if peak_columns is None else peak_columns,
                   clique_columns=clique_columns(start.motors),
                   config_text=config.text() if applied is None else applied,
                   given_text=config.text() if applied is not None else "",
                   start_json=start_to_json(start) if start_json is None else start_json,
                   trajectory=scan.trajectory.describe() if trajectory is None else trajectory,
                   flush_interval=config["output"]["flush_interval"] if flush_interval is None
                   else flush_interval,
                   calibration=json.dumps(config.calibration()) if calibration is None
                   else calibration)

    @classmethod
    def reopen(cls, path: str | Path, flush_interval: float = 1.0) -> ScanStore:
        """Open an existing scan file to go on writing it (after `recover`: a crash
        leaves it at its last checkpoint)."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self._jf = JournaledFile(self.path)
        try:
            self.file = h5py.File(self._jf, "r+")
            entry = self.file["entry"]
            det = [k for k, v in entry.items() if isinstance(v, h5py.Group) and "peaks2d" in v]
            if not det:
                raise ValueError(f"{path}: not a peakstream output file (no detector group)")
            self._bind(det[0], flush_interval)
        except BaseException:
            self._release()
            raise
        return self

    def _bind(self, detector: str, flush_interval: float) -> None:
        """The Table objects over the file's column datasets."""
        self.detector = detector
        self.flush_interval = flush_interval
        self.max_events = MAX_EVENTS  # per scan (the runner sets [output] max_events)
        self.events_dropped = 0
        self._last_flush = 0.0
        self.closed = False
        entry = self.file["entry"]
        ck = entry["process/checkpoint"]
        self.seq = int(ck.attrs["seq"])
        self.named: dict[str, Table] = {}
        if "shares" not in entry[detector]:  # a file from before the shares table
            make_columns(entry[detector].create_group("shares"), SHARE_COLUMNS, 16384)
        for name, where in TABLES.items():
            group = entry[where.format(det=detector)]
            cols = existing_columns(group)
            if where.endswith("sparse"):
                cols = {k: v for k, v in cols.items() if (k == "nnz") == (name == "nnz")}
            self.named[name] = Table(group, cols)
        n = self.named
        self.events, self.points, self.links, self.sparse = (n["events"], n["points"],
                                                             n["links"], n["sparse"])
        self.nnz, self.peaks, self.overlaps, self.cliques = (n["nnz"], n["peaks"],
                                                             n["overlaps"], n["cliques"])
        self.shares = n["shares"]
        self.tables = tuple(n.values())
        # named per-point node outputs (integrate1d, roi sums): row i = row i of points
        self.outputs = OutputTable(entry[detector], self.points.nwritten)
        _OPEN.add(self)

    def set_shape(self, shape: tuple[int, int], itype: str) -> None:
        """The frame shape and pixel type (ImageD11's sparse attributes); committed now."""
        self.wait()
        self.file["entry"][self.detector]["sparse"].attrs.update(
            itype=itype, shape0=shape[0], shape1=shape[1], nframes=self.nnz.nwritten)
        self.commit_attributes()

    def commit_attributes(self) -> None:
        """Commit attribute changes alone (rows buffered stay buffered, so the last
        checkpoint's state still goes with the rows in the file)."""
        self.wait()
        self.file.flush()
        self._jf.commit()

    def event(self, kind: str, message: str, point_id: int = -1, time: float = 0.0) -> None:
        """Record what happened (bad input, flags, parameter changes) in the file; beyond
        `max_events` in a scan only counted (counter events_dropped), so a flood of bad
        messages cannot fill the disk."""
        if self.events.nrows >= self.max_events:
            self.events_dropped += 1
            if self.events_dropped > 1:
                return
            kind, message = "events_dropped", (f"more than {self.max_events} events: the "
                                               f"rest are only counted (events_dropped)")
        self.events.append({"time": [time], "point_id": [point_id], "kind": [kind],
                            "message": [message]})

    def truncate(self, rows: dict[str, int]) -> None:
        """Cut every table back to `rows` (committed at the next checkpoint)."""
        self.wait()
        for name, t in self.named.items():
            t.truncate(rows.get(name, 0))
        self.outputs.truncate(rows.get("points", 0))
        sparse = self.file["entry"][self.detector]["sparse"]
        if "shape0" in sparse.attrs:
            sparse.attrs["nframes"] = self.nnz.nwritten

    def rows(self) -> dict[str, int]:
        """Rows written of each table."""
        return {name: t.nwritten for name, t in self.named.items()}

    def checkpoint(self, counters: dict[str, int] | None = None,
                   state: dict[str, Any] | None = None, background: bool = False) -> None:
        """Write the buffered rows, the counters and `state` (what a resume needs: the
        linker's frontier, the collector's position), and commit them together: a crash
        at any instant leaves the file as of the last checkpoint. Without `state` the
        rows are committed but the file cannot be resumed from this checkpoint.

        `background`: the rows, counters and state are taken now and written by a
        thread of the store's while the caller goes on (live latency: a checkpoint
        takes tens of ms); an error of that write is raised by the next call that
        writes the file (`wait`). Every other writing call waits for it first."""
        self.wait()
        self.seq += 1
        if self.events_dropped:
            counters = {**(counters or {}), "events_dropped": self.events_dropped}
        job = ([t.take() for t in self.tables], self.outputs.take(), dict(counters or {}),
               _frozen(state), self.seq, json.dumps(self.rows()), self.nnz.nwritten)
        if not background:
            self._write_checkpoint(*job)
            return
        self._writer = named_thread(self._background, "checkpoint", args=job)
        self._writer.start()

    def wait(self) -> None:
        """Wait for a checkpoint being written in the background; raise its error."""
        writer, self._writer = getattr(self, "_writer", None), None
        if writer is not None:
            writer.join()
        error, self._writer_error = getattr(self, "_writer_error", None), None
        if error is not None:
            raise error

    def _wait_quietly(self) -> None:
        """wait(); a failed background checkpoint leaves the disk at the one before."""
        try:
            self.wait()
        except Exception as exc:
            self._jf.discard(f"checkpoint failed: {exc}")

    def _background(self, *job: Any) -> None:
        try:
            self._write_checkpoint(*job)
        except BaseException as exc:  # raised in the caller's thread by wait()
            self._writer_error = exc

    def _write_checkpoint(self, tables, outputs, counters, state, seq, rows, nframes) -> None:
        for t, taken in zip(self.tables, tables, strict=True):
            t.write(taken)
        self.outputs.write(outputs)
        entry = self.file["entry"]
        if "shape0" in entry[self.detector]["sparse"].attrs:
            entry[self.detector]["sparse"].attrs["nframes"] = nframes
        if counters:
            entry["process/counters"].attrs.update(counters)
        ck = entry["process/checkpoint"]
        ck.attrs.update(seq=seq, time=now_iso(), rows=rows)
        if state is not None:
            write_state(ck, state)
            ck.attrs["state_rows"] = rows  # the state goes with these rows
        self.file.flush()
        self._jf.commit()

    def flush(self, counters: dict[str, int] | None = None) -> None:
        """A checkpoint of the rows and counters (no resume state)."""
        self.checkpoint(counters)

    def maybe_flush(self, now: float, counters: dict[str, int] | None = None) -> bool:
        if now - self._last_flush >= self.flush_interval:
            self._last_flush = now
            self.flush(counters)
            return True
        return False

    def close(self, status: str, reason: str = "", counters: dict[str, int] | None = None,
              state: dict[str, Any] | None = None) -> None:
        """Write everything buffered and the final status; the file is complete."""
        if self.closed:
            return
        try:
            self.wait()  # the status goes with the last rows, never with a partial write
            entry = self.file["entry"]
            entry.attrs.update(status=status, reason=reason)
            entry["process"].attrs["end_time"] = now_iso()
            self.checkpoint(counters, state)
        finally:
            self._release()

    def abandon(self, reason: str) -> None:
        """A write failed (disk full, file too large, I/O error): write nothing more, so
        the file stays as of its last checkpoint; then mark it failed if the disk takes
        that much."""
        if not self.closed:
            self._wait_quietly()
            self._jf.discard(reason)
            self._release()
        mark_failed(self.path, reason)

    def close_unchanged(self) -> None:
        """Close, leaving the file as of its last commit."""
        if not self.closed:
            self._wait_quietly()
            self._jf.discard("closed unchanged")
            self._release()

    def _release(self) -> None:
        """Close the HDF5 handle and the file (after a failure: writing nothing more)."""
        self._wait_quietly()
        self.closed = True
        _OPEN.discard(self)
        try:
            if getattr(self, "file", None) is not None and self.file.id.valid:
                self.file.close()
        except Exception as exc:  # the library's last writes failed: the disk is unchanged
            self._jf.discard(f"close failed: {exc}")
            log.warning("%s: closing after a failure: %s", self.path, exc)
            try:
                if self.file.id.valid:
                    self.file.close()
            except Exception:
                pass
        if self._jf.failed is None and self._jf.writable():
            try:
                self._jf.commit()
            except OSError as exc:
                log.error("%s: last commit failed: %s", self.path, exc)
        self._jf.give_back()  # failed: room on a full disk for mark_failed's few bytes
        self._jf.close()


def _frozen(value: Any) -> Any:
    """A copy of a state dict whose arrays the caller may change while it is written."""
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def mark_failed(path: Path, reason: str) -> bool:
    """Set status "fail" and the reason on a file left at its last checkpoint, if the
    disk lets us (a few bytes in place); False if it did not."""
    try:
        jf = JournaledFile(path)
    except OSError as exc:
        log.error("%s: cannot mark as failed: %s", path, exc)
        return False
    try:
        with h5py.File(jf, "r+") as f:
            f["entry"].attrs.update(status="fail", reason=reason)
            f["entry/process"].attrs["end_time"] = now_iso()
        jf.commit()
        return True
    except Exception as exc:
        jf.discard(str(exc))
        log.error("%s: cannot mark as failed (%s); it stays as of its last checkpoint",
                  path, exc)
        return False
    finally:
        jf.close()


def _publish(part: Path, path: Path) -> None:
    """Give the finished new file its name, never replacing a file of that name."""
    try:
        os.link(part, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here: rename (the exists check above guards)
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "output file exists", str(path)) from None
        os.rename(part, path)
        return
    os.unlink(part)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@atexit.register
def _close_open_stores() -> None:
    """A store left open at exit stays as of its last checkpoint (as after a crash)."""
    for store in list(_OPEN):
        store._jf.discard("process exited with the store open")
        store._release()
