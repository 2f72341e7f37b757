"""Linking criteria: which pairs of 2D peaks on neighbouring points join a clique.

A criterion looks at candidate pairs, one row per pair of peaks (a on the
earlier point, b on the later one), given as columns:

    npixels          shared pixels (0 if the blobs do not overlap)
    npx_a, npx_b     pixels of each blob
    s_a, f_a, s_b, f_b  intensity-weighted centroids (s = row, f = column)

and returns a boolean mask: keep the pair or not. Criteria combine by AND.
The candidates are the overlapping pairs when any criterion needs a shared
pixel (`any_pixel`, `fraction`), else (`distance` alone) every pair whose
centroids lie within the distance, overlapping or not. Everything here is
vectorised over pairs, so one call serves one frame pair or a whole scan.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nodes.kernels.overlap import pairs_within

PairColumns = dict[str, np.ndarray]


class AnyPixel:
    """Keep every pair that shares at least one pixel (ImageD11's rule)."""

    kind: ClassVar[str] = "any_pixel"
    needs_overlap: ClassVar[bool] = True

    def keep(self, pairs: PairColumns) -> np.ndarray:
        return pairs["npixels"] > 0


class Fraction:
    """Keep pairs whose shared pixels are >= `fraction` of the smaller blob."""

    kind: ClassVar[str] = "fraction"
    needs_overlap: ClassVar[bool] = True

    def __init__(self, fraction: float):
        self.fraction = float(fraction)

    def keep(self, pairs: PairColumns) -> np.ndarray:
        smaller = np.minimum(pairs["npx_a"], pairs["npx_b"]).astype(np.float64)
        return (pairs["npixels"] > 0) & (pairs["npixels"] >= self.fraction * smaller)


class Distance:
    """Keep pairs whose centroids are at most `distance` pixels apart."""

    kind: ClassVar[str] = "distance"
    needs_overlap: ClassVar[bool] = False

    def __init__(self, distance: float):
        self.distance = float(distance)

    def keep(self, pairs: PairColumns) -> np.ndarray:
        ds = pairs["s_a"] - pairs["s_b"]
        df = pairs["f_a"] - pairs["f_b"]
        return ds * ds + df * df <= self.distance * self.distance

    def candidates(self, s_a, f_a, s_b, f_b) -> tuple[np.ndarray, np.ndarray]:
        """Index pairs (a, b), 0-based, sorted, with centroids within the distance."""
        return pairs_within(np.asarray(s_a, np.float64), np.asarray(f_a, np.float64),
                            np.asarray(s_b, np.float64), np.asarray(f_b, np.float64),
                            self.distance)


CRITERIA: dict[str, type] = {"any_pixel": AnyPixel, "fraction": Fraction, "distance": Distance}


class Rule:
    """The criteria that must all hold for two 2D peaks to be linked."""

    def __init__(self, criterion: str | list[str] | tuple[str, ...] = "any_pixel", *,
                 fraction: float = 0.2, distance: float = 3.0):
        names = [criterion] if isinstance(criterion, str) else list(criterion)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"linker criterion must be a name or a list of names, "
                             f"got {criterion!r}")
        unknown = [n for n in names if n not in CRITERIA]
        if unknown:
            raise ValueError(f"linker criterion {unknown[0]!r} is not supported "
                             f"(choices: {', '.join(CRITERIA)})")
        if len(set(names)) != len(names):
            raise ValueError(f"linker criterion names a criterion twice: {names}")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
                or not 0.0 < fraction <= 1.0:
            raise ValueError(f"linker fraction must be in (0, 1], got {fraction!r}")
        if isinstance(distance, bool) or not isinstance(distance, int | float) \
                or not 0.0 <= distance < np.inf:
            raise ValueError(f"linker distance must be a number >= 0 (pixels), "
                             f"got {distance!r}")
        self.names = names
        self.fraction = float(fraction)
        self.distance = float(distance)
        made = {"any_pixel": AnyPixel, "fraction": lambda: Fraction(self.fraction),
                "distance": lambda: Distance(self.distance)}
        self.criteria = [made[n]() for n in names]
        self.needs_overlap = any(c.needs_overlap for c in self.criteria)

    def describe(self) -> str:
        parts = []
        for c in self.criteria:
            value = getattr(c, c.kind, None)
            parts.append(c.kind if value is None else f"{c.kind} {value:g}")
        return " and ".join(parts)

    def keep(self, pairs: PairColumns) -> np.ndarray:
        """Mask over candidate pairs: True where every criterion holds."""
        mask = np.ones(pairs["npixels"].shape[0], np.bool_)
        for c in self.criteria:
            mask &= c.keep(pairs)
        return mask

    def distance_candidates(self, s_a, f_a, s_b, f_b) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of a distance-only rule: pairs within the distance."""
        return Distance(self.distance).candidates(s_a, f_a, s_b, f_b)
