"""Compiling the linker's kernels before the first real point: a two-point scan
with the pixels, with the label node's runs, and with both read-only (numba
compiles those apart), as they come from the worker wire; and the pixel
separation on two small touching spots."""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes.link.block import PeakBlock
from nodes.link.separate import MAX_VOXELS, Separator
from stream.core.item import PEAK_COLUMNS, SparseFrame
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan


def warm_linker(linker_class: Any) -> None:
    """Run `linker_class` (the Linker) through every path once."""
    one = np.ones(1)
    pixels = (np.zeros(1, np.uint16), np.zeros(1, np.uint16), np.ones(1, np.float32),
              np.ones(1, np.int32))
    runs = np.array([[0, 0, 0, 1, 0]], np.int32)  # as the label node gives them
    wire = tuple(_read_only(a) for a in (*pixels, runs))
    frames = {"point": SparseFrame((2, 2), *pixels, 1),
              "runs": SparseFrame((2, 2), *pixels, 1, runs),
              "wire": SparseFrame((2, 2), *wire[:4], 1),
              "wire runs": SparseFrame((2, 2), *wire[:4], 1, wire[4])}
    peaks = {k: one.astype(dt) for k, dt in PEAK_COLUMNS.items()}
    wire_peaks = {k: _read_only(v) for k, v in peaks.items()}
    for criterion, split, hows in (("any_pixel", "none", (*frames, "block")),
                                   ("distance", "none", ("point", "wire", "block")),
                                   ("any_pixel", "local_max", ("point", "wire", "block")),
                                   ("any_pixel", "pixels", ("point", "wire", "block"))):
        for how in hows:
            linker = linker_class(criterion=criterion, split=split)
            linker.setup(Scan.from_start(Start(
                "warmup", {"d": DetectorInfo((2, 2), "uint16")}, motors=["omega"],
                npoints=2)))
            for i in range(2):
                if how == "block":
                    linker.add_block(PeakBlock.single(i, frames["point"], peaks,
                                                      {"omega": float(i)}))
                else:
                    linker.add_point(i, frames[how], wire_peaks if "wire" in how
                                     else peaks, {"omega": float(i)})
            linker.finish()
    warm_separation()


def warm_separation() -> None:
    """The separation kernels on two touching spots (the pool's dtypes)."""
    from nodes.kernels.separate import separate_cliques

    z, r, c = (a.ravel() for a in np.meshgrid(np.arange(5), np.arange(9), np.arange(12),
                                               indexing="ij"))
    inten = (1000 * np.exp(-0.5 * ((z - 2.0) ** 2 + (r - 4.0) ** 2 + (c - 3.0) ** 2))
             + 500 * np.exp(-0.5 * ((z - 2.5) ** 2 + (r - 4.0) ** 2 + (c - 7.5) ** 2)))
    sep = Separator()
    separate_cliques(np.array([0, z.shape[0]], np.int64), z.astype(np.int64),
                     r.astype(np.int32), c.astype(np.int32), inten.astype(np.float32),
                     np.zeros(z.shape[0], np.int64), 1, *sep.smooth, sep.seed_fraction,
                     sep.merge_distance, sep.min_share, MAX_VOXELS, sep.add_sigma,
                     sep.bic_factor, sep.relative_noise)


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a
