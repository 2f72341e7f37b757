"""Append-only column tables in HDF5 groups, buffered between flushes.

A table is a group of 1D resizable datasets, one per column (nested groups
give 'a/b' names), all the same length. `Table` buffers appended rows and
later assignments to a column and writes them at `flush()`, or hands them
over with `take()` for `write()` in another thread (the store's background
checkpoints). An append only keeps its columns' values (the collector appends
a point at a time to several tables, on the thread every point goes through):
they are made arrays and joined column by column when written. `read_table`
reads a whole table back.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import h5py
import numpy as np

STR = h5py.string_dtype("utf-8")


class Table:
    """Append-only columns in one HDF5 group, buffered between flushes."""

    def __init__(self, group: h5py.Group, columns: dict[str, Any], chunk: int = 65536):
        self.group = group
        self.columns = {name: np.dtype(dt) if dt is not STR else STR
                        for name, dt in columns.items()}
        self.chunk = chunk
        self._names = frozenset(self.columns)
        # an append's values in column order (a tuple, also of one column)
        getter = itemgetter(*self.columns) if self.columns else (lambda rows: ())
        self._values = getter if len(self.columns) != 1 else (lambda rows: (getter(rows),))
        self._pending: list[tuple] = []
        self._assign: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.nwritten = 0
        self.nbuffered = 0
        self._open: dict[str, h5py.Dataset] = {}
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
        if not rows.keys() >= self._names:  # (a call a point per table: kept lean)
            missing = self._names.difference(rows)
            raise KeyError(f"{self.group.name}: rows lack columns {sorted(missing)}")
        n = set(map(len, rows.values()))
        if len(n) != 1:
            raise ValueError(f"{self.group.name}: columns of different lengths {n}")
        self._pending.append(self._values(rows))
        self.nbuffered += n.pop()

    def _dataset(self, name: str) -> h5py.Dataset:
        """The column's dataset, opened once (opening it at every flush cost ~0.2 ms a
        column) and without a chunk cache: a flush writes whole runs of rows, and
        HDF5's default cache, held open, grew RSS by ~10 kB a point without bound."""
        ds = self._open.get(name)
        if ds is None:
            dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
            dapl.set_chunk_cache(0, 0, 1.0)
            ds = h5py.Dataset(h5py.h5d.open(self.group.id, name.encode(), dapl=dapl))
            self._open[name] = ds
        return ds

    def truncate(self, n: int) -> None:
        """Drop the written rows from `n` on (a resume goes back to its state)."""
        if n < self.nwritten:
            for name in self.columns:
                self.group[name].resize((n,))
            self.nwritten = n

    def assign(self, column: str, index: np.ndarray, values: np.ndarray) -> None:
        """Set `column[index] = values` for rows buffered or already written."""
        if len(index):
            self._assign.setdefault(column, []).append((np.asarray(index), np.asarray(values)))

    def flush(self) -> None:
        self.write(self.take())

    def take(self) -> tuple:
        """The buffered rows and assignments, handed over for `write` (which may run in
        another thread): the table counts them written and buffers anew."""
        taken = (self.nwritten, self.nwritten + self.nbuffered, self._pending, self._assign)
        self.nwritten += self.nbuffered
        self.nbuffered = 0
        self._pending = []
        self._assign = {}
        return taken

    def write(self, taken: tuple) -> None:
        n0, n1, pending, assign = taken
        if n1 > n0:
            for k, (name, dtype) in enumerate(self.columns.items()):
                ds = self._dataset(name)
                ds.resize((n1,))
                column = np.concatenate([values[k] for values in pending])
                ds[n0:n1] = column.astype(ds.dtype if dtype is STR else dtype, copy=False)
        for column, pieces in assign.items():
            index = np.concatenate([p[0] for p in pieces])
            values = np.concatenate([p[1] for p in pieces])
            lo, hi = int(index.min()), int(index.max()) + 1
            ds = self._dataset(column)
            slab = ds[lo:hi]
            slab[index - lo] = values
            ds[lo:hi] = slab


def make_columns(group: h5py.Group, columns: dict[str, Any], chunk: int) -> None:
    """Empty resizable columns (rows chunked by `chunk`: a flush rewrites at most one
    partly filled chunk per column)."""
    for name, dt in columns.items():
        group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(chunk,))


def existing_columns(group: h5py.Group) -> dict[str, Any]:
    """Column name -> dtype of the 1D datasets of a table group (nested groups as 'a/b',
    a nested table of its own left out)."""
    cols: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        top = group.get(name.split("/")[0])
        if isinstance(top, h5py.Group) and "table" in top.attrs:
            return
        if isinstance(obj, h5py.Dataset) and obj.ndim == 1:
            cols[name] = STR if h5py.check_string_dtype(obj.dtype) else obj.dtype
    group.visititems(visit)
    return cols


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
