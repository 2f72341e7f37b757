"""SIMPLON stream v2: one CBOR message per ZeroMQ message (`start`, `image`, `end`).

The DECTRIS field lists (dectris/documentation, stream_v2/README.md) and the
tags they use:

* 55799 self-described CBOR around the top-level map (taken if present);
* RFC 8746 typed arrays, tags 64..87: u8, u16, u32, i16, i32, f32, f64 in
  either byte order (big-endian ones are byte-swapped when uncompressed and
  refused when compressed); a multi-dimensional array is tag 40 around
  [[rows, cols], typed array] (row-major: dims[0] is the slow axis, y);
  column-major (1040) is refused;
* 56500, the DECTRIS compression tag, [algorithm, elem_size, bytes] standing
  for the byte string of a typed array: "bslz4" (bitshuffle + LZ4,
  elem_size = bitshuffle's element size) and "lz4", both in the HDF5 filter
  framing, so a frame goes on to our workers still compressed;
* rationals are [numerator, denominator]; `series_date` a date/time (tag 0).

Image `data` maps channel names (thresholds) to frames. A start's
`flatfield` and `pixel_mask` map channel names to arrays, decoded here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from stream.core.encoded import EncodedFrame
from stream.sources.dectris.common import (
    DetectorError,
    DetectorMessage,
    SeriesEnd,
    SeriesImage,
    SeriesStart,
    compressed_frame,
    frame_dtype,
    frame_shape,
    raw_frame,
    safe_meta,
    uint,
)
from stream.sources.dectris.maps import decompress_map

SELF_DESCRIBE = b"\xd9\xd9\xf7"
MULTI_DIM, MULTI_DIM_COLUMN_MAJOR, COMPRESSION = 40, 1040, 56500
# RFC 8746 section 2.1, tag 0b010fsell: f float, s signed, e little endian, ll the size
# (68 is uint8 "clamped"; 83 and 87, 128-bit floats, are not supported)
TYPED_ARRAYS = {64: "u1", 68: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 69: "<u2", 70: "<u4",
                71: "<u8", 72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4",
                79: "<i8", 80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8"}
START_ARRAYS = ("flatfield", "pixel_mask", "countrate_correction_lookup_table")
START_IDS = ("type", "series_id", "series_unique_id", "channels")


@dataclass(frozen=True)
class Compressed:
    """Tag 56500: a compressed byte string."""

    algorithm: Any
    elem_size: Any
    data: Any


@dataclass(frozen=True)
class TypedArray:
    """An RFC 8746 typed array: element type and its bytes (maybe compressed)."""

    tag: int
    payload: Any


@dataclass(frozen=True)
class MultiDim:
    """An RFC 8746 multi-dimensional array: dims and a typed array."""

    dims: Any
    array: Any
    column_major: bool = False


def _tag_hook(*args: Any) -> Any:
    """cbor2's tag hook (its argument order changed between versions: find the tag).
    Never raises: what does not fit is checked where it is used."""
    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    value = tag.value
    if tag.tag == COMPRESSION and isinstance(value, Sequence) and len(value) == 3:
        return Compressed(*value)
    if 64 <= tag.tag <= 87:
        return TypedArray(tag.tag, value)
    if tag.tag in (MULTI_DIM, MULTI_DIM_COLUMN_MAJOR) and isinstance(value, Sequence) \
            and len(value) == 2:
        return MultiDim(value[0], value[1], tag.tag == MULTI_DIM_COLUMN_MAJOR)
    return tag


def decode_v2(parts: list) -> DetectorMessage:
    """One stream v2 message (a single ZeroMQ part) or DetectorError saying why."""
    if len(parts) != 1:
        raise DetectorError(f"stream v2 messages are single-part, got {len(parts)} parts")
    buf = memoryview(getattr(parts[0], "buffer", parts[0])).cast("B")
    try:
        msg = cbor2.loads(buf, tag_hook=_tag_hook)
    except Exception as exc:  # cbor2 raises several types for bad input
        hint = "" if bytes(buf[:3]) == SELF_DESCRIBE else " (no self-describe tag 55799)"
        raise DetectorError(f"not CBOR{hint}: {exc}") from None
    if not isinstance(msg, Mapping):
        raise DetectorError(f"top level is a {type(msg).__name__}, not a map")
    kind = msg.get("type")
    series = uint(msg.get("series_id"), f"{kind}: series_id")
    unique = msg.get("series_unique_id")
    if unique is not None and not isinstance(unique, str):
        raise DetectorError(f"{kind}: series_unique_id must be a text string")
    if kind == "start":
        return _start(msg, series, unique)
    if kind == "image":
        return _image(msg, series, unique)
    if kind == "end":
        return SeriesEnd(series, unique)
    raise DetectorError(f"unknown message type {kind!r}")


def _start(msg: Mapping, series: int, unique: str | None) -> SeriesStart:
    channels = msg.get("channels", [])
    if not isinstance(channels, Sequence) or not all(isinstance(c, str) for c in channels):
        raise DetectorError("start: channels must be a list of names")
    shape = None
    if "image_size_x" in msg and "image_size_y" in msg:
        shape = frame_shape([msg["image_size_y"], msg["image_size_x"]], "start: image size")
    npoints = msg.get("number_of_images")
    npoints = None if npoints is None else uint(npoints, "start: number_of_images")
    maps: dict[str, dict[str, np.ndarray]] = {}
    for key in ("flatfield", "pixel_mask"):
        value = msg.get(key) or {}
        if not isinstance(value, Mapping):
            raise DetectorError(f"start: {key} must map channel names to arrays")
        maps[key] = {str(ch): _array(arr, f"start: {key}[{ch!r}]", decompress=True)
                     for ch, arr in value.items()}
    meta = {k: safe_meta(v) for k, v in msg.items() if k not in START_ARRAYS + START_IDS}
    applied = bool(msg.get("flatfield_enabled", False))
    meta.update(stream="v2", flatfield_applied=applied,
                pixel_mask_applied=bool(msg.get("pixel_mask_enabled", False)))
    return SeriesStart(series, unique, list(channels), shape, None, npoints,
                       maps["flatfield"], maps["pixel_mask"], applied, meta)


def _image(msg: Mapping, series: int, unique: str | None) -> SeriesImage:
    image_id = uint(msg.get("image_id"), "image: image_id")
    data = msg.get("data")
    if not isinstance(data, Mapping) or not data:
        raise DetectorError(f"image {image_id}: data must map channel names to arrays")
    frames = {str(ch): _array(arr, f"image {image_id}: data[{ch!r}]")
              for ch, arr in data.items()}
    times = {k: t for k in ("start_time", "stop_time", "real_time")
             if (t := _rational(msg.get(k))) is not None}
    when = math.nan
    date = msg.get("series_date")
    if hasattr(date, "timestamp") and "start_time" in times:
        when = date.timestamp() + times["start_time"]
    return SeriesImage(series, image_id, frames, unique, when, times)


def _rational(value: Any) -> float | None:
    """[numerator, denominator] as seconds; None if absent or not a rational."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != 2:
        return None
    num, den = value
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value) or den <= 0:
        return None
    return num / den


