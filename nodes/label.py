"""Label the blobs of a sparse frame (2D peaks): 8-connected components, split at
their significant local maxima by default."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nodes.kernels.components import label_kept
from nodes.kernels.label import split_local_max
from stream.core.item import Item, SparseFrame
from stream.core.scan import Scan

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

    Without the split the frame also carries `runs` (`SparseFrame.runs`, from
    `kernels.components.label_kept`), the runs of its pixels that the properties
    node and the linker would otherwise find again (the worker wire carries
    them); a frame made from other pixels (`take`) has none, and they find them
    themselves, with the same results.
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
        """Compile the kernels this node uses on a three-pixel frame with two maxima."""
        row, col = np.zeros(3, np.uint16), np.array([0, 1, 2], np.uint16)
        intensity = np.array([5, 1, 5], np.float32)
        npeaks, _, _, _, _, labels, _ = label_kept(row, col, intensity, 1)
        if self.split == "local_max":
            split_local_max(row, col, intensity, labels, npeaks, 0.0, 0.0, 1)

    def process(self, item: Item) -> Item:
        sparse = item.sparse
        if sparse is None:
            raise ValueError(f"label: point {item.point_id} has no sparse frame "
                             "(put a threshold node before label)")
        npeaks, kept, row, col, intensity, labels, runs = label_kept(
            sparse.row, sparse.col, sparse.intensity, self.min_pixels)
        if kept == sparse.nnz:  # else blobs under min_pixels were dropped
            row, col, intensity = sparse.row, sparse.col, sparse.intensity
        split = self.split == "local_max" and npeaks
        if split:
            npeaks = split_local_max(row, col, intensity, labels, npeaks, self.prominence,
                                     self.prominence_sigma, self.min_pixels)
        item.sparse = SparseFrame(sparse.shape, row, col, intensity, labels, int(npeaks),
                                  None if split else runs)  # for properties and the linker
        return item
