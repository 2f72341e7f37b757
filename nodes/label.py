"""Label the blobs of a sparse frame (2D peaks): 8-connected components, split at
their significant local maxima by default."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from stream.item import Item
from stream.scan import Scan

from .kernels.label import connected_pixels, remove_small, split_local_max

SPLITS = ("none", "local_max")


class Label:
    """8-connected components of the sparse pixels, small ones dropped; with
    `split = "local_max"` each one is then cut at its significant local maxima.

    The split is a watershed on the sparse pixels (`kernels.label.split_local_max`):
    each pixel goes to the maximum that steepest ascent over its 8 neighbours
    reaches, and two maxima stay apart only if the lower one stands above the
    highest saddle between them by at least max(prominence * peak,
    prominence_sigma * sqrt(peak + saddle)) (relative, and in Poisson sigmas
    of the difference of the two counts: intensities in counts, as after
    normalise) and has at least `min_pixels` pixels; otherwise they merge, so
    noise does not cut a spot. Labels are numbered in raster order of each
    part's first pixel. `split = "none"` is ImageD11's labelling.
    """

    kind: ClassVar[str] = "label"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, min_pixels: int = 1, split: str = "local_max",
                 prominence: float = 0.05, prominence_sigma: float = 1.0) -> None:
        if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
            raise ValueError(f"label: min_pixels must be an int >= 1, got {min_pixels!r}")
        if split not in SPLITS:
            raise ValueError(f"label: split must be one of {', '.join(SPLITS)}, got {split!r}")
        for name, value in (("prominence", prominence), ("prominence_sigma", prominence_sigma)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value < np.inf:
                raise ValueError(f"label: {name} must be a number >= 0, got {value!r}")
        self.min_pixels = min_pixels
        self.split = split
        self.prominence = float(prominence)
        self.prominence_sigma = float(prominence_sigma)

    def setup(self, scan: Scan) -> None:
        self.warmup()

    def warmup(self) -> None:
        """Compile the kernels on a three-pixel frame with two maxima."""
        row, col = np.zeros(3, np.uint16), np.array([0, 1, 2], np.uint16)
        labels = np.empty(3, np.int32)
        npeaks = connected_pixels(row, col, labels)
        remove_small(labels, npeaks, 1, np.empty(3, np.bool_))
        split_local_max(row, col, np.array([5, 1, 5], np.float32), labels, npeaks, 0.0, 0.0, 1)

    def process(self, item: Item) -> Item:
        sparse = item.sparse
        if sparse is None:
            raise ValueError(f"label: point {item.point_id} has no sparse frame "
                             "(put a threshold node before label)")
        labels = np.empty(sparse.nnz, np.int32)
        npeaks = connected_pixels(sparse.row, sparse.col, labels)
        if self.min_pixels > 1 and npeaks:
            keep = np.empty(sparse.nnz, np.bool_)
            npeaks = remove_small(labels, npeaks, self.min_pixels, keep)
            if not keep.all():
                sparse = sparse.take(keep)
                labels = labels[keep]
        if self.split == "local_max" and npeaks:
            npeaks = split_local_max(sparse.row, sparse.col, sparse.intensity, labels, npeaks,
                                     self.prominence, self.prominence_sigma, self.min_pixels)
        item.sparse = dataclasses.replace(sparse, label=labels, npeaks=int(npeaks))
        return item
