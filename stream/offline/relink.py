"""Re-cut the cliques of an output file with other linker criteria, without the frames.

The file holds all the linker needs: the labelled sparse pixels, the 2D peak
table and the points (status, motors; the trajectory observes them again as
the collector did). They go through `Linker.add_block`
with the new `[linker]` settings, block after block, and a new file is
written with the same points, pixels and 2D peaks, the overlaps, and the new
cliques (and each 2D peak's new clique_id). The result is the file a replay
with those settings would have written.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream.config.schema import Config
from stream.core.item import PEAK_COLUMNS
from stream.core.messages import Start, start_from_json
from stream.core.scan import Scan
from stream.core.table import STR, read_table
from stream.offline.batch import TrajectoryWalker
from stream.run.fits import fit_failed, log_fit_failed
from stream.store.reader import detector_of, not_ours, open_output
from stream.store.rows import RowWriter
from stream.store.scanfile import ScanStore

log = logging.getLogger(__name__)

BLOCK_PIXELS = 1 << 22


def relink(path: str | Path, output: str | Path, criterion: str | list[str] | None = None,
           fraction: float | None = None, distance: float | None = None,
           **settings: Any) -> dict[str, Any]:
    """Write `output`: `path` with its cliques made again under the new criteria
    (`settings`: other [linker] keys, e.g. split, prominence)."""

    path, output = Path(path), Path(output)
    with open_output(path) as f:  # not there, not HDF5: OSError naming it
        try:
            if "entry" not in f or "process" not in f["entry"]:
                raise ValueError(f"{path}: not a peakstream output file (no /entry/process)")
            det = detector_of(f)
            entry = f["entry"]
            start = _start(entry["process/start"].asstr()[()], path)
            config = _config(entry["process/config"].asstr()[()], path,
                             {"criterion": criterion, "fraction": fraction, "distance": distance,
                              **settings})
            points = read_table(entry["points"])
            sparse = {k: entry[f"{det}/sparse/{k}"][()] for k in ("row", "col", "intensity",
                                                                   "label", "nnz")}
            peaks = read_table(entry[f"{det}/peaks2d"])
            events = read_table(entry["process/events"])
            shape = (int(entry[f"{det}/sparse"].attrs["shape0"]),
                     int(entry[f"{det}/sparse"].attrs["shape1"]))
            itype = str(entry[f"{det}/sparse"].attrs["itype"])
            counters = {k: int(v) for k, v in entry["process/counters"].attrs.items()}
            status, reason = str(entry.attrs["status"]), str(entry.attrs["reason"])
            trajectory = json.loads(entry["points"].attrs.get("trajectory", "{}"))
            # the pixels are the source's: so is the calibration they were made with
            calibration = (entry["process/calibration"].asstr()[()]
                           if "calibration" in entry["process"] else "")
        except KeyError as exc:  # an HDF5 file without what ours hold
            raise not_ours(path, exc) from None
    return write_linked(output, start, _read_text(path, "entry/process/start"), config, det,
                        shape, itype, points, sparse, peaks, events, counters, status, reason,
                        trajectory, note=f"cliques made again from {path.name}", source=path,
                        calibration=calibration)


def write_linked(output: Path, start: Start, start_json: str, config: Config, det: str,
                 shape: tuple[int, int], itype: str, points: dict, sparse: dict, peaks: dict,
                 events: dict, counters: dict[str, int], status: str, reason: str,
                 trajectory: dict, note: str | None = None,
                 source: Path | str = "the tables",
                 calibration: str | None = None) -> dict[str, Any]:
    """Write `output` from a scan's points, labelled sparse pixels, 2D peaks and events
    (points 0..n-1 in order): overlaps and cliques made by the config's linker, as a
    replay writes them. `note`: an event saying where the cliques came from;
    `calibration`: the record of the files the pixels were made with (None: the
    config's)."""
    from nodes.link.linker import Linker, PeakBlock

    path = Path(source)
    n = points["point_id"].shape[0]
    if not np.array_equal(points["point_id"], np.arange(n)):
        raise ValueError(f"{path}: the points table is not points 0..{n - 1} in order")
    scan = Scan.from_start(start)
    linker = Linker(**config["linker"])
    linker.setup(scan)
    peak_columns = {k: str(v.dtype) for k, v in peaks.items()
                    if k not in ("point_id", "clique_id")}
    store = ScanStore.for_scan(output, scan, config, det, peak_columns=peak_columns or None,
                               start_json=start_json,
                               trajectory=trajectory or None, flush_interval=1e9,
                               calibration=calibration)
    rows = RowWriter(store, start.motors, start.counters)
    try:
        store.set_shape(shape, itype)
        _copy_rows(rows, points, sparse, peaks, events)
        npeaks = np.bincount(peaks["point_id"], minlength=n).astype(np.int64)
        nnz = sparse["nnz"].astype(np.int64)
        pixel_ptr = np.r_[0, np.cumsum(nnz)]
        peak_ptr = np.r_[0, np.cumsum(npeaks)]
        motors = {m: points[f"motors/{m}"] for m in start.motors}
        ok = points["status"] == 0
        walker = TrajectoryWalker(scan.trajectory)
        ncliques = 0
        first = 0
        while first < n:
            last = int(np.searchsorted(pixel_ptr, pixel_ptr[first] + BLOCK_PIXELS, "right"))
            last = min(max(last - 1, first + 1), n)
            px = slice(int(pixel_ptr[first]), int(pixel_ptr[last]))
            pk = slice(int(peak_ptr[first]), int(peak_ptr[last]))
            block_motors = {m: v[first:last] for m, v in motors.items()}
            tb = walker.block(first, ok[first:last], block_motors)
            # the flags and their events are in the copied rows
            rows.links(tb.link_a, tb.link_b, np.array(tb.kind, object))
            result = linker.add_block(PeakBlock(
                first, shape, ok[first:last], nnz[first:last], sparse["row"][px],
                sparse["col"][px], sparse["label"][px], npeaks[first:last],
                {k: peaks[k][pk] for k in PEAK_COLUMNS}, block_motors,
                (tb.link_a, tb.link_b), tb.close_at, sparse["intensity"][px]))
            ncliques += rows.link_result(result)
            first = last
        ncliques += rows.link_result(linker.finish())
        counters["cliques"] = ncliques
        counters["fit_failed"] = fit_failed(linker)  # the new cliques' (split "pixels")
        log_fit_failed(output, counters["fit_failed"])
        if note:
            store.event("relink", f"{note} with {linker.rule.describe()}")
    except Exception:
        store.close("fail", "relink failed", counters)
        raise
    store.close(status, reason, counters)
    return {"scan_id": start.scan_id, "status": status, "file": str(output),
            "cliques": ncliques, "criterion": linker.rule.describe()}


def _start(text: str, path: Path) -> Start:
    try:
        return start_from_json(text)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad /entry/process/start: {exc}") from None


def _config(text: str, path: Path, settings: dict[str, Any]) -> Config:
    """The file's config with the new [linker] settings (None: the file's own),
    validated as a config file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: bad /entry/process/config: {exc}") from None
    linker = data.setdefault("linker", {})
    settings = {**settings, "criterion": _criterion(linker.get("criterion", "any_pixel"),
                                                    settings)}
    for key, value in settings.items():
        if value is not None:
            linker[key] = value
    return Config(data, f"{path}::/entry/process/config with the new [linker]")


def _criterion(own: str | list[str], settings: dict[str, Any]) -> str | list[str] | None:
    """The criterion to link by (None: the file's own). A fraction or distance the
    criterion does not use would change nothing: without a new criterion it names its
    own (both: both); with one that leaves it out, ValueError."""
    criterion = settings.get("criterion")
    names = criterion if criterion is not None else own
    names = [names] if isinstance(names, str) else list(names)
    given = [k for k in ("fraction", "distance") if settings.get(k) is not None]
    unused = [k for k in given if k not in names]
    if not unused:
        return criterion
    if criterion is not None:
        raise ValueError(f"{unused[0]} {settings[unused[0]]} has no effect with the criterion "
                         f"{' '.join(names)}: name {unused[0]} among the criteria "
                         f"(--criterion {' '.join([*names, unused[0]])})")
    return given[0] if len(given) == 1 else given


def _read_text(path: Path, name: str) -> str:
    with h5py.File(path, "r", locking=False) as f:
        return f[name].asstr()[()]


def _copy_rows(rows: RowWriter, points, sparse, peaks, events) -> None:
    """The points, pixels, 2D peaks (not yet in cliques) and events of the file read."""
    rows.points(points["point_id"], points["time"], points["status"], points["flags"],
                {m: points[f"motors/{m}"] for m in rows.motors},
                {c: points[f"counters/{c}"] for c in rows.counters})
    rows.sparse(sparse["row"], sparse["col"], sparse["intensity"], sparse["label"],
                sparse["nnz"])
    rows.peaks(peaks["point_id"], {k: peaks[k] for k in rows.store.peaks.columns})
    store = rows.store
    if events["kind"].shape[0]:
        store.events.append({k: events[k].astype(object) if store.events.columns[k] is STR
                             else events[k] for k in store.events.columns})
