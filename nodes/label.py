"""Label the 8-connected blobs of a sparse frame (2D peaks)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from stream.item import Item
from stream.scan import Scan

from .kernels.label import connected_pixels, remove_small


class Label:
    """8-connected components of the sparse pixels, numbered in raster order; small ones dropped."""

    kind: ClassVar[str] = "label"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, min_pixels: int = 1) -> None:
        if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
            raise ValueError(f"label: min_pixels must be an int >= 1, got {min_pixels!r}")
        self.min_pixels = min_pixels

    def setup(self, scan: Scan) -> None:
        self.warmup()

    def warmup(self) -> None:
        """Compile the kernels on a two-pixel frame."""
        row, col = np.zeros(2, np.uint16), np.array([0, 1], np.uint16)
        labels = np.empty(2, np.int32)
        npeaks = connected_pixels(row, col, labels)
        remove_small(labels, npeaks, 1, np.empty(2, np.bool_))

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
        item.sparse = dataclasses.replace(sparse, label=labels, npeaks=int(npeaks))
        return item
