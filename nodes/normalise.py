"""Scale a frame by reference / counter (monitor, srcur, ...)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from nodes.correct import nan_markers
from nodes.sparse import SPARSE_NORMALISED
from stream.core.item import Item
from stream.core.scan import Scan


class Normalise:
    """frame * float32(reference / counters[counter]); a bad counter is flagged, not applied."""

    kind: ClassVar[str] = "normalise"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, counter: str = "monitor", reference: float = 1.0) -> None:
        if not isinstance(counter, str) or not counter:
            raise ValueError(f"normalise: counter must be a counter name, got {counter!r}")
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError(f"normalise: reference must be positive and finite, got {reference!r}")
        self.counter = counter
        self.reference = float(reference)

    def setup(self, scan: Scan) -> None:
        pass

    def scan_warnings(self, scan: Scan) -> list[str]:
        """What the scan's start says this node will not do: a counter it does not list
        (a typo, or another beamline's name) leaves every point unscaled, each flagged.
        Nothing for a recording of pixels normalised already (`nodes.sparse`: the node
        is not run on them, which the sparse chain's note says)."""
        counters = scan.start.counters
        if self.counter in counters or scan.start.meta.get(SPARSE_NORMALISED):
            return []
        listed = ", ".join(repr(c) for c in counters) if counters else "none"
        return [f"normalise: counter {self.counter!r} is not among the scan's counters "
                f"({listed}): its points are flagged and not scaled unless they carry it"]

    def scale_for(self, item: Item) -> np.float32:
        """The float32 scale for this point; 1 (and a flag on the item) if it has none."""
        value = item.counters.get(self.counter)
        if value is None:
            item.flags.append(f"normalise: counter {self.counter!r} missing; not scaled")
            return np.float32(1)
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            item.flags.append(f"normalise: counter {self.counter!r} is {value!r}, "
                              "not positive and finite; not scaled")
            return np.float32(1)
        with np.errstate(over="ignore", under="ignore"):
            scale = np.float32(self.reference / value)
        if not (np.isfinite(scale) and scale > 0):
            item.flags.append(f"normalise: scale {self.reference!r} / {value!r} does not fit "
                              "float32; not scaled")
            return np.float32(1)
        return scale

    def process(self, item: Item) -> Item:
        scale = self.scale_for(item)
        item.scale *= float(scale)  # (integrate's Poisson errors are of the counts)
        if item.frame is not None:
            raw = item.frame
            item.frame = np.multiply(raw.astype(np.float32, copy=False), scale)
            nan_markers(raw, item.frame)  # a raw frame's gaps and bad pixels
        elif item.sparse is not None:
            intensity = np.multiply(item.sparse.intensity.astype(np.float32, copy=False), scale)
            item.sparse = dataclasses.replace(item.sparse, intensity=intensity)
        return item
