"""The rows of a scan's tables, written in one place.

The live collector (a point at a time), the block replay (a block of points
at a time) and relink (a whole file at a time) all append the same rows to
the same tables of a `ScanStore`; `RowWriter` is the one that knows what a
row of each table holds. Every method takes columns (sequences or arrays, one
value per row), so one point is a block of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stream.store.scanfile import ScanStore

POINT_STATUS = ("ok", "missing", "bad")
STATUS_CODE = {name: code for code, name in enumerate(POINT_STATUS)}

Column = Sequence[Any] | np.ndarray


class RowWriter:
    """Appends rows to the tables of one scan's store (points, links, sparse, peaks2d,
    overlaps, cliques); the store buffers them until its next checkpoint."""

    def __init__(self, store: ScanStore, motors: Sequence[str], counters: Sequence[str]):
        self.store = store
        self.motors = list(motors)
        self.counters = list(counters)

    def points(self, point_id: Column, time: Column, status: Column, flags: Column,
               motors: Mapping[str, Column], counters: Mapping[str, Column]) -> None:
        """Rows of the points table: `status` as codes (`STATUS_CODE`), `flags` as JSON
        text ("" for none); a motor or counter not given is NaN."""
        n = len(point_id)
        row: dict[str, Any] = {"point_id": point_id, "time": time, "status": status,
                               "flags": flags}
        for m in self.motors:
            row[f"motors/{m}"] = motors[m] if m in motors else np.full(n, np.nan)
        for c in self.counters:
            row[f"counters/{c}"] = counters[c] if c in counters else np.full(n, np.nan)
        self.store.points.append(row)

    def sparse(self, row: np.ndarray, col: np.ndarray, intensity: np.ndarray,
               label: np.ndarray, nnz: Column) -> None:
        """The labelled pixels of points, and their count per point."""
        self.store.sparse.append({"row": row, "col": col, "intensity": intensity,
                                  "label": label})
        self.store.nnz.append({"nnz": nnz})

    def no_pixels(self, npoints: int = 1) -> None:
        """Points without data (missing, bad): no pixels."""
        self.store.nnz.append({"nnz": [0] * npoints})

    def peaks(self, point_id: np.ndarray, peaks: Mapping[str, np.ndarray]) -> None:
        """2D peak rows (one `point_id` per peak), none in a clique yet."""
        n = len(point_id)
        if n:
            rows = dict(peaks)
            rows["point_id"] = point_id
            rows["clique_id"] = np.full(n, -1, np.int64)
            self.store.peaks.append(rows)

    def links(self, point_a: Column, point_b: Column, kind: Column) -> None:
        """Trajectory links used between points with data."""
        if len(point_a):
            self.store.links.append({"point_a": point_a, "point_b": point_b, "kind": kind})

    def link_result(self, result: Any) -> int:
        """A linker step's overlaps and closed cliques (`nodes.link.cliques.LinkResult`),
        their members' shares, and the clique_id of the closed cliques' 2D peaks; the
        number of cliques.

        The shares table maps (2D peak, clique) to the part of the peak's
        intensity that is the clique's: one row per member with share 1, several
        for a 2D peak whose pixels were divided between cliques (linker split
        "pixels"), so every pixel's intensity is counted exactly once. Rows go in
        clique order, then peak order (the same rows point by point or in
        blocks); peaks2d's clique_id is the clique with the largest share."""
        if len(result.overlaps.get("peak_a", ())):
            self.store.overlaps.append(result.overlaps)
        ncliques = len(result.cliques.get("clique_id", ()))
        if ncliques:
            self.store.cliques.append(result.cliques)
            m = result.members
            share = m.get("share", np.ones(len(m["peak_id"])))
            order = np.lexsort((m["peak_id"], m["clique_id"]))
            self.store.shares.append({"peak_id": m["peak_id"][order],
                                      "clique_id": m["clique_id"][order],
                                      "share": share[order]})
            self.store.peaks.assign("clique_id", *main_clique(m["peak_id"], m["clique_id"],
                                                             share))
        return ncliques

    def outputs(self, point_id: int, outputs: Mapping[str, np.ndarray]) -> None:
        """A point's named node outputs (an empty mapping for a point without); what does
        not fit its column becomes an event."""
        for problem in self.store.outputs.append(outputs):
            self.store.event("bad_output", problem, point_id)

    def flag_events(self, first: int, flags: Mapping[int, Sequence[str]],
                    time: np.ndarray) -> None:
        """An event per flag of each flagged point of a block (`flags[k]`: the k-th
        point's, in their order), as the collector records an item's flags."""
        for k in sorted(flags):
            for flag in flags[k]:
                self.store.event("flag", flag, first + k, float(time[k]))


def main_clique(peak_id: np.ndarray, clique_id: np.ndarray,
                share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct peak, the clique with the largest share of it (the first on a tie)."""
    peak_id = np.asarray(peak_id, np.int64)
    first = np.lexsort((-np.asarray(share), peak_id))
    if first.shape[0]:  # the first of each peak's run (np.r_ took ~4 us, this 1)
        ordered = peak_id[first]
        first = first[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    return peak_id[first], np.asarray(clique_id, np.int64)[first]
