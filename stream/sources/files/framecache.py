"""hexrd frame-cache files (`.npz`): thresholded frames as sparse pixels.

Layout (hexrd.imageseries, npz style): `shape` (rows, cols), `nframes`, `dtype`,
per frame `{i}_row`, `{i}_col`, `{i}_data`, and metadata arrays beside them,
`omega` (nframes, 2) holding each frame's start and end angle, and from our
export `peakstream_status` (a point's status in the run, 0 ok: frames of the
others are not points here, so they are missing again) and `peakstream_detector`
(the detector's name, else "detector", or what --detector says), and
`peakstream_normalised` (the pixels are normalised already: the start's meta
`sparse_normalised`, which a normalise node does not scale again). Frames become
SparseFrames (raster-sorted here if they are not; duplicate pixels are summed,
as hexrd's csr matrices do) and enter the chain after the threshold; the
omega motor is the mean of each pair unless a motor spec says otherwise.
The archive is read one frame at a time.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping

import numpy as np

from nodes.sparse import SPARSE_NORMALISED
from stream.core.item import SparseFrame
from stream.core.messages import DTYPES, Point, Start
from stream.sources.files.common import (
    ValueSpec,
    all_specs,
    check_counts,
    error_point,
    make_start,
    point_values,
    scan_id_from,
    select,
)
from stream.sources.files.ours import NORMALISED_KEY, normalised_record


def is_framecache(path: str | os.PathLike) -> bool:
    """A zip archive (npz) holding shape, nframes and 0_row."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {"shape.npy", "nframes.npy", "0_row.npy"} <= names


def read_framecache(path: str | os.PathLike, *, motors: Mapping[str, ValueSpec] | None = None,
                    counters: Mapping[str, ValueSpec] | None = None,
                    time: ValueSpec | None = None, scan_id: str | None = None,
                    detector: str | None = None, first: int | None = None,
                    last: int | None = None, trajectory: dict | None = None
                    ) -> tuple[Start, Iterator[Point]]:
    """Start and points of a frame-cache file (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not is_framecache(path):
        raise ValueError(f"{path}: not a hexrd frame-cache (an .npz with shape, nframes "
                         f"and {{i}}_row/_col/_data)")
    with np.load(path, allow_pickle=False) as npz:
        try:
            shape = tuple(int(v) for v in np.asarray(npz["shape"]).ravel())
            nframes = int(npz["nframes"])
            dtype = str(npz["dtype"]) if "dtype" in npz.files else "float32"
            omega = np.asarray(npz["omega"], np.float64) if "omega" in npz.files else None
            status = np.asarray(npz["peakstream_status"]) \
                if "peakstream_status" in npz.files else None
            if detector is None and "peakstream_detector" in npz.files:  # our export's
                detector = str(npz["peakstream_detector"])
            normalised = normalised_record(
                str(npz[NORMALISED_KEY]) if NORMALISED_KEY in npz.files else None, path)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: bad frame-cache metadata: {exc}") from None
    if len(shape) != 2 or min(shape) < 1 or max(shape) > 65535:
        raise ValueError(f"{path}: shape {shape} is not two sizes in 1..65535")
    if status is not None and status.shape != (nframes,):
        raise ValueError(f"{path}: peakstream_status has shape {status.shape}, not "
                         f"({nframes},)")
    lo, hi = select(nframes, first, last, path)
    motors, counters = dict(motors or {}), dict(counters or {})
    if omega is not None and "omega" not in motors:
        if omega.ndim == 2 and omega.shape[1] == 2:
            omega = omega.mean(axis=1)
        if omega.ndim != 1 or len(omega) < nframes:
            raise ValueError(f"{path}: omega has shape {omega.shape}, not ({nframes}, 2)")
        motors = {"omega": ValueSpec("omega", f"{path}:omega", "frames", values=omega),
                  **motors}
    every = all_specs(motors, counters, time)
    for spec in every:
        if spec.kind in ("hdf5", "header"):
            raise ValueError(f"{spec.name}={spec.text}: a frame-cache has no such values; "
                             f"give a range, a list, a file or a number")
    check_counts(every, hi - lo + 1)
    meta = {"source": "framecache", "file": path, "omega_mean_of_pairs": omega is not None}
    if normalised:  # our export of normalised pixels: a normalise node must not scale again
        meta[SPARSE_NORMALISED] = normalised
    itype = np.dtype(dtype).name if dtype in DTYPES else "float32"
    start = make_start(scan_id or scan_id_from(path), detector or "detector", shape, itype,
                       motors, counters, hi - lo + 1, trajectory, meta, first=lo)
    return start, _points(path, start, lo, hi, motors, counters, time, status)


def _points(path: str, start: Start, lo: int, hi: int, motors: dict[str, ValueSpec],
            counters: dict[str, ValueSpec], time: ValueSpec | None,
            status: np.ndarray | None) -> Iterator[Point]:
    det, sid = next(iter(start.detectors)), start.scan_id
    shape = start.detectors[det].shape
    with np.load(path, allow_pickle=False) as npz:
        for i in range(lo, hi + 1):
            pid = i - lo
            if status is not None and status[i] != 0:  # missing or bad in the exported run
                continue
            try:
                frame = sparse_frame(npz[f"{i}_row"], npz[f"{i}_col"], npz[f"{i}_data"],
                                     shape)
                t = time.at(pid, frame=i) if time else float("nan")
                point = Point(sid, pid, t, point_values(motors, pid, frame=i),
                              point_values(counters, pid, frame=i), {det: frame})
            except Exception as exc:  # a damaged member: KeyError, zlib, ValueError ...
                yield error_point(sid, pid, f"{path} frame {i}", exc)
                continue
            yield point


def sparse_frame(row: np.ndarray, col: np.ndarray, data: np.ndarray,
                 shape: tuple[int, int]) -> SparseFrame:
    """Raster-sorted unique pixels (duplicates summed) of one frame, checked."""
    row, col = np.asarray(row).ravel(), np.asarray(col).ravel()
    data = np.asarray(data).ravel()
    if not len(row) == len(col) == len(data):
        raise ValueError(f"row, col and data have {len(row)}, {len(col)} and {len(data)} "
                         f"values")
    if len(row) and (row.min() < 0 or col.min() < 0 or row.max() >= shape[0]
                     or col.max() >= shape[1]):
        raise ValueError(f"pixels outside the frame {shape[0]}x{shape[1]}")
    key = row.astype(np.int64) * shape[1] + col.astype(np.int64)
    intensity = data.astype(np.float32)
    if len(key) > 1 and not (np.diff(key) > 0).all():
        order = np.argsort(key, kind="stable")
        key, intensity = key[order], intensity[order]
        starts = np.flatnonzero(np.r_[True, np.diff(key) > 0])
        key, intensity = key[starts], np.add.reduceat(intensity, starts)
    return SparseFrame(shape, (key // shape[1]).astype(np.uint16),
                       (key % shape[1]).astype(np.uint16), intensity.astype(np.float32))
