"""ImageD11 sparse HDF5 files (`ImageD11.sparseframe`, the ESRF segmenter's output).

Layout: a scan group (e.g. `/1.1`) with attrs `shape0`, `shape1`, `itype`,
`nframes`; datasets `row`, `col` (uint16, raster order within a frame),
`intensity`, `nnz` (pixels per frame), optionally `frame`; motors under
`measurement/` (`rot_center` or `rot` or `diffrz...` as omega, `dty...`) and
scalars under `instrument/positioners/`.

The frames are already thresholded: they enter the chain as sparse frames,
so only label and properties run on them. Points come in omega order, as
ImageD11 links consecutive frames in omega order (a stable sort: frames of
equal omega keep their file order; frames whose omega is NaN keep their place);
the counter `frame` keeps each point's frame index in the file.

Our sparse export (`stream.offline.export`) writes its frames in point order
with `peakstream_status` (a point's status in the run, 0 ok) and the attr
`peakstream_detector` (the detector's name, else "detector"): those frames are
not sorted, and frames of points that were not ok are not points here, so a
replay finds them missing again instead of as empty frames. Its attr
`peakstream_normalised` says the pixels are normalised already (the start's
meta `sparse_normalised`, `nodes.sparse`): a normalise node does not scale them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import h5py
import numpy as np

from nodes.sparse import SPARSE_NORMALISED
from stream.core.block import SparseBlock
from stream.core.item import SparseFrame
from stream.core.messages import Point, Start
from stream.core.trajectory import ROTATION_NAMES
from stream.sources.files.common import make_start, scan_id_from
from stream.sources.files.ours import NORMALISED_KEY, normalised_record

OMEGA_NAMES = tuple(f"measurement/{name}" for name in ROTATION_NAMES)
DTY_NAMES = ("measurement/dty_center", "measurement/dty", "measurement/diffty_center",
             "measurement/diffty")
NEEDED = ("row", "col", "intensity", "nnz")
BLOCK_PIXELS = 1 << 22  # pixels per block when replaying in blocks
DETECTOR = "detector"


def is_imaged11_sparse(path: str | os.PathLike) -> bool:
    """True if the file has a group in ImageD11's sparse layout."""
    try:
        with h5py.File(path, "r") as f:
            return bool(_groups(f))
    except OSError:
        return False


def read_imaged11_sparse(path: str | os.PathLike, scan_id: str | None = None,
                         omega: str | None = None) -> tuple[Start, Iterator[Point]]:
    """The start message and the points (SparseFrame frames) of one scan group.

    `scan_id` names the group (default: the first in sorted order); with a
    single group, a `scan_id` that is no group name becomes the scan's id.
    `omega`: a dataset in the group to use as omega instead of the usual names.
    """
    start, blocks = read_imaged11_blocks(path, scan_id, omega)
    return start, _points(start, blocks)


def read_imaged11_blocks(path: str | os.PathLike, scan_id: str | None = None,
                         omega: str | None = None,
                         block_pixels: int = BLOCK_PIXELS) -> tuple[Start, Iterator[SparseBlock]]:
    """The start message and the points in blocks of about `block_pixels` pixels."""
    with h5py.File(path, "r") as f:
        group = _group(f, scan_id, path)
        g = f[group]
        shape = (int(g.attrs["shape0"]), int(g.attrs["shape1"]))
        nnz = g["nnz"][()].astype(np.int64)
        motors = _motors(g, nnz.shape[0], omega, path)
        itype = np.dtype(str(g.attrs.get("itype", g["intensity"].dtype))).name
        trajectory = _trajectory(g, motors)
        ok = _recorded_ok(g, nnz.shape[0], path)
        detector = str(g.attrs.get("peakstream_detector", DETECTOR))  # our export's
        normalised = normalised_record(g.attrs.get(NORMALISED_KEY), f"{path}::{group}")
    order = _omega_order(motors["omega"]) if "omega" in motors and ok is None else None
    sid = scan_id if scan_id and scan_id.strip("/") != group else \
        scan_id_from(path, "_" + group.replace("/", "_"))
    meta = {"source": "imaged11", "file": os.fspath(path), "group": group}
    if ok is not None and not ok.all():
        meta["absent_points"] = int((~ok).sum())
    if normalised:  # our export of normalised pixels: a normalise node must not scale again
        meta[SPARSE_NORMALISED] = normalised
    start = make_start(sid, detector, shape, itype, list(motors), ["frame"], nnz.shape[0],
                       trajectory, meta)
    return start, _blocks(path, group, nnz, motors, order, block_pixels, ok)


# ------------------------------------------------------------------ helpers


def _omega_order(omega: np.ndarray) -> np.ndarray | None:
    """The frames in omega order (a stable sort), None if they are in it already. Frames
    whose omega is NaN (not recorded) keep their place: a NaN says nothing of where a
    frame belongs, and sorting it last would shift every frame after it."""
    order = np.arange(omega.shape[0])
    known = np.flatnonzero(np.isfinite(omega))
    order[known] = known[np.argsort(omega[known], kind="stable")]
    return None if np.array_equal(order, np.arange(order.shape[0])) else order


def _recorded_ok(g: h5py.Group, nframes: int, path) -> np.ndarray | None:
    """Which frames were ok points of the run our export wrote this file from (None: not
    our export); the others were missing or bad there."""
    if "peakstream_status" not in g:
        return None
    status = np.asarray(g["peakstream_status"][()])
    if status.shape != (nframes,):
        raise ValueError(f"{os.fspath(path)}: {g.name}/peakstream_status has shape "
                         f"{status.shape}, expected one value per frame ({nframes})")
    return status == 0


