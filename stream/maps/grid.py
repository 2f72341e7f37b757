"""Maps of a 2D scan: per-point results placed by point id into (nslow, nfast, ...) arrays
and written as NeXus, like pyFAI's diff_map, while the points arrive.

`MapGrid` (`stream.core.grid`, shared with the live map) says where a point
goes; more rows than expected are added as they come (open-ended scans grow along
slow, as diff_map does). `MapWriter` takes each point's outputs
(`add`) and writes them; `stream.mapbuild.build_maps` makes the maps of a finished
peakstream output file (replay) through the same writer.

The file's layout is pyFAI diff_map's (`stream.maps.nexus`).

Rows are buffered and written when complete (then the file is flushed, so a reader
opening it with h5py sees every finished row), or when two rows behind the
newest, or by `flush()`. Places without a point hold NaN and map_ptr -1.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from stream import __version__
from stream.core.grid import MapGrid
from stream.core.table import STR
from stream.maps.nexus import (
    ENTRY,
    MAPS,
    PROCESS,
    RESULT,
    RESULT_PATH,
    describe,
    fill_axis,
    pattern_axes,
    virtual_map,
)
from stream.store.layout import now_iso

log = logging.getLogger(__name__)

@dataclass
class _Feature:
    kind: str  # pattern | errors | map | tile
    shape: tuple[int, ...]  # per point
    dataset: h5py.Dataset


@dataclass
class _Row:
    values: dict[str, np.ndarray] = field(default_factory=dict)
    ptr: np.ndarray | None = None
    filled: np.ndarray | None = None
    positions: dict[str, np.ndarray] = field(default_factory=dict)


class MapWriter:
    """Write a map file while points arrive: `add(index, outputs, motors)`, `close()`.

    `pattern` names the output holding the 1D (npt,) or caked (nazim, npt) pattern
    (its axis from `radial` / `unit` / `azimuthal`, or `set_radial` later), `errors`
    its error estimate. Other outputs: size-1 and 1D ones become maps/<name>; 2D
    ones named in `tiles` (default: names starting tile_) become composites;
    `include` limits which are mapped. Positions come from the `slow_motor` and
    `fast_motor` values of the points, else `slow_range` / `fast_range` (start,
    stop) as in pyFAI's config, else the indices; `names` label the two axes.
    """

    def __init__(self, path: str | os.PathLike, grid: MapGrid, *,
                 pattern: str | None = "integrate1d", errors: str | None = None,
                 radial: np.ndarray | None = None, unit: str = "2th_deg",
                 azimuthal: np.ndarray | None = None, tiles: Sequence[str] | None = None,
                 include: Sequence[str] | None = None, slow_motor: str | None = None,
                 fast_motor: str | None = None, slow_range: Sequence[float] | None = None,
                 fast_range: Sequence[float] | None = None,
                 names: Sequence[str] | None = None,
                 process: Mapping[str, Any] | None = None, config: Any = None,
                 title: str = "peakstream map", flush_rows: bool = True) -> None:
        self.grid, self.pattern, self.errors = grid, pattern, errors
        self.tiles = None if tiles is None else set(tiles)
        self.include = None if include is None else set(include)
        self.slow_motor, self.fast_motor = slow_motor, fast_motor
        self.slow_range, self.fast_range = slow_range, fast_range
        self.names = tuple(names) if names else (slow_motor or "slow", fast_motor or "fast")
        self.flush_rows = flush_rows
        self.counts = {"placed": 0, "outside": 0, "duplicate": 0, "ignored": 0}
        self.nrows = grid.nslow or 0
        self._rows: dict[int, _Row] = {}
        self._done_rows: set[int] = set()
        self._features: dict[str, _Feature] = {}
        self._ignored: set[str] = set()
        self._newest = -1
        self._radial, self._unit, self._azimuthal = radial, unit, azimuthal
        self.path = os.fspath(path)
        # no HDF5 file lock: a viewer may open the file while the scan runs
        self.file = h5py.File(self.path, "w", locking=False)
        self._layout(process or {}, config, title)

    # ------------------------------------------------------------ layout

    def _layout(self, process: Mapping[str, Any], config: Any, title: str) -> None:
        f, g = self.file, self.grid
        f.attrs.update(NX_class="NXroot", default=ENTRY, creator="peakstream",
                       file_time=now_iso(), file_name=os.path.abspath(self.path),
                       HDF5_Version=h5py.version.hdf5_version)
        entry = f.create_group(ENTRY)
        entry.attrs.update(NX_class="NXentry", default=f"{PROCESS}/{RESULT}")
        entry["title"], entry["program_name"], entry["start_time"] = title, "peakstream", now_iso()
        proc = self.proc = entry.create_group(PROCESS)
        proc.attrs["NX_class"] = "NXprocess"
        proc["program"], proc["version"], proc["date"] = "peakstream", __version__, now_iso()
        for key, value in process.items():
            if isinstance(value, list | tuple):
                proc.create_dataset(key, data=[str(v) for v in value], dtype=STR)
            else:
                proc[key] = value
        if "inputfiles" not in proc:
            proc.create_dataset("inputfiles", data=[], dtype=STR)
        proc["dim0"], proc["dim1"], proc["dim2"] = self.nrows, g.nfast, 0
        proc["dim0"].attrs.update(axis=self.names[0], range=self._range("slow"))
        proc["dim1"].attrs.update(axis=self.names[1], range=self._range("fast"))
        proc["dim2"].attrs["axis"] = "diffraction"
        proc["offset"] = g.offset
        note = proc.create_group("configuration")
        note.attrs["NX_class"] = "NXnote"
        note["type"] = "text/json"
        note["data"] = config if isinstance(config, str) else json.dumps(config or {}, indent=2,
                                                                            default=str)
        self.positions = proc.create_group("positions")
        self.positions.attrs["NX_class"] = "NXcollection"
        res = self.result = proc.create_group(RESULT)
        res.attrs.update(NX_class="NXdata", signal="map_ptr", axes=["slow", "fast"])
        self._slow = self._axis("slow", 0, self.nrows)  # in memory; written with each row
        self._fast = self._axis("fast", 0, g.nfast)
        self._motors: set[str] = set()
        self._slowax = res.create_dataset("slow", data=self._slow,
                                          maxshape=(None,), chunks=(256,))
        self._fastax = res.create_dataset("fast", data=self._fast)
        for ds, name in ((self._slowax, self.names[0]), (self._fastax, self.names[1])):
            ds.attrs.update(interpretation="scalar", long_name=name)
        self.map_ptr = res.create_dataset("map_ptr", shape=(self.nrows, g.nfast), dtype=np.int32,
                                          maxshape=(None, g.nfast), chunks=(1, g.nfast),
                                          fillvalue=-1)
        self.map_ptr.attrs.update(interpretation="image",
                                  long_name="Frame index for given map position")
        self._grown: list[tuple[h5py.Dataset, int]] = [(self.map_ptr, 1)]
        self.maps = entry.create_group(MAPS)
        self.maps.attrs["NX_class"] = "NXcollection"
        f.flush()

    def _range(self, axis: str) -> list[float]:
        given = self.slow_range if axis == "slow" else self.fast_range
        n = self.nrows if axis == "slow" else self.grid.nfast
        return [float(v) for v in given] if given else [0.0, float(max(n - 1, 0))]

    def _axis(self, axis: str, i0: int, i1: int) -> np.ndarray:
        """Default positions of rows / columns i0..i1-1 (NaN when they come from a motor)."""
        given = self.slow_range if axis == "slow" else self.fast_range
        idx = np.arange(i0, i1, dtype=np.float64)
        if given:
            n = (self.grid.nslow or 0) if axis == "slow" else self.grid.nfast
            step = (given[1] - given[0]) / (n - 1) if n > 1 else 0.0
            return given[0] + step * idx
        if (self.slow_motor if axis == "slow" else self.fast_motor) is not None:
            return np.full(i1 - i0, np.nan)
        return idx

    def set_radial(self, radial: np.ndarray, unit: str,
                   azimuthal: np.ndarray | None = None) -> None:
        """The pattern's axis (before its first pattern arrives)."""
        if self.pattern in self._features:
            raise ValueError("map: set the radial axis before the first pattern")
        self._radial, self._unit, self._azimuthal = radial, unit, azimuthal

    def _grow(self, nrows: int) -> None:
        old = self.nrows
        for ds, per in self._grown:
            ds.resize(nrows * per, axis=0)
        self._slow = np.concatenate([self._slow, self._axis("slow", old, nrows)])
        self._slowax.resize((nrows,))
        for ds in self.positions.values():
            ds.resize(nrows, axis=0)
        self.nrows = nrows

    def _create(self, name: str, value: np.ndarray) -> _Feature | None:
        g, nrows = self.grid, self.nrows
        shape = tuple(value.shape)
        common = dict(dtype=np.float32, fillvalue=np.nan)
        if name in (self.pattern, self.errors) and value.ndim in (1, 2):
            kind = "pattern" if name == self.pattern else "errors"
            ds = self.result.create_dataset(
                "intensity" if kind == "pattern" else "errors", shape=(nrows, g.nfast, *shape),
                maxshape=(None, g.nfast, *shape), chunks=(1, g.nfast, *shape), **common)
            ds.attrs["interpretation"] = "spectrum" if value.ndim == 1 else "image"
            if kind == "pattern":
                self._pattern_axes(shape)
        elif value.size == 1 or value.ndim == 1:
            kind = "map"
            shape = () if value.size == 1 and value.ndim <= 1 else shape
            grp = self.maps.create_group(name)
            ds = grp.create_dataset("data", shape=(nrows, g.nfast, *shape), dtype=np.float64,
                                    maxshape=(None, g.nfast, *shape), chunks=(1, g.nfast, *shape),
                                    fillvalue=np.nan)
            grp.attrs.update(NX_class="NXdata", signal="data",
                             axes=["slow", "fast", *(["."] * len(shape))])
            grp["slow"] = h5py.SoftLink(f"{RESULT_PATH}/slow")
            grp["fast"] = h5py.SoftLink(f"{RESULT_PATH}/fast")
        elif value.ndim == 2 and (name in self.tiles if self.tiles is not None
                                  else name.startswith("tile_")):
            kind = "tile"
            th, tw = shape
            grp = self.maps.create_group(f"composite_{name.removeprefix('tile_')}")
            ds = grp.create_dataset("data", shape=(nrows * th, g.nfast * tw),
                                    maxshape=(None, g.nfast * tw), chunks=(th, g.nfast * tw),
                                    **common)
            ds.attrs.update(interpretation="image", tile_shape=[th, tw])
            grp.attrs.update(NX_class="NXdata", signal="data")
            self._grown.append((ds, th))
            return self._add_feature(name, _Feature(kind, shape, ds))
        else:
            return None
        self._grown.append((ds, 1))
        return self._add_feature(name, _Feature(kind, shape, ds))

    def _add_feature(self, name: str, feat: _Feature) -> _Feature:
        self._features[name] = feat
        return feat

    def _pattern_axes(self, shape: tuple[int, ...]) -> None:
        self.space = pattern_axes(self.result, shape, self._radial, self._unit,
                                  self._azimuthal)
        self.proc["dim2"][()] = shape[-1]
        virtual_map(self.result, self.nrows, self.grid.nfast)
        describe(self.result, self.space, self._slowax, self._fastax)

    # ------------------------------------------------------------ points

    def add(self, index: int, outputs: Mapping[str, np.ndarray],
            motors: Mapping[str, float] | None = None, ptr: int | None = None) -> bool:
        """Place one point's outputs; False if it lies outside the map (before offset)."""
        slow, fast = self.grid.place(index)
        if slow < 0:
            self.counts["outside"] += 1
            return False
        if slow >= self.nrows:
            self._grow(slow + 1)
        self._newest = max(self._newest, slow)
        values = {}
        for name, arr in outputs.items():
            if self.include is not None and name not in self.include \
                    and name not in (self.pattern, self.errors):
                continue
            arr = np.asarray(arr)
            feat = self._features.get(name)
            if feat is None and name not in self._ignored:
                feat = self._create(name, arr)
                if feat is None:
                    self._ignored.add(name)
                    log.debug("map: output %r of shape %s is not mapped", name, arr.shape)
            if feat is None:
                self.counts["ignored"] += 1
                continue
            if arr.size != math.prod(feat.shape):
                log.warning("map: point %d: %s has shape %s, the map %s: not placed",
                            index, name, arr.shape, feat.shape)
                continue
            values[name] = arr.reshape(feat.shape)
        point = {m: float(v) for m, v in (motors or {}).items()}
        self._axis_values(slow, fast, point)
        ptr = index if ptr is None else ptr
        if slow in self._done_rows:
            self._write_point(slow, fast, values, ptr, point)
        else:
            self._buffer(slow, fast, values, ptr, point)
        self.counts["placed"] += 1
        for old in [r for r in self._rows if r < self._newest - 1]:
            self._write_row(old, done=True)
        return True

    def _axis_values(self, slow: int, fast: int, motors: Mapping[str, float]) -> None:
        if self.slow_motor in motors and math.isnan(self._slow[slow]):
            self._slow[slow] = motors[self.slow_motor]
        if self.fast_motor in motors and math.isnan(self._fast[fast]):
            self._fast[fast] = motors[self.fast_motor]
        for m in motors:
            if m not in self._motors:
                self._motors.add(m)
                self.positions.create_dataset(m, shape=(self.nrows, self.grid.nfast),
                                              maxshape=(None, self.grid.nfast),
                                              chunks=(1, self.grid.nfast), dtype=np.float64,
                                              fillvalue=np.nan)

    def _buffer(self, slow: int, fast: int, values: dict[str, np.ndarray], ptr: int,
                motors: Mapping[str, float]) -> None:
        nfast = self.grid.nfast
        row = self._rows.get(slow)
        if row is None:
            row = self._rows[slow] = _Row(ptr=np.full(nfast, -1, np.int32),
                                          filled=np.zeros(nfast, bool))
        if row.filled[fast]:
            self.counts["duplicate"] += 1
            log.warning("map: index %d lands on (%d, %d), already filled: replaced",
                        ptr, slow, fast)
        for name, v in values.items():
            buf = row.values.get(name)
            if buf is None:
                buf = row.values[name] = np.full((nfast, *v.shape), np.nan,
                                                 self._features[name].dataset.dtype)
            buf[fast] = v
        for m, v in motors.items():
            row.positions.setdefault(m, np.full(nfast, np.nan))[fast] = v
        row.ptr[fast], row.filled[fast] = ptr, True
        if row.filled.all():
            self._write_row(slow, done=True)

    def _write_row(self, slow: int, done: bool) -> None:
        row = self._rows[slow]
        for name, buf in row.values.items():
            feat = self._features[name]
            if feat.kind == "tile":
                th, tw = feat.shape
                feat.dataset[slow * th:(slow + 1) * th] = \
                    buf.transpose(1, 0, 2).reshape(th, self.grid.nfast * tw)
            else:
                feat.dataset[slow] = buf
        for m, v in row.positions.items():
            self.positions[m][slow] = v
        self._slowax[...], self._fastax[...] = self._slow, self._fast
        self.map_ptr[slow] = row.ptr
        if done:
            del self._rows[slow]
            self._done_rows.add(slow)
        if self.flush_rows:
            self.file.flush()

    def _write_point(self, slow: int, fast: int, values: dict[str, np.ndarray], ptr: int,
                     motors: Mapping[str, float]) -> None:
        """A late point of a row already written."""
        if self.map_ptr[slow, fast] >= 0:
            self.counts["duplicate"] += 1
        for name, v in values.items():
            feat = self._features[name]
            if feat.kind == "tile":
                th, tw = feat.shape
                feat.dataset[slow * th:(slow + 1) * th, fast * tw:(fast + 1) * tw] = v
            else:
                feat.dataset[slow, fast] = v
        for m, v in motors.items():
            self.positions[m][slow, fast] = v
        self._slowax[...], self._fastax[...] = self._slow, self._fast
        self.map_ptr[slow, fast] = ptr

    def flush(self) -> None:
        """Write the rows in progress too (a live viewer sees every point so far)."""
        for slow in list(self._rows):
            self._write_row(slow, done=False)
        self.file.flush()

    def close(self) -> None:
        """Write every buffered row, the axes (unseen positions filled), end_time; close."""
        if not self.file.id.valid:
            return
        try:
            for slow in sorted(self._rows):
                self._write_row(slow, done=True)
            for ds, values, dim in ((self._slowax, self._slow, "dim0"),
                                    (self._fastax, self._fast, "dim1")):
                ds[...] = fill_axis(values)
                if ds.shape[0]:
                    self.proc[dim].attrs["range"] = [float(ds[0]), float(ds[-1])]
            self.proc["dim0"][()] = self.nrows
            self.file[ENTRY]["end_time"] = now_iso()
        finally:
            self.file.close()

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
