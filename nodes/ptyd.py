"""ptyd: a point's frame, scan position and weights for ptychography (ptypy's PtyScan).

Comes after `frame` (crop, centre, orientation, rebin) and before any node that
sparsifies the frame. Per point it puts two named outputs on the item:
`ptyd_data` (the frame as it is, N x M) and `ptyd_position` ([y, x] in metres:
the two motors named in `positions`, times `scale`). Once per scan it gives
`ptyd_weights` (1 where a pixel counts, 0 where `mask` is nonzero) and `meta()`,
ptypy's meta (energy in keV, distance in m, psize in m, center in pixels,
propagation, label). The file is `stream.store.ptyd`'s business, in chunks of
`min_frames` points.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np

from stream.core.item import Item
from stream.core.scan import Scan

PROPAGATION = ("farfield", "nearfield")


class Ptyd:
    """Frame, [y, x] position and weights per point, for a .ptyd file."""

    kind: ClassVar[str] = "ptyd"
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, positions: list[str], scale: float = 1e-6, energy: float,
                 distance: float, psize: float, center: list[float] | None = None,
                 propagation: str = "farfield", label: str = "", min_frames: int = 16,
                 mask: np.ndarray | None = None):
        if len(positions) != 2 or not all(isinstance(p, str) and p for p in positions):
            raise ValueError(f"positions must name two motors [y, x], got {positions!r}")
        for key, value in (("scale", scale), ("energy", energy), ("distance", distance),
                           ("psize", psize)):
            if isinstance(value, bool) or not (isinstance(value, (int, float))
                                               and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a number > 0, got {value!r}")
        if center is not None and (len(center) != 2 or
                                   not all(math.isfinite(float(c)) for c in center)):
            raise ValueError(f"center must be [row, col] in pixels, got {center!r}")
        if propagation not in PROPAGATION:
            raise ValueError(f"propagation must be one of {', '.join(PROPAGATION)}, "
                             f"got {propagation!r}")
        if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1:
            raise ValueError(f"min_frames must be an integer >= 1, got {min_frames!r}")
        self.positions, self.scale = list(positions), float(scale)
        self.energy, self.distance, self.psize = float(energy), float(distance), float(psize)
        self.center = None if center is None else [float(c) for c in center]
        self.propagation, self.label, self.min_frames = propagation, label, min_frames
        self.mask = None if mask is None else np.asarray(mask)
        self.shape: tuple[int, int] | None = None
        self.weights: np.ndarray | None = None

    @property
    def motors_needed(self) -> list[str]:
        """The motors every scan must have (the scan position)."""
        return list(self.positions)

    def setup(self, scan: Scan) -> None:
        missing = [m for m in self.positions if m not in scan.start.motors]
        if missing:
            raise ValueError(f"ptyd: motor(s) {', '.join(missing)} not among the scan's "
                             f"motors {scan.start.motors}")
        det = next(iter(scan.start.detectors.values()))
        self.shape = tuple(det.shape)
        if self.mask is not None and self.mask.shape != self.shape:
            raise ValueError(f"ptyd: mask shape {list(self.mask.shape)} is not the frame's "
                             f"{list(self.shape)}")
        good = np.ones(self.shape, np.float32) if self.mask is None else \
            (self.mask == 0).astype(np.float32)
        self.weights = good

    def process(self, item: Item) -> Item:
        """The frame and its position as named outputs (NaN for a motor not read)."""
        if item.frame is None:
            raise ValueError("ptyd needs the dense frame: put it before threshold")
        item.outputs["ptyd_data"] = np.asarray(item.frame)
        item.outputs["ptyd_position"] = np.array(
            [item.motors.get(m, np.nan) * self.scale for m in self.positions], np.float64)
        return item

    def meta(self) -> dict[str, Any]:
        """ptypy's meta for this scan's frames (num_frames is the writer's)."""
        shape = self.shape or (0, 0)
        center = self.center if self.center is not None else [shape[0] / 2, shape[1] / 2]
        return {"label": self.label, "shape": np.array(shape, np.int64),
                "psize": np.array([self.psize, self.psize]), "energy": self.energy,
                "center": np.array(center, np.float64), "distance": self.distance,
                "propagation": self.propagation}

    def scan_outputs(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        """The weights, with the meta, positions and chunk size as JSON in `ptyd`."""
        if self.weights is None:
            return {}
        meta = {k: v.tolist() if isinstance(v, np.ndarray) else v
                for k, v in self.meta().items()}
        text = json.dumps({"meta": meta, "positions": self.positions, "scale": self.scale,
                           "min_frames": self.min_frames})
        return {"ptyd_weights": (self.weights, {"ptyd": text})}
