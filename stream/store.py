"""The HDF5 output file: append-only column tables, flushed at an interval.

Layout (DESIGN.md, "Stores"):

    /entry                       NXentry; attrs scan_id, status, reason, program, version
    /entry/process               NXprocess; config (TOML text), config_sha256,
                                 start_time, end_time, start (JSON), counters (attrs),
                                 events/ (time, point_id, kind, message)
    /entry/points                point_id, time, status, flags, motors/<m>, counters/<c>;
                                 attr trajectory (JSON: the rule and its parameters)
    /entry/points/links          point_a, point_b, kind: the trajectory links used
                                 (a separate table: read_table(points) leaves it out)
    /entry/<det>/sparse          row, col, intensity, label, nnz (ImageD11's layout)
    /entry/<det>/peaks2d         point_id, <2D peak columns>, clique_id
    /entry/<det>/overlaps        peak_a, peak_b, npixels, score
    /entry/<det>/cliques         clique_id, n2d, npx, sum_intensity, s_raw, f_raw, ...

Every column is its own chunked, resizable 1D dataset. Rows are buffered in
memory and written by `flush()`; values of rows already written (a 2D peak's
clique_id, known only once its clique closes) are set through `assign()`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__

log = logging.getLogger(__name__)

STR = h5py.string_dtype("utf-8")
POINT_STATUS = ("ok", "missing", "bad")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Table:
    """Append-only columns in one HDF5 group, buffered between flushes."""

    def __init__(self, group: h5py.Group, columns: dict[str, Any], chunk: int = 65536):
        self.group = group
        self.columns = {name: np.dtype(dt) if dt is not STR else STR
                        for name, dt in columns.items()}
        self.chunk = chunk
        self._pending: dict[str, list[np.ndarray]] = {c: [] for c in columns}
        self._assign: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.nwritten = 0
        self.nbuffered = 0
        for name, dt in self.columns.items():
            if name not in group:
                group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt,
                                     chunks=(chunk,))
            else:
                self.nwritten = group[name].shape[0]

    @property
    def nrows(self) -> int:
        return self.nwritten + self.nbuffered

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Buffer rows given as one array per column (all columns, same length)."""
        missing = set(self.columns) - set(rows)
        if missing:
            raise KeyError(f"{self.group.name}: rows lack columns {sorted(missing)}")
        n = {len(v) for v in rows.values()}
        if len(n) != 1:
            raise ValueError(f"{self.group.name}: columns of different lengths {n}")
        for name in self.columns:
            self._pending[name].append(np.asarray(rows[name]))
        self.nbuffered += n.pop()

    def assign(self, column: str, index: np.ndarray, values: np.ndarray) -> None:
        """Set `column[index] = values` for rows buffered or already written."""
        if len(index):
            self._assign.setdefault(column, []).append((np.asarray(index), np.asarray(values)))

    def flush(self) -> None:
        if self.nbuffered:
            n0, n1 = self.nwritten, self.nwritten + self.nbuffered
            for name, parts in self._pending.items():
                ds = self.group[name]
                ds.resize((n1,))
                ds[n0:n1] = np.concatenate(parts).astype(ds.dtype, copy=False)
                parts.clear()
            self.nwritten, self.nbuffered = n1, 0
        for column, pieces in self._assign.items():
            index = np.concatenate([p[0] for p in pieces])
            values = np.concatenate([p[1] for p in pieces])
            lo, hi = int(index.min()), int(index.max()) + 1
            ds = self.group[column]
            slab = ds[lo:hi]
            slab[index - lo] = values
            ds[lo:hi] = slab
        self._assign.clear()


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ScanStore:
    """The output file of one scan, written while the scan runs."""

    def __init__(self, path: str | Path, *, scan_id: str, detector: str,
                 motors: list[str], counters: list[str], peak_columns: dict[str, str],
                 clique_columns: dict[str, str], config_text: str = "",
                 start_json: str = "{}", trajectory: dict | None = None,
                 flush_interval: float = 1.0):
        self.path = Path(path)
        self.detector = detector
        self.flush_interval = flush_interval
        self._last_flush = 0.0
        # no HDF5 file lock: a reader may look at the file while the scan runs
        self.file = h5py.File(self.path, "w-", locking=False)
        f = self.file
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", scan_id=scan_id, status="running", reason="",
                           program="peakstream", version=__version__)
        proc = entry.create_group("process")
        proc.attrs["NX_class"] = "NXprocess"
        proc.create_dataset("config", data=config_text, dtype=STR)
        proc.create_dataset("config_sha256", data=config_hash(config_text), dtype=STR)
        proc.create_dataset("start", data=start_json, dtype=STR)
        proc.attrs.update(start_time=now_iso(), end_time="")
        proc.create_group("counters")
        self.events = Table(proc.create_group("events"),
                            {"time": "float64", "point_id": "int64", "kind": STR,
                             "message": STR}, chunk=1024)
        points = entry.create_group("points")
        points.attrs["status_names"] = json.dumps(POINT_STATUS)
        points.attrs["trajectory"] = json.dumps(trajectory or {})
        cols: dict[str, Any] = {"point_id": "int64", "time": "float64", "status": "uint8",
                                "flags": STR}
        cols.update({f"motors/{m}": "float64" for m in motors})
        cols.update({f"counters/{c}": "float64" for c in counters})
        self.points = Table(points, cols, chunk=4096)
        links = points.create_group("links")
        links.attrs["table"] = "links"  # its own table, not columns of /entry/points
        self.links = Table(links, {"point_a": "int64", "point_b": "int64", "kind": STR},
                           chunk=4096)
        det = entry.create_group(detector)
        self.sparse = Table(det.create_group("sparse"),
                            {"row": "uint16", "col": "uint16", "intensity": "float32",
                             "label": "int32"}, chunk=262144)
        self.nnz = Table(det["sparse"], {"nnz": "int64"}, chunk=4096)
        self.peaks = Table(det.create_group("peaks2d"),
                           {"point_id": "int64", **peak_columns, "clique_id": "int64"})
        self.overlaps = Table(det.create_group("overlaps"),
                              {"peak_a": "int64", "peak_b": "int64", "npixels": "int32",
                               "score": "float32"})
        self.cliques = Table(det.create_group("cliques"), dict(clique_columns))
        self.tables = (self.events, self.points, self.links, self.sparse, self.nnz,
                       self.peaks, self.overlaps, self.cliques)

    def set_shape(self, shape: tuple[int, int], itype: str) -> None:
        self.file["entry"][self.detector]["sparse"].attrs.update(
            itype=itype, shape0=shape[0], shape1=shape[1], nframes=0)

    def event(self, kind: str, message: str, point_id: int = -1, time: float = 0.0) -> None:
        """Record what happened (bad input, flags, parameter changes) in the file."""
        self.events.append({"time": [time], "point_id": [point_id], "kind": [kind],
                            "message": [message]})

    def flush(self, counters: dict[str, int] | None = None) -> None:
        for t in self.tables:
            t.flush()
        self.file["entry"][self.detector]["sparse"].attrs["nframes"] = self.nnz.nwritten
        if counters:
            self.file["entry/process/counters"].attrs.update(counters)
        self.file.flush()

    def maybe_flush(self, now: float, counters: dict[str, int] | None = None) -> bool:
        if now - self._last_flush >= self.flush_interval:
            self._last_flush = now
            self.flush(counters)
            return True
        return False

    def close(self, status: str, reason: str = "", counters: dict[str, int] | None = None) -> None:
        """Write everything buffered and the final status; the file is complete."""
        if not self.file.id.valid:
            return
        try:
            self.flush(counters)
        finally:
            entry = self.file["entry"]
            entry.attrs.update(status=status, reason=reason)
            entry["process"].attrs["end_time"] = now_iso()
            self.file.close()


def read_table(group: h5py.Group) -> dict[str, np.ndarray]:
    """All columns of a table group (nested groups flattened as 'a/b'; a nested group
    marked as a table of its own, such as points/links, is left out)."""
    out: dict[str, np.ndarray] = {}
    own = [name for name, obj in group.items()
           if isinstance(obj, h5py.Group) and "table" in obj.attrs]

    def visit(name: str, obj: Any) -> None:
        if name.split("/")[0] in own:
            return
        if isinstance(obj, h5py.Dataset) and obj.ndim == 1:
            data = obj[()]
            if obj.dtype == STR or obj.dtype.kind == "O":
                data = obj.asstr()[()]
            out[name] = data
    group.visititems(visit)
    return out
