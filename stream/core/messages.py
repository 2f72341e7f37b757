"""Start / Point / End: the typed messages of a scan (PROTOCOL.md, version 1).

The types every layer shares; their wire encoding is `stream.wire.codec`. The
output file keeps the start message as JSON (`start_to_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from stream.core.encoded import COMPRESSED, EncodedFrame
from stream.core.item import SparseFrame

PROTOCOL_VERSION = 1
DTYPES = ("uint8", "uint16", "uint32", "int16", "int32", "float32", "float64")
ENCODINGS = ("raw", "sparse", *COMPRESSED)
KNOWN_ENCODINGS = ENCODINGS
TRAJECTORY_KINDS = ("sweep", "interlaced", "snake", "grid", "free")
# per-pixel maps a start message may carry for a detector, and their allowed dtypes
DETECTOR_MAPS = {"flatfield": ("float32", "float64"),
                 "pixel_mask": ("uint8", "uint16", "uint32", "int16", "int32")}
END_STATUS = ("success", "abort", "fail")


class MessageError(ValueError):
    """A message that does not follow PROTOCOL.md; the text says why."""


@dataclass(frozen=True)
class DetectorInfo:
    """Shape and dtype of one detector's frames, as announced in `start`.

    Optional per-pixel maps the detector itself provides (DECTRIS start
    messages), travelling as raw parts of the start message: `flatfield`, a
    multiplicative correction (corrected = raw * flatfield; a pixel whose
    factor is not positive and finite is excluded), and `pixel_mask`
    (nonzero = bad pixel). Both have the frames' shape; not compared by ==.
    """

    shape: tuple[int, int]
    dtype: str
    flatfield: np.ndarray | None = field(default=None, compare=False, repr=False)
    pixel_mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Start:
    """Opens a scan: detectors, motor and counter names, size, trajectory."""

    scan_id: str
    detectors: dict[str, DetectorInfo]
    motors: list[str] = field(default_factory=list)
    counters: list[str] = field(default_factory=list)
    npoints: int | None = None
    trajectory: dict[str, Any] = field(default_factory=lambda: {"kind": "sweep"})
    meta: dict[str, Any] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class FrameRef:
    """A frame stored in a file, read by peakstream itself (not decoded here)."""

    uri: str
    path: str | None = None
    index: int | None = None


@dataclass
class Point:
    """One scan point: motors, counters and one frame per detector.

    A frame is dense (ndarray), compressed (EncodedFrame, decoded by the
    chain), sparse (already thresholded: it goes through the nodes that act
    on pixels alone, `nodes.sparse`) or a reference to a file. `extra` keeps
    unknown header keys; `extra["error"]` (a string) marks a point whose
    frame could not be read: it is recorded as bad with that reason.
    """

    scan_id: str
    point_id: int
    time: float
    motors: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    frames: dict[str, np.ndarray | EncodedFrame | SparseFrame | FrameRef] = field(
        default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    """Closes a scan with its final status and its npoints: the start's (an abort's points
    that never came are missing), or for an open-ended scan the points it had."""

    scan_id: str
    status: str = "success"
    npoints: int | None = None
    reason: str = ""


Message = Start | Point | End


def start_to_json(start: Start) -> str:
    """The start message as the output file keeps it (JSON; a detector's own flatfield
    and mask are left out, only its shape and dtype are kept)."""
    d: dict[str, Any] = {f.name: getattr(start, f.name) for f in fields(start)}
    d["detectors"] = {k: {"shape": list(v.shape), "dtype": v.dtype}
                      for k, v in start.detectors.items()}
    return json.dumps(d, default=str)


def start_from_json(text: str) -> Start:
    """The Start `start_to_json` wrote (KeyError, TypeError, ValueError if it is not)."""
    d = json.loads(text)
    dets = {k: DetectorInfo(tuple(v["shape"]), v["dtype"]) for k, v in d["detectors"].items()}
    return Start(d["scan_id"], dets, list(d["motors"]), list(d["counters"]),
                 d.get("npoints"), dict(d.get("trajectory") or {"kind": "sweep"}),
                 dict(d.get("meta") or {}))
