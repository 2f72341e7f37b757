"""Named per-point node outputs (`item.outputs`: integrate1d, roi sums, ...) in the file.

Each output is `/entry/<det>/<name>` of shape (rows, *shape): row i belongs to
row i of `/entry/points`, so a map builder places it by that table's
point_id. A dataset is made at the first point that has the output; rows of
points without it (missing, bad, or a node that skipped it) hold NaN
(floats) or 0. Arrays a node gives once per scan (`scan_outputs()`: the
radial axis with its unit, the integration settings) are written beside them
by `write_scan_outputs`.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

RESERVED = ("sparse", "peaks2d", "overlaps", "cliques", "shares")


class OutputTable:
    """Per-point outputs, buffered like the other tables and written by `flush()`."""

    def __init__(self, group: h5py.Group, nrows: int = 0):
        self.group = group
        self.nrows = nrows
        self.names = {n for n, d in group.items()
                      if isinstance(d, h5py.Dataset) and d.attrs.get("per_point")}
        self._pending: dict[str, list[tuple[int, np.ndarray]]] = {}

    def append(self, outputs: dict[str, np.ndarray]) -> list[str]:
        """One row (a point); returns the problems (an output skipped, and why)."""
        row, self.nrows = self.nrows, self.nrows + 1
        problems = []
        for name, value in outputs.items():
            arr = np.asarray(value)
            if name not in self.names:
                if name in RESERVED or "/" in name or name in self.group:
                    problems.append(f"output {name!r}: the name is taken or not a plain name")
                    continue
                self._create(name, arr)
            ds = self.group[name]
            if ds.shape[1:] != arr.shape or ds.dtype != arr.dtype:
                problems.append(f"output {name!r}: {arr.dtype} {list(arr.shape)}, not "
                                f"{ds.dtype} {list(ds.shape[1:])} as at the first point")
                continue
            self._pending.setdefault(name, []).append((row, arr))
        return problems

    def skip(self, n: int) -> None:
        """`n` rows without outputs (points that never came)."""
        self.nrows += n

    def _create(self, name: str, arr: np.ndarray) -> None:
        chunk = max(1, min(4096, (1 << 20) // max(arr.nbytes, 1)))
        ds = self.group.create_dataset(
            name, shape=(0, *arr.shape), maxshape=(None, *arr.shape), dtype=arr.dtype,
            chunks=(chunk, *arr.shape), fillvalue=np.nan if arr.dtype.kind == "f" else 0)
        ds.attrs["per_point"] = True
        self.names.add(name)

    def truncate(self, nrows: int) -> None:
        """Back to `nrows` rows (a resume cuts the tables back to a checkpoint)."""
        self.nrows = nrows
        self._pending = {k: [(r, a) for r, a in v if r < nrows] for k, v in self._pending.items()}
        for name in self.names:
            ds = self.group[name]
            if ds.shape[0] > nrows:
                ds.resize((nrows, *ds.shape[1:]))

    def flush(self) -> None:
        self.write(self.take())

    def take(self) -> tuple:
        """The rows so far and the buffered values, for `write` (maybe in another thread)."""
        taken = (self.nrows, set(self.names), self._pending)
        self._pending = {}
        return taken

    def write(self, taken: tuple) -> None:
        nrows, names, pending = taken
        for name in names:
            ds = self.group[name]
            if ds.shape[0] < nrows:
                ds.resize((nrows, *ds.shape[1:]))
        for name, rows in pending.items():
            ds = self.group[name]
            index = np.array([r for r, _ in rows])
            data = np.stack([a for _, a in rows])
            if index[-1] - index[0] == len(index) - 1:  # consecutive rows: one write
                ds[index[0]:index[-1] + 1] = data
            else:
                for i, r in enumerate(index):
                    ds[r] = data[i]


def write_scan_outputs(group: h5py.Group, nodes: list[Any]) -> None:
    """What nodes give once per scan (`scan_outputs()`: name -> (array, attrs))."""
    for node in nodes:
        for name, (arr, attrs) in getattr(node, "scan_outputs", dict)().items():
            if name in group:
                del group[name]
            group.create_dataset(name, data=arr).attrs.update(attrs)
