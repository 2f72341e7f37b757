"""Our own output files, replayed as sparse frames.

The kept pixels (`/entry/<det>/sparse` row, col, intensity, nnz per linked
point), the points table (`/entry/points`: point_id, time, status, motors/,
counters/) and the start message (`/entry/process/start`, JSON) are all a
replay needs to run the label / properties / linker steps again with other
criteria, without the frames. Points recorded missing or bad are not sent, so
they are missing again. Pixels are read in blocks of whole points.

The pixels of a chain with a normalise node are normalised already: the start's
meta says so (`nodes.sparse.SPARSE_NORMALISED`, `pixels_normalised`), so that a
normalise node of the replay's chain does not scale them twice. Our sparse and
frame-cache exports carry the same record (`NORMALISED_KEY`, JSON), which their
readers give back (`normalised_record`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Iterator

import h5py
import numpy as np

from nodes.sparse import SPARSE_NORMALISED, normalised_by
from stream.core.item import SparseFrame
from stream.core.messages import DetectorInfo, Point, Start, start_from_json
from stream.sources.files.common import select

BLOCK_PIXELS = 1 << 20
NORMALISED_KEY = "peakstream_normalised"  # an export's record of its pixels' normalisation


def is_ours(f: h5py.File) -> bool:
    """An output file of peakstream: /entry/process and a detector group with peaks2d."""
    entry = f.get("entry")
    return (isinstance(entry, h5py.Group) and "process" in entry
            and any(isinstance(g, h5py.Group) and "peaks2d" in g and "sparse" in g
                    for g in entry.values()))


def read_peakstream(path: str | os.PathLike, *, scan_id: str | None = None,
                    detector: str | None = None, first: int | None = None,
                    last: int | None = None, trajectory: dict | None = None
                    ) -> tuple[Start, Iterator[Point]]:
    """Start and points (sparse frames) of a peakstream output file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise OSError(f"{path}: cannot open as HDF5 (truncated or not HDF5?): {exc}") from None
    with f:
        if not is_ours(f):
            raise ValueError(f"{path}: not a peakstream output file (no /entry/process and "
                             f"/entry/<detector>/peaks2d)")
        recorded = _start(f, path)
        normalised = pixels_normalised(f, path)
        det = _detector(f, path, detector or next(iter(recorded.detectors), None))
        sparse = f[f"entry/{det}/sparse"]
        shape = (int(sparse.attrs["shape0"]), int(sparse.attrs["shape1"]))
        ids = f["entry/points/point_id"][()]
    nframes = recorded.npoints if recorded.npoints is not None else int(ids.max(initial=-1)) + 1
    lo, hi = select(max(nframes, 1), first, last, path)
    info = recorded.detectors.get(det, DetectorInfo(shape, "float32"))
    meta = {**recorded.meta, "source": "peakstream", "file": path, "first": lo}
    if normalised:  # a normalise node of this chain must not scale them twice
        meta[SPARSE_NORMALISED] = normalised
    start = dataclasses.replace(
        recorded, scan_id=scan_id or recorded.scan_id, detectors={det: info},
        npoints=hi - lo + 1, trajectory=dict(trajectory or recorded.trajectory), meta=meta)
    return start, _points(path, start, det, lo, hi)


def _start(f: h5py.File, path: str) -> Start:
    try:
        return start_from_json(f["entry/process/start"].asstr()[()])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad /entry/process/start: {exc}") from None


def pixels_normalised(f: h5py.File, path: str) -> dict | None:
    """The normalisation an output file's pixels carry ({"counter", "reference"}), or
    None: its start's (it replayed normalised pixels), else its chain's normalise node's."""
    return _start(f, path).meta.get(SPARSE_NORMALISED) or _normalised(f)


def normalised_record(value: object, where: str) -> dict | None:
    """An export's `NORMALISED_KEY` record (JSON text, None when absent) as the start's
    meta takes it; a ValueError naming `where` if it is no such record (left unread,
    a chain's normalise node would scale the pixels a second time)."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        record = json.loads(text)
        counter, reference = record["counter"], float(record["reference"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where}: {NORMALISED_KEY} {text!r} is not a normalisation record "
                         f"({{\"counter\": ..., \"reference\": ...}}): {exc}") from None
    if not isinstance(counter, str) or not (math.isfinite(reference) and reference > 0):
        raise ValueError(f"{where}: {NORMALISED_KEY} {text!r} is not a normalisation record "
                         f"(a counter name and a positive reference)")
    return {"counter": counter, "reference": reference}


def _normalised(f: h5py.File) -> dict | None:
    """The normalisation the file's config applied to its pixels (`nodes.sparse`), or None."""
    try:
        nodes = tomllib.loads(f["entry/process/config"].asstr()[()]).get("node", [])
    except (KeyError, TypeError, ValueError):  # (tomllib's errors are ValueErrors)
        return None
    return normalised_by(nodes if isinstance(nodes, list) else [])


def _detector(f: h5py.File, path: str, wanted: str | None) -> str:
    groups = [k for k, g in f["entry"].items()
              if isinstance(g, h5py.Group) and "peaks2d" in g and "sparse" in g]
    if wanted in groups:
        return wanted
    if wanted is not None and len(groups) != 1:
        raise ValueError(f"{path}: no detector {wanted!r} (it has {', '.join(groups)})")
    return groups[0]


def _points(path: str, start: Start, det: str, lo: int, hi: int) -> Iterator[Point]:
    sid, shape = start.scan_id, start.detectors[det].shape
    with h5py.File(path, "r", locking=False) as f:
        table = f["entry/points"]
        ids, status = table["point_id"][()], table["status"][()]
        times = table["time"][()]
        motors = {m: table[f"motors/{m}"][()] for m in start.motors if f"motors/{m}" in table}
        counters = {c: table[f"counters/{c}"][()] for c in start.counters
                    if f"counters/{c}" in table}
        sp = f[f"entry/{det}/sparse"]
        nnz = sp["nnz"][()]
        n = min(len(ids), len(nnz))
        offsets = np.concatenate([[0], np.cumsum(nnz[:n])])
        rows = [r for r in range(n) if status[r] == 0 and lo <= ids[r] <= hi]
        for block in _blocks(rows, offsets):
            a, b = int(offsets[block[0]]), int(offsets[block[-1] + 1])
            row, col, inten = (sp[k][a:b] for k in ("row", "col", "intensity"))
            for r in block:
                s, e = int(offsets[r]) - a, int(offsets[r + 1]) - a
                frame = SparseFrame(shape, row[s:e], col[s:e], inten[s:e].astype(np.float32))
                t = float(times[r]) if r < len(times) else math.nan
                yield Point(sid, int(ids[r]) - lo, t,
                            {m: float(v[r]) for m, v in motors.items()},
                            {c: float(v[r]) for c, v in counters.items()}, {det: frame})


def _blocks(rows: list[int], offsets: np.ndarray) -> Iterator[list[int]]:
    """Runs of consecutive table rows holding up to BLOCK_PIXELS pixels (at least one row)."""
    block: list[int] = []
    for r in rows:
        if block and (r != block[-1] + 1
                      or offsets[r + 1] - offsets[block[0]] > BLOCK_PIXELS):
            yield block
            block = []
        block.append(r)
    if block:
        yield block
