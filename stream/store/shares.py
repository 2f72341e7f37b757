"""The linker's rows in a scan file: overlaps, cliques, and the shares table.

The shares table maps (2D peak, clique) to the part of the peak's intensity
that is the clique's: one row per member with share 1, several rows for a 2D
peak whose pixels were divided between cliques (linker split "pixels"), so
every pixel's intensity is counted exactly once. Rows are in clique order,
then peak order. The peaks2d table's clique_id is the clique with the
largest share of the peak.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def write_link(store: Any, result: Any) -> int:
    """The rows of one linker step (`nodes.link.cliques.LinkResult`) into a ScanStore;
    returns the cliques written. The one writer of the collector, block replay and
    relink."""
    if len(result.overlaps["peak_a"]):
        store.overlaps.append(result.overlaps)
    nc = len(result.cliques["clique_id"])
    if nc:
        store.cliques.append(result.cliques)
        m = result.members
        share = m.get("share", np.ones(len(m["peak_id"])))
        order = np.lexsort((m["peak_id"], m["clique_id"]))  # by clique: the same rows
        store.shares.append({"peak_id": m["peak_id"][order],  # point by point or in blocks
                             "clique_id": m["clique_id"][order], "share": share[order]})
        peak, clique = main_clique(m["peak_id"], m["clique_id"], share)
        store.peaks.assign("clique_id", peak, clique)
    return nc


def main_clique(peak_id: np.ndarray, clique_id: np.ndarray,
                share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct peak, the clique with the largest share of it (the first on a tie)."""
    peak_id = np.asarray(peak_id, np.int64)
    order = np.lexsort((-np.asarray(share), peak_id))
    first = order[np.r_[True, peak_id[order][1:] != peak_id[order][:-1]]] \
        if order.shape[0] else order
    return peak_id[first], np.asarray(clique_id, np.int64)[first]
