"""Maps of a finished peakstream output file (replay): per-point node outputs and
peak / clique counts placed by `stream.maps.MapWriter`, the writer the live run uses."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import h5py
import numpy as np

from stream.maps.grid import MapGrid, MapWriter

TABLES = ("sparse", "peaks2d", "overlaps", "cliques", "shares")
SCAN_SUFFIXES = ("_radial", "_azimuthal", "_config")  # once-per-scan outputs (integrate)

log = logging.getLogger(__name__)


def build_maps(output: str | os.PathLike, path: str | os.PathLike, *,
               grid: MapGrid | None = None, detector: str | None = None,
               pattern: str | None = "integrate1d", errors: str | None = None,
               include: Sequence[str] | None = None, tiles: Sequence[str] | None = None,
               block: int = 4096) -> dict[str, int]:
    """The maps of a finished peakstream output file, written to `path` by `MapWriter`.

    Per ok point: `peaks2d_count` (2D peaks), `clique_count` (distinct cliques with a
    2D peak there) and every stored node output `/entry/<det>/<name>` whose first
    axis runs over the rows of /entry/points. A pattern's axis: the dataset
    `<pattern>_radial` (attr `units`), as the integrate node's scan outputs, or the
    pattern's own attrs `radial` and `unit`. The grid is the scan's grid / snake
    trajectory unless given. `errors` defaults to `<pattern>_error`.
    """
    from stream.store.reader import detector_of

    with h5py.File(output, "r", locking=False) as f:
        det = detector or detector_of(f)
        pts = f["entry/points"]
        ids, status = pts["point_id"][()], pts["status"][()]
        motors = {m: pts[f"motors/{m}"][()] for m in pts["motors"]} if "motors" in pts else {}
        traj = json.loads(pts.attrs.get("trajectory", "{}") or "{}")
        start = json.loads(f["entry/process/start"].asstr()[()]) if "start" in f[
            "entry/process"] else {}
        own = traj or start.get("trajectory", {})
        if grid is None:
            grid = MapGrid.from_trajectory(own, start.get("npoints"))
        elif own.get("kind") in ("grid", "snake") and (
                int(own.get("nfast") or 0), own["kind"] == "snake") != (grid.nfast, grid.snake):
            log.warning("%s: the map's grid (%d points a row%s) is not the scan's own %s of "
                        "%s points a row: the given one is used", output, grid.nfast,
                        ", snake" if grid.snake else "", own["kind"], own.get("nfast"))
        g = f[f"entry/{det}"]
        counts = _peak_counts(g, int(ids.max(initial=-1)) + 1)
        stored = {name: ds for name, ds in g.items() if name not in TABLES
                  and not name.endswith(SCAN_SUFFIXES) and isinstance(ds, h5py.Dataset)
                  and ds.ndim >= 1 and ds.shape[0] == len(ids)}
        radial, unit = _pattern_axis(g, pattern)
        errors = errors or (f"{pattern}_error" if pattern else None)
        config = f["entry/process/config"].asstr()[()] if "config" in f["entry/process"] else ""
        writer = MapWriter(path, grid, pattern=pattern, errors=errors, include=include,
                           tiles=tiles, radial=radial, unit=str(unit or "2th_deg"),
                           slow_motor=traj.get("slow"), fast_motor=traj.get("fast"),
                           process={"inputfiles": [os.fspath(output)]},
                           config={"peakstream_config": config},
                           title=f"maps of {f['entry'].attrs.get('scan_id', '')}",
                           flush_rows=False)
        with writer:
            for k0 in range(0, len(ids), block):
                k1 = min(len(ids), k0 + block)
                values = {name: ds[k0:k1] for name, ds in stored.items()}
                for k in range(k0, k1):
                    if status[k] != 0:
                        continue
                    pid = int(ids[k])
                    outs = {name: v[pid] for name, v in counts.items()}
                    outs.update({name: v[k - k0] for name, v in values.items()})
                    writer.add(pid, outs, {m: v[k] for m, v in motors.items()})
        return dict(writer.counts)


def _pattern_axis(g: h5py.Group, pattern: str | None) -> tuple[np.ndarray | None, str | None]:
    if pattern is None:
        return None, None
    axis = g.get(f"{pattern}_radial")
    if isinstance(axis, h5py.Dataset):
        return axis[()], str(axis.attrs.get("units", axis.attrs.get("unit", "2th_deg")))
    if isinstance(g.get(pattern), h5py.Dataset) and "radial" in g[pattern].attrs:
        return g[pattern].attrs["radial"], str(g[pattern].attrs.get("unit", "2th_deg"))
    return None, None


def _peak_counts(g: h5py.Group, npoints: int) -> dict[str, np.ndarray]:
    """2D peaks and distinct cliques per point id."""
    pid = g["peaks2d/point_id"][()].astype(np.int64)
    clique = g["peaks2d/clique_id"][()].astype(np.int64)
    n = max(npoints, int(pid.max(initial=-1)) + 1)
    pairs = np.unique(np.stack([pid, clique])[:, clique >= 0], axis=1)
    return {"peaks2d_count": np.bincount(pid, minlength=n).astype(np.float64),
            "clique_count": np.bincount(pairs[0], minlength=n).astype(np.float64)}
