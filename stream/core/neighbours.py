"""Neighbour rules by kind: Sweep, Interlaced, Grid, Snake (rows), Free (by position).

The contract, the keys of each kind and the meaning of flags and periods are
in `stream.trajectory`; these classes implement `Trajectory`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from stream.core.derive import TURN

__all__ = ["Sweep", "Interlaced", "Raster", "Grid", "Snake", "Free"]


class _Rule:
    """Positions, flags and the bookkeeping every rule shares."""

    kind: ClassVar[str] = ""

    def __init__(self, npoints: int | None, reads: tuple[str, ...], announced: list[str] | None,
                 positional: tuple[str, ...], period: dict[str, float]):
        self.npoints = npoints
        self.reads = reads  # motors this rule reads; `positional` ones decide links
        self.period = dict(period)
        if announced is not None:
            absent = [m for m in positional if m not in announced]
            if absent:
                raise ValueError(f"{self.kind}: needs the positions of motor(s) "
                                 f"{', '.join(absent)}, which the start message does not "
                                 f"announce (motors: {', '.join(announced) or 'none'})")
        # a missing or NaN motor flags a point if the scan announced that motor
        self.required = positional if announced is None else tuple(
            m for m in reads if m in announced)
        self._pos = np.full((len(reads), 256), np.nan)
        self._flag = np.zeros(256, bool)

    # -------------------------------------------------------------- protocol

    def observe(self, point_id: int, motors: dict[str, float]) -> str:
        self._room(point_id + 1)
        bad = []
        for k, name in enumerate(self.reads):
            value = _number(motors.get(name))
            self._pos[k, point_id] = value
            if name in self.required and not math.isfinite(value):
                bad.append(f"{name} missing" if motors.get(name) is None
                           else f"{name} is {value:g}")
        self._flag[point_id] = bool(bad)
        return f"motor {', '.join(bad)}: not linked" if bad else ""

    def observe_missing(self, first: int, stop: int) -> None:
        """Points first..stop-1 have no data: as observe(p, {}) for each, in one step."""
        self._room(stop)
        self._pos[:, first:stop] = np.nan
        self._flag[first:stop] = bool(self.required)

    def _room(self, size: int) -> None:
        if size > self._flag.shape[0]:
            size = max(2 * self._flag.shape[0], size)
            pos = np.full((len(self.reads), size), np.nan)
            pos[:, :self._flag.shape[0]] = self._pos
            flag = np.zeros(size, bool)
            flag[:self._flag.shape[0]] = self._flag
            self._pos, self._flag = pos, flag

    def links_before(self, point_id: int) -> list[tuple[int, str]]:
        if self.flagged(point_id):
            return []
        out: dict[int, str] = {}
        for i, kind in self._links(point_id):
            if 0 <= i < point_id and i not in out and not self.flagged(i):
                out[i] = kind
        return list(out.items())

    def neighbours_before(self, point_id: int) -> list[int]:
        return [i for i, _ in self.links_before(point_id)]

    def last_neighbour(self, point_id: int) -> int:
        if self.flagged(point_id):
            return point_id
        later = [j for j in self._later(point_id)
                 if j > point_id and (self.npoints is None or j < self.npoints)]
        return max(later, default=point_id)

    def flagged(self, point_id: int) -> bool:
        return point_id < self._flag.shape[0] and bool(self._flag[point_id])

    # ----------------------------------------------------------- for rules

    def _links(self, j: int) -> list[tuple[int, str]]:
        raise NotImplementedError

    def _later(self, i: int) -> list[int]:
        raise NotImplementedError

    def _position(self, k: int, i: int) -> float:
        return float(self._pos[k, i]) if i < self._flag.shape[0] else math.nan

    def _distance(self, k: int, i: int, j: int) -> float:
        """|x_i - x_j| of the k-th motor read (circular if periodic); NaN if unknown."""
        d = abs(self._position(k, i) - self._position(k, j))
        p = self.period.get(self.reads[k])
        if p is not None and math.isfinite(d):
            d = d % p
            d = min(d, p - d)
        return d


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class _FastRule(_Rule):
    """A rule along one fast motor, with an optional tolerance on its steps."""

    def __init__(self, npoints, fast, tolerance, announced, wrap, extra=()):
        self.fast = fast
        self.tolerance = tolerance
        self.wrap = wrap
        super().__init__(npoints, (fast, *extra), announced,
                         (fast,) if tolerance is not None else (), {fast: TURN} if wrap else {})

    def _near(self, i: int, j: int) -> bool:
        return self.tolerance is None or self._distance(0, i, j) <= self.tolerance

    def _base(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "fast": self.fast}
        if self.npoints is not None:
            d["npoints"] = self.npoints
        if self.wrap:
            d["wrap"] = True
        if self.tolerance is not None:
            d["tolerance"] = self.tolerance
        return d


class Sweep(_FastRule):
    """A step, continuous or variable-step sweep, optionally wrapping over whole turns."""

    kind: ClassVar[str] = "sweep"

    def __init__(self, npoints: int | None = None, *, fast: str = "omega", wrap: bool = False,
                 points_per_turn: int | None = None, tolerance: float | None = None,
                 slow: str | None = None, announced: list[str] | None = None):
        super().__init__(npoints, fast, tolerance, announced, wrap)
        self.slow = slow  # recorded only: an outer loop a sweep belongs to
        self.points_per_turn = points_per_turn
        if wrap:
            self.points_per_turn = points_per_turn or npoints
            if not self.points_per_turn:
                raise ValueError("sweep: wrap needs points_per_turn (or npoints)")

    def _links(self, j: int) -> list[tuple[int, str]]:
        out = [(j - 1, self.fast)] if self._near(j - 1, j) else []
        if self.wrap:
            p = self.points_per_turn
            if j % p == p - 1 and p > 2 and self._near(j - p + 1, j):
                out.append((j - p + 1, "wrap"))
            if j >= p and self._near(j - p, j):
                out.append((j - p, "turn"))
        return out

    def _later(self, i: int) -> list[int]:
        out = [i + 1]
        if self.wrap:
            p = self.points_per_turn
            if i % p == 0 and p > 2:
                out.append(i + p - 1)
            out.append(i + p)
        return out

    def describe(self) -> dict[str, Any]:
        d = self._base()
        if self.wrap:
            d["points_per_turn"] = self.points_per_turn
        if self.slow is not None:
            d["slow"] = self.slow
        return d


class Interlaced(_FastRule):
    """Two passes over one range, the second offset by half a step (reversed if iflip).

    `offset` is where the second pass lies, in steps along the direction the first
    pass runs: +0.5 (its k-th point, in the first pass's order, half a step past the
    first pass's k-th) or -0.5 (half a step before it)."""

    kind: ClassVar[str] = "interlaced"

    def __init__(self, npoints: int | None = None, *, fast: str = "omega", iflip: bool = False,
                 points_per_pass: int | None = None, wrap: bool = False,
                 offset: float = 0.5, tolerance: float | None = None,
                 announced: list[str] | None = None):
        super().__init__(npoints, fast, tolerance, announced, wrap)
        if points_per_pass is None:
            if npoints is None or npoints % 2:
                raise ValueError(f"interlaced: points_per_pass is needed when npoints "
                                 f"({npoints}) is not an even number")
            points_per_pass = npoints // 2
        if offset not in (0.5, -0.5):
            raise ValueError(f"interlaced: offset must be 0.5 or -0.5 (half a step after or "
                             f"before the first pass's points), got {offset!r}")
        self.iflip = iflip
        self.offset = float(offset)
        self.n = points_per_pass
        # slots 0..2n-1 in the first pass's direction: its points on one parity, the
        # second pass's on the other (after them if offset > 0, before them if < 0)
        self._first_odd = int(offset < 0)

    def _slot(self, j: int) -> int | None:
        """Place of point j in omega order (0..2n-1), None past the second pass."""
        n = self.n
        if j < n:
            return 2 * j + self._first_odd
        if j < 2 * n:
            return 2 * (2 * n - 1 - j if self.iflip else j - n) + 1 - self._first_odd
        return None

    def _point(self, q: int) -> int | None:
        n = self.n
        if self.wrap:
            q %= 2 * n
        if not 0 <= q < 2 * n:
            return None
        k = q // 2
        if q % 2 == self._first_odd:
            return k
        return 2 * n - 1 - k if self.iflip else n + k

    def _around(self, j: int) -> list[int]:
        q = self._slot(j)
        if q is None:
            return []
        return [p for p in (self._point(q - 1), self._point(q + 1)) if p is not None]

    def _links(self, j: int) -> list[tuple[int, str]]:
        return [(i, self.fast) for i in self._around(j) if i < j and self._near(i, j)]

    def _later(self, i: int) -> list[int]:
        return self._around(i)

    def describe(self) -> dict[str, Any]:
        return {**self._base(), "iflip": self.iflip, "offset": self.offset,
                "points_per_pass": self.n}


class Raster(_FastRule):
    """Rows of nfast points (a dty x omega grid, or back-and-forth passes)."""

    kind: ClassVar[str] = "grid"
    snake: ClassVar[bool] = False

    def __init__(self, npoints: int | None = None, *, nfast: int, fast: str = "omega",
                 slow: str | None = "dty", wrap: bool = False, tolerance: float | None = None,
                 shift: int | None = None, announced: list[str] | None = None):
        if nfast < 1:
            raise ValueError(f"{self.kind}: nfast must be >= 1, got {nfast}")
        extra = (slow,) if slow is not None and slow != fast else ()
        super().__init__(npoints, fast, tolerance, announced, wrap, extra)
        self.nfast = nfast
        self.slow = slow
        self.shift = (1 if tolerance is not None else 0) if shift is None else shift
        if self.shift < 0:
            raise ValueError(f"{self.kind}: shift must be >= 0, got {self.shift}")

    def _fast_index(self, j: int) -> tuple[int, int]:
        r, t = divmod(j, self.nfast)
        return r, (self.nfast - 1 - t if self.snake and r % 2 else t)

    def _point(self, r: int, f: int) -> int:
        return r * self.nfast + (self.nfast - 1 - f if self.snake and r % 2 else f)

    def _across(self, f: int) -> list[int]:
        """Fast indices of the other row a point at fast index f may link to."""
        fs = range(f - self.shift, f + self.shift + 1)
        if self.wrap:
            return sorted({g % self.nfast for g in fs}, key=lambda g: (abs(g - f), g))
        return sorted((g for g in fs if 0 <= g < self.nfast), key=lambda g: (abs(g - f), g))

    def _links(self, j: int) -> list[tuple[int, str]]:
        r, t = divmod(j, self.nfast)
        out = []
        if t >= 1 and self._near(j - 1, j):
            out.append((j - 1, self.fast))
        if self.wrap and t == self.nfast - 1 and self.nfast > 2 and self._near(j - t, j):
            out.append((j - t, "wrap"))
        if r >= 1:
            f = self._fast_index(j)[1]
            cands = [self._point(r - 1, g) for g in self._across(f)]
            cands = [c for c in cands if not self.flagged(c)]
            if self.tolerance is None:
                cands = cands[:1] if cands and cands[0] == self._point(r - 1, f) else []
            else:
                dist = [(self._distance(0, c, j), k) for k, c in enumerate(cands)]
                dist = [(d, k) for d, k in dist if d <= self.tolerance]
                cands = [cands[min(dist)[1]]] if dist else []
            out.extend((c, self.slow or "pass") for c in cands)
        return out

    def _later(self, i: int) -> list[int]:
        r, t = divmod(i, self.nfast)
        out = [i + 1] if t < self.nfast - 1 else []
        if self.wrap and t == 0:
            out.append(i + self.nfast - 1)
        f = self._fast_index(i)[1]
        out.extend(self._point(r + 1, g) for g in self._across(f))
        return out

    def describe(self) -> dict[str, Any]:
        return {**self._base(), "nfast": self.nfast, "slow": self.slow, "shift": self.shift}


class Grid(Raster):
    """Rows that all run the same way (a sweep per dty row, or a dty scan per omega)."""

    kind: ClassVar[str] = "grid"
    snake: ClassVar[bool] = False


class Snake(Raster):
    """Rows that alternate direction (back-and-forth)."""

    kind: ClassVar[str] = "snake"
    snake: ClassVar[bool] = True

    def __init__(self, npoints: int | None = None, *, nfast: int, fast: str = "omega",
                 slow: str | None = None, **kw: Any):
        super().__init__(npoints, nfast=nfast, fast=fast, slow=slow, **kw)


class Free(_Rule):
    """Neighbours by motor position within a window of points (e.g. sinusoidal dty)."""

    kind: ClassVar[str] = "free"

    def __init__(self, npoints: int | None = None, *, tolerance: dict[str, float],
                 period: dict[str, float] | None = None, window: int | None = None,
                 announced: list[str] | None = None):
        if not tolerance:
            raise ValueError("free: tolerance must name at least one motor")
        period = dict(period or {})
        unknown = sorted(set(period) - set(tolerance))
        if unknown:
            raise ValueError(f"free: period of {', '.join(unknown)}, which has no tolerance")
        super().__init__(npoints, tuple(tolerance), announced, tuple(tolerance), period)
        self.tolerance = dict(tolerance)
        self._tol = np.array([tolerance[m] for m in self.reads], float)[:, None]
        if window is None:
            if npoints is None:
                raise ValueError("free: window is needed when npoints is not given")
            window = max(npoints - 1, 1)
        if window < 1:
            raise ValueError(f"free: window must be >= 1, got {window}")
        self.window = window

    def _links(self, j: int) -> list[tuple[int, str]]:
        lo = max(j - self.window, 0)
        if j >= self._flag.shape[0] or j == lo:
            return []
        d = np.abs(self._pos[:, lo:j] - self._pos[:, j:j + 1])
        for k, name in enumerate(self.reads):
            p = self.period.get(name)
            if p is not None:
                d[k] = np.mod(d[k], p)
                d[k] = np.minimum(d[k], p - d[k])
        with np.errstate(invalid="ignore"):
            near = np.all(d <= self._tol, axis=0) & ~self._flag[lo:j]
        other = "turn" if self.reads[0] in self.period else "position"
        return [(int(i), self.reads[0] if i == j - 1 else other)
                for i in (lo + np.flatnonzero(near))[::-1]]

    def _later(self, i: int) -> list[int]:
        last = i + self.window
        return [last if self.npoints is None else min(last, self.npoints - 1)]

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "tolerance": dict(self.tolerance),
                             "window": self.window}
        if self.period:
            d["period"] = dict(self.period)
        if self.npoints is not None:
            d["npoints"] = self.npoints
        return d