def _trajectory(g: h5py.Group, motors: dict[str, np.ndarray]) -> dict:
    """The trajectory our sparse export recorded (a 360 wrap, a snake), if its motors
    are here; else a sweep in omega (ImageD11's own files)."""
    text = g.attrs.get("peakstream_trajectory", "")
    if isinstance(text, bytes):
        text = text.decode()
    sweep = {"kind": "sweep", "fast": "omega"}
    try:
        recorded = json.loads(text) if text else None
    except ValueError:
        return sweep
    if not isinstance(recorded, dict):
        return sweep
    needs = {recorded.get(k) for k in ("fast", "slow")} - {None}
    return recorded if needs and needs <= set(motors) else sweep


def _groups(f: h5py.File) -> list[str]:
    found = []

    def visit(name: str, obj) -> None:
        if (isinstance(obj, h5py.Group) and all(k in obj for k in NEEDED)
                and "shape0" in obj.attrs and "shape1" in obj.attrs):
            found.append(name)
    f.visititems(visit)
    return sorted(found)


def _group(f: h5py.File, scan_id: str | None, path) -> str:
    groups = _groups(f)
    if not groups:
        raise ValueError(f"{os.fspath(path)}: no ImageD11 sparse group (with "
                         f"{', '.join(NEEDED)} and attrs shape0, shape1)")
    name = (scan_id or "").strip("/")
    if name in groups:
        return name
    if scan_id is None or len(groups) == 1:  # a scan_id that is no group names the output
        return groups[0]
    raise ValueError(f"{os.fspath(path)}: no sparse group {scan_id!r} "
                     f"(found: {', '.join(groups)})")


def _motors(g: h5py.Group, nframes: int, omega: str | None, path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, names in (("omega", (omega,) if omega else OMEGA_NAMES), ("dty", DTY_NAMES)):
        for dset in names:
            if dset in g:
                values = np.asarray(g[dset][()], np.float64)
                if values.ndim == 0:
                    values = np.full(nframes, float(values))
                if values.shape != (nframes,):
                    raise ValueError(f"{os.fspath(path)}: {g.name}/{dset} has shape "
                                     f"{values.shape}, expected one value per frame "
                                     f"({nframes})")
                out[name] = values
                break
        else:
            if name == "omega" and omega:
                raise ValueError(f"{os.fspath(path)}: no dataset {omega!r} in {g.name}")
    pos = "instrument/positioners/dty"
    if "dty" not in out and pos in g and g[pos].ndim == 0:
        out["dty"] = np.full(nframes, float(g[pos][()]))
    return out


def _blocks(path, group: str, nnz: np.ndarray, motors: dict[str, np.ndarray],
            order: np.ndarray | None, block_pixels: int,
            ok: np.ndarray | None = None) -> Iterator[SparseBlock]:
    ptr = np.zeros(nnz.shape[0] + 1, np.int64)
    np.cumsum(nnz, out=ptr[1:])
    with h5py.File(path, "r") as f:
        g = f[group]
        if order is not None:  # points in omega order: read everything, then reorder
            pixels = np.concatenate([np.arange(ptr[i], ptr[i + 1]) for i in order])
            arrays = [g[k][()][pixels] for k in ("row", "col", "intensity")]
            yield _block(0, order, nnz, arrays, motors, None)
            return
        first = 0
        while first < nnz.shape[0]:
            last = int(np.searchsorted(ptr, ptr[first] + block_pixels, side="right")) - 1
            last = min(max(last, first + 1), nnz.shape[0])
            frames = np.arange(first, last)
            s = slice(int(ptr[first]), int(ptr[last]))
            arrays = [g[k][s] for k in ("row", "col", "intensity")]
            yield _block(first, frames, nnz, arrays, motors, ok)
            first = last


def _block(first: int, frames: np.ndarray, nnz: np.ndarray, arrays, motors,
           ok: np.ndarray | None) -> SparseBlock:
    row, col, intensity = arrays
    return SparseBlock(first, nnz[frames], np.asarray(row, np.uint16), np.asarray(col, np.uint16),
                       intensity, np.full(frames.shape[0], math.nan),
                       {k: v[frames] for k, v in motors.items()},
                       {"frame": frames.astype(np.float64)},
                       None if ok is None else ok[frames])


def _points(start: Start, blocks: Iterator[SparseBlock]) -> Iterator[Point]:
    detector, info = next(iter(start.detectors.items()))
    shape = info.shape
    for b in blocks:
        ptr = np.zeros(b.n + 1, np.int64)
        np.cumsum(b.nnz, out=ptr[1:])
        for k in range(b.n):
            if b.ok is not None and not b.ok[k]:  # missing or bad in the exported run
                continue
            s = slice(int(ptr[k]), int(ptr[k + 1]))
            frame = SparseFrame(shape, b.row[s], b.col[s], b.intensity[s])
            yield Point(start.scan_id, b.first + k, float(b.time[k]),
                        {m: float(v[k]) for m, v in b.motors.items()},
                        {c: float(v[k]) for c, v in b.counters.items()},
                        {detector: frame})


__all__ = ["read_imaged11_sparse", "read_imaged11_blocks", "is_imaged11_sparse"]