def _array(value: Any, where: str, decompress: bool = False) -> np.ndarray | EncodedFrame:
    """A 2D multi-dimensional typed array: a raw frame, a compressed frame, or (with
    `decompress`, for the start's maps) always a decoded array."""
    if not isinstance(value, MultiDim):
        raise DetectorError(f"{where}: not a multi-dimensional array (tag 40)")
    if value.column_major:
        raise DetectorError(f"{where}: column-major arrays (tag 1040) are not supported")
    shape = frame_shape(value.dims, where)
    typed = value.array
    if not isinstance(typed, TypedArray):
        raise DetectorError(f"{where}: elements are not a typed array")
    if typed.tag not in TYPED_ARRAYS:
        raise DetectorError(f"{where}: typed array tag {typed.tag} is not supported")
    dtype = np.dtype(TYPED_ARRAYS[typed.tag])
    frame_dtype(dtype, where)
    payload = typed.payload
    if isinstance(payload, bytes | bytearray | memoryview):
        return raw_frame(payload, shape, dtype, where)
    if not isinstance(payload, Compressed):
        raise DetectorError(f"{where}: typed array holds neither bytes nor tag 56500")
    if payload.algorithm not in ("bslz4", "lz4") or \
            not isinstance(payload.data, bytes | bytearray | memoryview):
        raise DetectorError(f"{where}: compression {payload.algorithm!r} is not supported "
                            f"(bslz4, lz4)")
    elem = payload.elem_size if payload.algorithm == "bslz4" else dtype.itemsize
    if isinstance(elem, bool) or not isinstance(elem, int):
        raise DetectorError(f"{where}: element size {elem!r} is not an integer")
    frame = compressed_frame(payload.algorithm, payload.data, shape, dtype, elem, where)
    return decompress_map(frame, where) if decompress else frame
