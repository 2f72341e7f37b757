"""Compare found cliques with a simulator's truth table (known-answer checks).

`match_truth` works in point units (plain sweeps); `match_spots` in the
trajectory's terms (clique omega and dty), for every scan kind.

A true spot is *found* when exactly one clique has its centroid within
`tol_px` pixels (row and column) and `tol_points` points of the truth, and no
other clique lies inside the spot's footprint (3 sigma + 1 in each
direction), so a spot split in two does not count. A clique that matches
another true spot (within tolerance of it, not of this one) is that spot's,
not a fragment of this one: touching spots found apart both count.
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
    box &= ~_of_another(near)
    n_near = near.sum(axis=1)
    n_box = box.sum(axis=1)
    return {"n_near": n_near, "n_box": n_box, "found": (n_near == 1) & (n_box == 1)}


def _of_another(near: np.ndarray) -> np.ndarray:
    """(spot, clique): the clique is within tolerance of another true spot, not this one."""
    return ((near.sum(axis=0)[None, :] - near) > 0) & ~near


def score(cliques: dict[str, np.ndarray], truth: dict[str, np.ndarray],
          which: str = "clean") -> tuple[int, int]:
    """(found, total) over the true spots selected by a boolean truth column."""
    m = match_truth(cliques, truth)
    sel = np.asarray(truth[which], bool) if which else np.ones(len(truth["s"]), bool)
    return int(m["found"][sel].sum()), int(sel.sum())


# ------------------------------------------------ in the trajectory's terms


def match_spots(cliques: dict[str, np.ndarray], truth: dict[str, np.ndarray], *,
                omega: np.ndarray | None = None, period: float | None = None,
                tol_px: float = 1.0, tol_steps: float = 0.5,
                tol_dty: float = 0.5) -> dict[str, np.ndarray]:
    """Per true spot, matched by the clique columns s_raw, f_raw, omega and (for 2D
    truth, sigma_dty > 0) dty: cliques within tolerance, in the footprint, found,
    and the row of the (first) clique within tolerance (-1 if none).

    `omega` replaces the cliques' omega column (e.g. `wrapped_centroid`);
    `period` (360 for scans that wrap) makes omega differences circular.
    Tolerances: `tol_px` pixels, `tol_steps` omega steps (a spot's step is
    sigma_omega / sigma_w), `tol_dty` sigma_dty. The footprint is 3 sigma + 1
    pixel, 3 sigma + 1 step in omega and 3 sigma in dty; cliques that match
    another true spot do not count in it.
    """
    s, f = (np.asarray(cliques[k], float)[None, :] for k in ("s_raw", "f_raw"))
    w = np.asarray(cliques["omega"] if omega is None else omega, float)[None, :]
    ts, tf, tw = (np.asarray(truth[k], float)[:, None] for k in ("s", "f", "omega"))
    ds, df, dw = np.abs(s - ts), np.abs(f - tf), np.abs(w - tw)
    if period:
        dw = np.mod(dw, period)
        dw = np.minimum(dw, period - dw)
    sw = np.asarray(truth["sigma_omega"], float)[:, None]
    step = sw / np.asarray(truth["sigma_w"], float)[:, None]
    near = (ds <= tol_px) & (df <= tol_px) & (dw <= tol_steps * step)
    box = ((ds <= 3 * truth["sigma_s"][:, None] + 1) & (df <= 3 * truth["sigma_f"][:, None] + 1)
           & (dw <= 3 * sw + step))
    sy = np.asarray(truth.get("sigma_dty", np.zeros(len(truth["s"]))), float)[:, None]
    if "dty" in cliques and (sy > 0).any():
        dy = np.abs(np.asarray(cliques["dty"], float)[None, :]
                    - np.asarray(truth["dty"], float)[:, None])
        near &= dy <= tol_dty * sy
        box &= dy <= 3 * sy
    box &= ~_of_another(near)
    n_near, n_box = near.sum(axis=1), box.sum(axis=1)
    return {"n_near": n_near, "n_box": n_box, "found": (n_near == 1) & (n_box == 1),
            "clique": np.where(n_near > 0, np.argmax(near, axis=1), -1)}


def wrapped_centroid(tables: dict[str, dict[str, np.ndarray]], motor: str = "omega",
                     period: float = 360.0) -> np.ndarray:
    """Per clique (in the order of tables["cliques"]), the intensity-weighted circular
    mean of a periodic motor over its 2D peaks, in [0, period), from the tables of
    an output file (`stream.inspect.load`): how the clique column of a wrapping
    scan is defined, computed from the stored members."""
    from stream.core.trajectory import circular_centroid

    peaks, points = tables["peaks2d"], tables["points"]
    value = np.full(int(points["point_id"].max()) + 1, np.nan)
    value[points["point_id"]] = points[f"motors/{motor}"]
    angle = 2 * np.pi * value[peaks["point_id"]] / period
    ids = np.asarray(tables["cliques"]["clique_id"])
    size = int(max(ids.max(initial=-1), peaks["clique_id"].max(initial=-1))) + 1
    w = np.asarray(peaks["s_I"], float)
    sums = [np.bincount(peaks["clique_id"], weights=w * fn(angle), minlength=size)
            for fn in (np.cos, np.sin)]
    return circular_centroid(sums[0][ids], sums[1][ids], period)


def score_spots(cliques: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                which: str = "clean", **kw) -> tuple[int, int]:
    """(found, total) by `match_spots` over the spots selected by a truth column."""
    m = match_spots(cliques, truth, **kw)
    sel = np.asarray(truth[which], bool) if which else np.ones(len(truth["s"]), bool)
    return int(m["found"][sel].sum()), int(sel.sum())
