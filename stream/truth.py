"""Compare found cliques with a simulator's truth table (known-answer checks).

A true spot is *found* when exactly one clique has its centroid within
`tol_px` pixels (row and column) and `tol_points` points of the truth, and no
other clique lies inside the spot's footprint (3 sigma + 1 in each
direction), so a spot split in two does not count.
"""

from __future__ import annotations

import numpy as np


def match_truth(cliques: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                tol_px: float = 1.0, tol_points: float = 0.5) -> dict[str, np.ndarray]:
    """Per true spot: cliques within tolerance, cliques in the footprint, found flag."""
    s, f, p = (np.asarray(cliques[k], float)[None, :] for k in ("s_raw", "f_raw", "point"))
    ts, tf, tp = (np.asarray(truth[k], float)[:, None] for k in ("s", "f", "point"))
    ds, df, dp = np.abs(s - ts), np.abs(f - tf), np.abs(p - tp)
    near = (ds <= tol_px) & (df <= tol_px) & (dp <= tol_points)
    box = ((ds <= 3 * truth["sigma_s"][:, None] + 1) & (df <= 3 * truth["sigma_f"][:, None] + 1)
           & (dp <= 3 * truth["sigma_w"][:, None] + 1))
    n_near = near.sum(axis=1)
    n_box = box.sum(axis=1)
    return {"n_near": n_near, "n_box": n_box, "found": (n_near == 1) & (n_box == 1)}


def score(cliques: dict[str, np.ndarray], truth: dict[str, np.ndarray],
          which: str = "clean") -> tuple[int, int]:
    """(found, total) over the true spots selected by a boolean truth column."""
    m = match_truth(cliques, truth)
    sel = np.asarray(truth[which], bool) if which else np.ones(len(truth["s"]), bool)
    return int(m["found"][sel].sum()), int(sel.sum())
