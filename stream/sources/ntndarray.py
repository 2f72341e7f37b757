"""An NTNDArray update (areaDetector's PVA plugin, after its codec plugin) in our
terms: its frame (an array, or an EncodedFrame for lz4 / bslz4), its NDAttributes
that are numbers, its time stamp."""

from __future__ import annotations

import struct
import time
from typing import Any

import numpy as np

from stream.core.encoded import EncodedFrame

# areaDetector's NDDataType_t, as its codec plugin stores it in codec.parameters
ND_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "float32", "float64")


class FrameError(ValueError):
    """An NTNDArray update that is not a frame we can take; the text says why."""


def frame_of(value: Any) -> np.ndarray | EncodedFrame:
    """The frame of an NTNDArray Value: an array, or an EncodedFrame for lz4 / bslz4."""
    dims = [d.size for d in value.dimension]
    if len(dims) != 2:
        raise FrameError(f"frames are 2D (ColorMode mono), got dimensions {dims}")
    shape = (int(dims[1]), int(dims[0]))  # dimension[0] is the fastest: columns
    data = value.value
    if data is None:
        raise FrameError("the update carries no data")
    codec = value.codec.name or ""
    if codec == "":
        if data.size != shape[0] * shape[1]:
            raise FrameError(f"{data.size} elements for a {shape[0]}x{shape[1]} frame")
        return np.asarray(data).reshape(shape)
    if codec not in ("lz4", "bslz4"):
        raise FrameError(f"codec {codec!r} is not supported (none, lz4, bslz4)")
    code = value.codec.parameters
    if not isinstance(code, (int, np.integer)) or not 0 <= code < len(ND_TYPES):
        raise FrameError(f"codec {codec}: parameters {code!r} is not an NDDataType")
    dtype = np.dtype(ND_TYPES[code])
    body = np.asarray(data).view(np.uint8).tobytes()
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if codec == "bslz4":  # bshuf_compress_lz4 blocks: the HDF5 filter's body
        head = struct.pack(">QI", nbytes, 0)
    else:  # one LZ4 block of the whole frame, without a size: framed as one filter block
        head = struct.pack(">QI", nbytes, nbytes) + struct.pack(">I", len(body))
    try:
        return EncodedFrame.from_buffer(codec, shape, dtype, head + body)
    except ValueError as exc:
        raise FrameError(f"codec {codec}: {exc}") from None


def attributes(value: Any) -> dict[str, float]:
    """The NDAttributes of an update that are numbers."""
    out: dict[str, float] = {}
    for a in value.attribute:
        v = a.value
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[a.name] = float(v)
    return out


def stamp(value: Any) -> float:
    ts = value.dataTimeStamp
    t = ts.secondsPastEpoch + ts.nanoseconds * 1e-9
    return t if t > 0 else time.time()
