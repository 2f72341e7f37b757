"""Trajectories: which scan points are neighbours, by index or by motor position.

The linker follows the trajectory, never the file order. It processes points
in `point_id` order and asks, by `point_id`:

* `links_before(j)`: the earlier points that point j links to, each with the
  link's kind: the fast motor's name along a sweep, the slow motor's name (or
  "pass") across rows, "wrap" across the 360 degree wrap, "turn" to an earlier
  turn; `neighbours_before(j)` is the same without the kinds;
* `last_neighbour(i)`: an upper bound on the largest point that may link back
  to i: for every j and every i in `neighbours_before(j)`,
  `last_neighbour(i) >= j`. The linker keeps i's frame in its frontier until
  then and closes i's cliques at that step, so the bound is kept tight;
* `observe(i, motors)`: the motor positions of point i, given right before the
  linker sees it (the collector calls it in `point_id` order; a missing or bad
  point with empty motors). It returns "" or why the point is *flagged*: a
  motor the rule reads (and the start message announced) is missing or not finite. A
  flagged point has no neighbours, its last neighbour is itself and it is
  nobody's neighbour: it is never linked and nothing merges across it, which
  is also how a gap (a missing point) breaks links. A rule with a tolerance
  links only points whose positions are known and within it;
* `period`: motors whose values are angles modulo a period, {"omega": 360.0}
  when the scan wraps. A clique's centroid in such a motor is reported as the
  intensity-weighted circular mean in [0, period) (`circular_centroid`).

Kinds and the keys of the start message's `trajectory` map (`npoints` is the
start message's; every key but `kind` is optional unless marked):

    sweep       {"kind": "sweep", "fast": "omega", "wrap": false,
                 "points_per_turn": n, "tolerance": t, "slow": name (recorded only)}
        step, continuous or variable-step sweep: j links j - 1. wrap: the
        points cover whole turns of points_per_turn (default npoints) points;
        the last point of a turn links the first of that turn ("wrap") and
        point j links j - points_per_turn ("turn": a multi-turn scan links
        the turns at the same angle).
    interlaced  {"kind": "interlaced", "fast": "omega", "iflip": false,
                 "points_per_pass": n, "offset": 0.5, "wrap": false, "tolerance": t}
        two passes over the same range offset by half a step: points 0..n-1
        the first pass, n..2n-1 the second (reversed if iflip); n defaults to
        npoints / 2. offset: the second pass lies half a step after (0.5) or
        before (-0.5) the first pass's points, along the first pass's
        direction. A point links the points next to it in omega, which are
        always of the other pass.
    grid        {"kind": "grid", "nfast": n (required), "fast": "omega",
                 "slow": "dty", "wrap": false, "tolerance": t, "shift": s}
    snake       {"kind": "snake", ... the same keys as grid, "slow": null}
        rows of nfast points, row-major in point_id; a grid's rows all run the
        same way, a snake's alternate. Within a row j links j - 1 (and the
        row's first point if wrap: each row is a turn); across rows j links
        the nearest point in fast position of the previous row: with no
        tolerance the one at the same fast index, otherwise the nearest by
        position among fast indices within +-shift (default 1) that lies
        within tolerance. A snake with no slow motor is back-and-forth
        passes over one range (links across rows are of kind "pass").
    free        {"kind": "free", "tolerance": {"omega": 0.4, "dty": 0.6}
                 (required), "period": {"omega": 360}, "window": w}
        neighbours by position, e.g. continuous rotation with sinusoidal dty:
        j links every earlier point within `window` points (required when
        npoints is not given) whose motors are all within their tolerances
        (circular for periodic motors): j - 1 along the scan (kind: the first
        motor), the others of earlier turns ("turn", or "position" without a
        period). Keep the fast tolerance below two steps, so that nothing
        links across a missing point.

`tolerance` for sweep, interlaced and the rasters is in fast-motor units and
applies to every link (a larger jump is no link, which suits variable steps).
Rules keep the positions of the points they observed (8 bytes per motor per
point). The classes are in `stream.neighbours`; `derive_trajectory(motors)`
(`stream.derive`) guesses the map from recorded positions.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from stream.core.derive import TURN, derive_trajectory
from stream.core.neighbours import Free, Grid, Interlaced, Raster, Snake, Sweep

__all__ = ["Trajectory", "Sweep", "Interlaced", "Raster", "Grid", "Snake", "Free",
           "TRAJECTORIES", "make_trajectory", "derive_trajectory", "circular_centroid", "TURN",
           "ROTATION_NAMES"]

# the names a rotation stage goes by, most likely first: ours, then Bliss's (a fly
# scan's *_center is the middle of each frame's rotation, the frame's omega)
ROTATION_NAMES = ("omega", "rot_center", "rot", "diffrz_center", "diffrz", "srot", "hrz",
                  "gonio_omega")


class Trajectory(Protocol):
    """Neighbour rule between scan points (see the module docstring)."""

    kind: ClassVar[str]
    period: dict[str, float]

    def observe(self, point_id: int, motors: dict[str, float]) -> str:
        """Record the positions of a point; "" or why it is flagged (never linked)."""
        ...

    def links_before(self, point_id: int) -> list[tuple[int, str]]:
        """Earlier points that `point_id` links to, with the kind of each link."""
        ...

    def neighbours_before(self, point_id: int) -> list[int]:
        """Earlier points that `point_id` links to."""
        ...

    def last_neighbour(self, point_id: int) -> int:
        """Largest point_id that may link back to `point_id` (itself if none)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The parameters, as stored in the output file."""
        ...


def circular_centroid(sum_cos: np.ndarray, sum_sin: np.ndarray, period: float) -> np.ndarray:
    """Intensity-weighted circular mean in [0, period) from sums of w cos and w sin
    of 2 pi x / period (additive, so a clique's are its members' sums)."""
    angle = np.arctan2(sum_sin, sum_cos) * (period / (2 * np.pi))
    return np.mod(angle, period)


TRAJECTORIES: dict[str, type] = {"sweep": Sweep, "interlaced": Interlaced, "grid": Grid,
                                 "snake": Snake, "free": Free}

# start-message keys of each kind, with their types (None: may be null)
_KEYS: dict[str, dict[str, tuple]] = {
    "sweep": {"fast": (str,), "slow": (str, type(None)), "wrap": (bool,),
              "points_per_turn": (int,), "tolerance": (int, float)},
    "interlaced": {"fast": (str,), "iflip": (bool,), "points_per_pass": (int,),
                   "wrap": (bool,), "offset": (int, float), "tolerance": (int, float)},
    "grid": {"nfast": (int,), "fast": (str,), "slow": (str, type(None)), "wrap": (bool,),
             "tolerance": (int, float), "shift": (int,)},
    "free": {"tolerance": (dict,), "period": (dict,), "window": (int,)},
}
_KEYS["snake"] = _KEYS["grid"]
_REQUIRED = {"grid": ("nfast",), "snake": ("nfast",), "free": ("tolerance",)}


def make_trajectory(spec: dict[str, Any], npoints: int | None,
                    motors: list[str] | None = None) -> Trajectory:
    """Build the trajectory named by a start message's `trajectory` map.

    `motors` are the motor names the start message announced (None: unknown);
    a bad map raises ValueError saying which key is wrong.
    """
    kind = spec.get("kind", "sweep")
    if kind not in TRAJECTORIES:
        raise ValueError(f"trajectory kind {kind!r} is not supported "
                         f"(supported: {', '.join(TRAJECTORIES)})")
    keys = _KEYS[kind]
    params = {k: v for k, v in spec.items() if k not in ("kind", "npoints")}
    for key, value in params.items():
        if key not in keys:
            raise ValueError(f"trajectory {kind}: unknown key {key!r} "
                             f"(known: {', '.join(keys)})")
        if isinstance(value, bool) and bool not in keys[key] or not isinstance(value, keys[key]):
            raise ValueError(f"trajectory {kind}: {key!r} must be "
                             f"{' or '.join(t.__name__ for t in keys[key])}, "
                             f"got {type(value).__name__}")
    for key in _REQUIRED.get(kind, ()):
        if key not in params:
            raise ValueError(f"trajectory {kind}: key {key!r} is required")
    if "tolerance" in params:
        tol = params["tolerance"]
        for name, t in (tol.items() if isinstance(tol, dict) else [("tolerance", tol)]):
            if isinstance(t, bool) or not isinstance(t, int | float) or not t >= 0:
                raise ValueError(f"trajectory {kind}: tolerance {name!r} must be a number "
                                 f">= 0, got {t!r}")
    for name, p in params.get("period", {}).items():
        if isinstance(p, bool) or not isinstance(p, int | float) or not p > 0:
            raise ValueError(f"trajectory free: period {name!r} must be a number > 0, got {p!r}")
    for key in ("points_per_turn", "points_per_pass", "window", "nfast"):
        if key in params and params[key] < 1:
            raise ValueError(f"trajectory {kind}: {key!r} must be >= 1, got {params[key]}")
    return TRAJECTORIES[kind](npoints, announced=None if motors is None else list(motors),
                              **params)
