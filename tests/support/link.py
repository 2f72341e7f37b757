"""Synthetic linker input shared by the linker, criteria, split and worker tests:
frames of labelled blobs, toy trajectories, and running a `Linker` over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from nodes.link.linker import Linker, LinkResult
from stream.core.item import PEAK_COLUMNS, SparseFrame
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan, Sweep

SHAPE = (20, 24)
EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Grid:
    """dty x omega raster: i links to i - 1 in its row and i - ncol in the row before."""

    nrow: int
    ncol: int
    kind: ClassVar[str] = "grid"

    def neighbours_before(self, i: int) -> list[int]:
        return ([i - 1] if i % self.ncol else []) + ([i - self.ncol] if i >= self.ncol else [])

    def last_neighbour(self, i: int) -> int:
        if i // self.ncol < self.nrow - 1:
            return i + self.ncol
        return i + 1 if i % self.ncol < self.ncol - 1 else i

    def describe(self) -> dict:
        return {"kind": self.kind}


@dataclass(frozen=True)
class Wrap:
    """360 degree sweep: the last point also links to the first."""

    npoints: int
    kind: ClassVar[str] = "wrap"

    def neighbours_before(self, i: int) -> list[int]:
        return ([i - 1] if i else []) + ([0] if i == self.npoints - 1 and i > 1 else [])

    def last_neighbour(self, i: int) -> int:
        return self.npoints - 1 if i == 0 else min(i + 1, self.npoints - 1)

    def describe(self) -> dict:
        return {"kind": self.kind}


def make_scan(trajectory=None, npoints=None, motors=("omega", "dty")) -> Scan:
    start = Start("test", {"eiger": DetectorInfo(SHAPE, "uint16")}, motors=list(motors),
                  npoints=npoints)
    return Scan(start, trajectory if trajectory is not None else Sweep(npoints))


def labelled(mask: np.ndarray, image: np.ndarray):
    """A labelled SparseFrame and its 2D peak table from a boolean mask (8-connected)."""
    lab, npeaks = ndimage.label(mask, EIGHT)
    row, col = np.nonzero(lab)
    label = lab[row, col].astype(np.int32)
    inten = image[row, col].astype(np.float32)
    sparse = SparseFrame(mask.shape, row.astype(np.uint16), col.astype(np.uint16), inten,
                         label, npeaks)
    i, s, f, w = label - 1, row.astype(float), col.astype(float), inten.astype(float)

    def total(x):
        return np.bincount(i, weights=x, minlength=npeaks)

    peaks = {"npx": np.bincount(i, minlength=npeaks).astype(np.int32),
             "s_1": np.bincount(i, minlength=npeaks).astype(float), "s_I": total(w),
             "s_sI": total(s * w), "s_fI": total(f * w), "s_ssI": total(s * s * w),
             "s_ffI": total(f * f * w), "s_sfI": total(s * f * w)}
    peaks["sum_intensity"] = peaks["s_I"].copy()
    peaks["s_raw"] = peaks["s_sI"] / peaks["s_I"]
    peaks["f_raw"] = peaks["s_fI"] / peaks["s_I"]
    for name, x, fn in (("bb_s0", row, np.minimum), ("bb_s1", row, np.maximum),
                        ("bb_f0", col, np.minimum), ("bb_f1", col, np.maximum),
                        ("max_intensity", inten, np.maximum)):
        out = np.full(npeaks, x.max() if fn is np.minimum else 0, x.dtype) if npeaks else \
            np.empty(0, x.dtype)
        fn.at(out, i, x)
        peaks[name] = out
    return sparse, {k: np.asarray(peaks[k], dt) for k, dt in PEAK_COLUMNS.items()}


def random_stack(npoints: int, seed: int, shape=SHAPE, keep=0.15, sigma=(1.2, 1.2, 1.2)):
    """Frames of smoothed noise, cut so that blobs persist over a few points."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((npoints, *shape)), sigma)
    cut = np.quantile(noise, 1 - keep)
    image = rng.uniform(1, 100, (npoints, *shape))
    return [labelled(noise[p] > cut, image[p]) for p in range(npoints)]


def run(linker: Linker, scan: Scan, frames, missing=()) -> list[LinkResult]:
    linker.setup(scan)
    results = []
    for p, (sparse, peaks) in enumerate(frames):
        motors = {"omega": 0.25 * p, "dty": 1.0}
        if p in missing:
            results.append(linker.add_point(p, None, None, {}))
        else:
            results.append(linker.add_point(p, sparse, peaks, motors))
    results.append(linker.finish())
    return results


def cat(results, table: str) -> dict[str, np.ndarray]:
    return {k: np.concatenate([getattr(r, table)[k] for r in results])
            for k in getattr(results[0], table)}


def partition(members: dict[str, np.ndarray]) -> set[frozenset]:
    groups: dict[int, set] = {}
    for peak, clique in zip(members["peak_id"].tolist(), members["clique_id"].tolist(),
                            strict=True):
        groups.setdefault(clique, set()).add(peak)
    return {frozenset(g) for g in groups.values()}


def failing_fit_volume(npoints: int, shape: tuple[int, int]) -> np.ndarray:
    """(point, row, col) of 4 spots over a background of 2 (shape at least 40 x 40,
    npoints at least 14) for linker split "pixels": a 3D Gaussian (its fit holds), a
    spot on 2 points only (no width along the scan to fit: the fit fails), a spot on 1
    point (NaN by design, not a failure) and a blob of 4 pixels (too small to fit)."""
    z, s, f = np.meshgrid(np.arange(npoints), np.arange(shape[0]), np.arange(shape[1]),
                          indexing="ij")
    vol = 2.0 + 300.0 * np.exp(-0.5 * (((z - 7) / 1.1) ** 2 + ((s - 31) / 1.4) ** 2
                                       + ((f - 30) / 1.6) ** 2))
    disc = 300.0 * np.exp(-0.5 * (((s - 12) / 1.5) ** 2 + ((f - 10) / 1.5) ** 2))
    vol += np.where((z == 2) | (z == 3), disc, 0.0)  # 2 points
    vol += np.where(z == 12, disc, 0.0)  # 1 point
    vol[6:8, 3, 30:32] = 50.0  # 4 pixels on 2 points
    return vol
