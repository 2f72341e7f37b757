"""The linker's output tables: overlaps, members, and the cliques made from the sums of
their members' columns.

The linker's forest (`nodes.forest`) sums per clique the additive columns
`ACC` of its 2D peaks, then s_I * point, then per motor s_I * value, or
s_I * cos and s_I * sin of 2 pi value / period for a motor the trajectory
declares periodic. `CliqueColumns` knows where each motor's sums are and
turns the sums of closed cliques into rows: intensity-weighted means of the
linear motors, the circular mean in [0, period) of a periodic one
(`circular_centroid`), so a clique across the wrap sits at its true angle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.core.item import MOMENT_COLUMNS, clique_columns
from stream.core.trajectory import circular_centroid

OVERLAP_COLUMNS = {"peak_a": np.int64, "peak_b": np.int64, "npixels": np.int32,
                   "score": np.float32}
# share: the part of the peak's intensity that is the clique's (1 unless a clique was
# separated at pixel level, `nodes.link.separate`); a peak may have several rows then
MEMBER_COLUMNS = {"peak_id": np.int64, "clique_id": np.int64, "share": np.float64}
# Additive columns summed over a clique's members
ACC = ("npx", "sum_intensity", *MOMENT_COLUMNS)
_S_I = ACC.index("s_I")
# clique_table: the columns copied (sum_intensity, the moments), then the intensity-
# weighted means (s_raw, f_raw, point, then the motors that are not periodic)
_COPY_COLS = np.array([ACC.index(k) for k in ("sum_intensity", *MOMENT_COLUMNS)], np.int64)
_NCOPY = _COPY_COLS.shape[0]


@dataclass
class LinkResult:
    """What one linker step produced: new overlaps, and the cliques it closed."""

    point_id: int  # the last point of the step; -1 for finish()
    peak_offset: int  # global id of the step's first 2D peak
    overlaps: dict[str, np.ndarray]  # OVERLAP_COLUMNS, point after point, each point's
    # neighbours in increasing order, each pair of frames by (peak_a, peak_b)
    cliques: dict[str, np.ndarray]  # one row per clique closed by this step
    members: dict[str, np.ndarray]  # MEMBER_COLUMNS of their members, sorted by peak_id
    # (then clique_id: a peak shared between separated cliques has a row for each)


def clique_dtypes(motors: list[str]) -> dict[str, Any]:
    """Columns of the cliques table, in order (`stream.core.item.clique_columns`)."""
    return {k: np.dtype(dt) for k, dt in clique_columns(motors).items()}


def empty_table(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.empty(0, dt) for k, dt in columns.items()}


class CliqueColumns:
    """A scan's motors in the forest's sums, and the clique rows made from them."""

    def __init__(self, motors: list[str], period: dict[str, float]):
        clash = set(motors) & set(clique_dtypes([]))
        if clash:
            raise ValueError(f"motor names {sorted(clash)} clash with clique columns")
        self.motors = list(motors)
        self.period = {m: float(period[m]) for m in self.motors if m in period}
        self.motor_col: dict[str, int] = {}  # each motor's first sum column
        col = len(ACC) + 1
        for m in self.motors:
            self.motor_col[m] = col
            col += 2 if m in self.period else 1
        self.nacc = col
        linear = [m for m in self.motors if m not in self.period]
        self.table_cols = (_S_I, _COPY_COLS, np.array(
            [ACC.index("s_sI"), ACC.index("s_fI"), len(ACC),
             *(self.motor_col[m] for m in linear)], np.int64))
        self._motor_row = [_NCOPY + 3 + linear.index(m) if m in linear else -1
                           for m in self.motors]
        self.dtypes = clique_dtypes(self.motors)

    def factors(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Per motor column, what s_I multiplies: the motor's value x, or cos and sin
        of 2 pi x / P for a periodic one (values: per peak, or one for all)."""
        k = next(iter(values.values())).shape[0] if values else 1
        factors = np.empty((k, self.nacc - len(ACC) - 1), np.float64)
        for name in self.motors:
            c = self.motor_col[name] - len(ACC) - 1
            period = self.period.get(name)
            if period is None:
                factors[:, c] = values[name]
            else:
                angle = (2 * np.pi / period) * values[name]
                factors[:, c] = np.cos(angle)
                factors[:, c + 1] = np.sin(angle)
        return factors

    def point_factors(self, motors: dict[str, float]) -> np.ndarray:
        """`factors` of one point's motor values (NaN for a motor it lacks)."""
        if self.period:
            return self.factors({m: np.array([float(motors.get(m, np.nan))])
                                 for m in self.motors})
        return np.array([[float(motors.get(m, np.nan)) for m in self.motors]])

    def tables_of(self, closed: list[tuple], first_id: int) -> tuple[dict, dict]:
        """`tables` of several closings, in order, numbered on from `first_id`."""
        parts = []
        for c in closed:
            parts.append(self.tables(c, first_id))
            first_id += parts[-1][0]["clique_id"].shape[0]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return empty_table(self.dtypes), empty_table(MEMBER_COLUMNS)
        return tuple({k: np.concatenate([p[i][k] for p in parts]) for k in parts[0][i]}
                     for i in (0, 1))

    def tables(self, closed: tuple, first_id: int) -> tuple[dict[str, np.ndarray],
                                                            dict[str, np.ndarray]]:
        """The cliques and members tables of `Forest.close`'s output, the cliques
        numbered from `first_id`."""
        n2d, table, npx, first, last, member_gid, member_clique, sums = closed[:8]
        share = closed[8] if len(closed) > 8 else np.ones(member_gid.shape[0])
        fit = closed[9] if len(closed) > 9 else np.full(n2d.shape[0], np.nan)
        nc = n2d.shape[0]
        if not nc:
            return empty_table(self.dtypes), empty_table(MEMBER_COLUMNS)
        cliques = {"clique_id": np.arange(first_id, first_id + nc, dtype=np.int64),
                   "n2d": n2d, "npx": npx, "sum_intensity": table[0],
                   "s_raw": table[_NCOPY], "f_raw": table[_NCOPY + 1]}
        for k, name in enumerate(MOMENT_COLUMNS):
            cliques[name] = table[1 + k]
        cliques["first_point"] = first
        cliques["last_point"] = last
        cliques["point"] = table[_NCOPY + 2]
        cliques["fit_intensity"] = fit
        for k, name in enumerate(self.motors):
            row = self._motor_row[k]
            if row >= 0:
                cliques[name] = table[row]
            else:
                c = self.motor_col[name]
                cliques[name] = circular_centroid(sums[:, c], sums[:, c + 1],
                                                  self.period[name])
        return cliques, {"peak_id": member_gid, "clique_id": member_clique + first_id,
                         "share": share}
