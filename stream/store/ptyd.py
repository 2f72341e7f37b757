"""ptypy's prepared-data file (.ptyd), written while the scan runs.

The layout is the one ptypy's `PtyScan` saves and its `PtydScan` loads, in the
conventions of ptypy's `io.h5rw` (every group and dataset carries a `type`
attribute saying what it holds; strings are variable-length; None is a
one-element array of type "None"):

    /                 attrs h5rw_version "0.1", ctime, mtime
    /meta             (dict) version, num_frames, label, shape, psize, energy,
                      center, distance, propagation
    /info             (dict) what wrote the file
    /chunks/0, 1, ... (dict) data (M, N, N), indices (M), positions (M, 2) [y, x]
                      in metres, weights (M, N, N)

`num_frames` is the scan's npoints up front (ptypy waits for that many
frames); for an open-ended scan it follows the frames written, and at the end
it is the number of frames in the file. The file is opened, appended to and
closed for each chunk of `min_frames` points, so a reader (ptypy polls it
while reconstructing) sees the chunks so far between two writes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream import __version__

log = logging.getLogger(__name__)

H5RW_VERSION = "0.1"
PTYD_VERSION = "0.8.1"  # ptypy's data format version this file follows
STR = h5py.string_dtype()


def put(group: h5py.Group, name: str, value: Any, compress: bool = False) -> None:
    """One value the way ptypy's h5rw stores it (replacing what was there)."""
    if name in group:
        del group[name]
    if value is None:
        group.create_dataset(name, data=np.zeros((1,))).attrs["type"] = "None"
    elif isinstance(value, str):
        group.create_dataset(name, data=value, dtype=STR).attrs["type"] = "string"
    elif isinstance(value, dict):
        sub = group.create_group(name)
        sub.attrs["type"] = "dict"
        for k, v in value.items():
            put(sub, k, v, compress)
    elif isinstance(value, np.ndarray):
        ds = group.create_dataset(name, data=value,
                                  compression="gzip" if compress and value.ndim > 1 else None)
        ds.attrs["type"] = "array"
    elif np.isscalar(value):
        group.create_dataset(name, data=np.asarray(value)).attrs["type"] = "scalar"
    else:
        raise TypeError(f"ptyd: cannot store {type(value).__name__} {name!r}")


def _stamp(f: h5py.File) -> None:
    now = time.asctime()
    f.attrs["h5rw_version"] = H5RW_VERSION
    f.attrs.setdefault("ctime", now)
    f.attrs["mtime"] = now


class PtydWriter:
    """Chunks of `min_frames` points into `path`; `add` per point, `close` at the end."""

    def __init__(self, path: Path, meta: dict[str, Any], min_frames: int,
                 npoints: int | None, info: dict[str, Any] | None = None):
        self.path, self.min_frames, self.npoints = Path(path), min_frames, npoints
        self.written = 0
        self.chunks = 0
        self.pending: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.weights: np.ndarray | None = None
        self.meta = {"version": PTYD_VERSION, "num_frames": npoints, **meta}
        with h5py.File(self.path, "w") as f:
            _stamp(f)
            put(f, "chunks", {})
            put(f, "meta", self.meta)
            put(f, "info", {"program": "peakstream", "program_version": __version__,
                            **(info or {})})
        log.info("ptyd: writing %s in chunks of %d frames", self.path, min_frames)

    def add(self, point_id: int, data: np.ndarray, position: np.ndarray,
            weights: np.ndarray) -> None:
        """One point's frame, [y, x] position and weights (its chunk is written when
        full)."""
        self.weights = weights
        self.pending.append((point_id, data, position))
        if len(self.pending) >= self.min_frames:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Write the points held as the next chunk (and num_frames when it follows)."""
        with h5py.File(self.path, "a") as f:
            if self.pending:
                ids, frames, positions = zip(*self.pending, strict=True)
                data = np.stack(frames)
                weights = np.broadcast_to(self.weights, data.shape).astype(np.float32)
                put(f["chunks"], str(self.chunks),
                    {"data": data, "indices": np.asarray(ids, np.int64),
                     "positions": np.stack(positions).astype(np.float64), "weights": weights},
                    compress=True)
                f["chunks"][str(self.chunks)]["indices"].attrs["type"] = "arraylist"
                self.chunks += 1
                self.written += len(ids)
                self.pending = []
            if self.npoints is None or (final and self.written != self.npoints):
                put(f["meta"], "num_frames", self.written)
            _stamp(f)

    def close(self, status: str = "success") -> None:
        """The last chunk; num_frames is then the number of frames in the file."""
        self.flush(final=True)
        log.info("ptyd: %s: %d frames in %d chunks (%s)", self.path, self.written,
                 self.chunks, status)


def read_ptyd(path: Path) -> dict[str, Any]:
    """meta and the chunks, concatenated (data, indices, positions, weights)."""
    with h5py.File(path, "r") as f:
        meta = {k: _value(v) for k, v in f["meta"].items()}
        keys = sorted(f["chunks"], key=int)
        out = {"meta": meta, "chunks": len(keys)}
        for name in ("data", "indices", "positions", "weights"):
            parts = [f["chunks"][k][name][()] for k in keys]
            out[name] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def _value(ds: h5py.Dataset) -> Any:
    kind = ds.attrs.get("type")
    if kind == "None":
        return None
    if kind == "string":
        v = ds[()]
        return v.decode() if isinstance(v, bytes) else str(v)
    if kind == "scalar":
        return ds[()].item()
    return ds[()]
