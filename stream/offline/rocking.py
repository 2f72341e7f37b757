"""Rocking curves: the intensity of one clique on each scan point it spans.

Per point with members of the clique: point_id, the point's motors (omega,
dty, ...) and the summed intensity of the clique's 2D peaks on that point
(with their number): each peak's share of it when its pixels were divided
between cliques (the file's shares table, linker split "pixels"). `plot`
draws it against each motor that moves (matplotlib, the optional extra
`plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stream.store.reader import load


def rocking_curve(path: str | Path, clique_id: int) -> dict[str, np.ndarray]:
    """Columns point_id, <motor>..., n2d, intensity: one row per point of the clique."""
    data = load(path)
    pk, cl = data["peaks2d"], data["cliques"]
    if not np.any(cl["clique_id"] == clique_id):
        n = cl["clique_id"].shape[0]
        raise ValueError(f"{path}: no clique {clique_id} (the file has cliques 0..{n - 1})"
                         if n else f"{path}: the file has no cliques")
    sh = data["shares"]
    if len(sh.get("peak_id", ())):
        sel = sh["clique_id"] == clique_id
        rows, share = np.asarray(sh["peak_id"][sel], np.int64), sh["share"][sel]
    else:  # a file from before the shares table: whole 2D peaks
        rows = np.flatnonzero(pk["clique_id"] == clique_id)
        share = np.ones(rows.shape[0])
    points, where = np.unique(pk["point_id"][rows], return_inverse=True)
    out: dict[str, np.ndarray] = {"point_id": points}
    pts = data["points"]
    row = np.searchsorted(pts["point_id"], points)
    for key in sorted(k for k in pts if k.startswith("motors/")):
        out[key[len("motors/"):]] = np.asarray(pts[key], np.float64)[row]
    out["n2d"] = np.bincount(where, minlength=points.shape[0])
    out["intensity"] = np.bincount(where, weights=pk["sum_intensity"][rows] * share,
                                   minlength=points.shape[0])
    return out


def format_curve(curve: dict[str, np.ndarray], clique_id: int) -> str:
    names = list(curve)
    lines = [f"clique {clique_id}: {curve['point_id'].shape[0]} points, intensity "
             f"{curve['intensity'].sum():.6g}",
             "  ".join(f"{n:>12}" for n in names)]
    for k in range(curve["point_id"].shape[0]):
        cells = []
        for n in names:
            v = curve[n][k]
            cells.append(f"{int(v):>12d}" if n in ("point_id", "n2d") else f"{v:>12.6g}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot(curve: dict[str, np.ndarray], clique_id: int, output: str | Path) -> None:
    """A PNG of the intensity against each motor that moves over the clique (or point_id)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the rocking-curve plot needs matplotlib: "
                          "pip install -e '.[plot]'") from None
    skip = ("point_id", "n2d", "intensity")
    axes_of: list[str] = [n for n in curve if n not in skip and _moves(curve[n])]
    axes_of = axes_of or ["point_id"]
    fig, axes = plt.subplots(1, len(axes_of), figsize=(4.5 * len(axes_of), 3.5), squeeze=False)
    for ax, name in zip(axes[0], axes_of, strict=True):
        ax.plot(curve[name], curve["intensity"], "o-")
        ax.set_xlabel(name)
        ax.set_ylabel("summed intensity")
        ax.set_title(f"clique {clique_id}")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)


def _moves(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.shape[0] > 1 and bool(finite.max() > finite.min())


def as_json(curve: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.tolist() for k, v in curve.items()}
