"""What both SIMPLON stream versions decode to, and the frame checks they share.

`SeriesStart`, `SeriesImage` and `SeriesEnd` are the detector's three messages
whatever the wire (v1 JSON multipart, v2 CBOR); `DetectorError` is a message
that cannot be used, with the reason. Frames are handed on as they came:
raw frames as (read-only) numpy views, bslz4 / lz4 frames still compressed
(`stream.encoded.EncodedFrame`), so that they are decoded in our workers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.core.encoded import EncodedFrame, EncodingError
from stream.core.messages import DTYPES

MAX_SIDE = 65535  # our protocol's frame sides are below 65536
META_TYPES = (str, int, float, bool)


class DetectorError(ValueError):
    """A detector message that cannot be used; the text says why."""


@dataclass
class SeriesStart:
    """A series was armed: its id, channels and what the header told of it.

    `shape` (rows, cols) and `dtype` are None when the header does not say
    (v1 header_detail none; v2 never gives the dtype): the first image does.
    `flatfield` / `pixel_mask` map channel names to arrays; `flatfield_applied`
    says whether the detector already applied its flatfield to the images.
    """

    series_id: int
    unique_id: str | None = None
    channels: list[str] = field(default_factory=lambda: [""])
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    npoints: int | None = None
    flatfield: dict[str, np.ndarray] = field(default_factory=dict)
    pixel_mask: dict[str, np.ndarray] = field(default_factory=dict)
    flatfield_applied: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SeriesImage:
    """One exposure: a frame per channel, its number and its times (s)."""

    series_id: int
    image_id: int
    frames: dict[str, np.ndarray | EncodedFrame]
    unique_id: str | None = None
    time: float = math.nan  # epoch seconds of the exposure start, if the detector says
    times: dict[str, float] = field(default_factory=dict)  # start_time, stop_time, real_time


@dataclass
class SeriesEnd:
    """The detector ended (or aborted) a series."""

    series_id: int
    unique_id: str | None = None


DetectorMessage = SeriesStart | SeriesImage | SeriesEnd


def uint(value: Any, where: str) -> int:
    """A non-negative integer field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DetectorError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def frame_shape(dims: Any, where: str) -> tuple[int, int]:
    """Rows, cols from a 2D shape (already in numpy order)."""
    if not isinstance(dims, Sequence) or isinstance(dims, str | bytes) or len(dims) != 2:
        raise DetectorError(f"{where}: shape must be two integers, got {dims!r}")
    rows, cols = (uint(d, f"{where}: shape") for d in dims)
    if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE):
        raise DetectorError(f"{where}: shape {[rows, cols]} is outside 1..{MAX_SIDE}")
    return rows, cols


def frame_dtype(dtype: np.dtype, where: str) -> np.dtype:
    """A pixel type our protocol carries (native byte order)."""
    native = dtype.newbyteorder("=")
    if native.name not in DTYPES:
        raise DetectorError(f"{where}: pixel type {dtype.str} is not one of {', '.join(DTYPES)}")
    return native


def raw_frame(buf: Any, shape: tuple[int, int], dtype: np.dtype, where: str) -> np.ndarray:
    """An uncompressed frame: a view of `buf` (little endian), or a byte-swapped copy."""
    mv = memoryview(buf).cast("B")
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if mv.nbytes != nbytes:
        raise DetectorError(f"{where}: {mv.nbytes} bytes of pixels, shape {list(shape)} "
                            f"{dtype.name} needs {nbytes}")
    arr = np.frombuffer(mv, dtype=dtype).reshape(shape)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def compressed_frame(encoding: str, buf: Any, shape: tuple[int, int], dtype: np.dtype,
                     elem_size: int, where: str) -> EncodedFrame:
    """A bslz4 / lz4 frame in the HDF5 filter framing, checked and kept compressed."""
    if not dtype.isnative and dtype.itemsize > 1:
        raise DetectorError(f"{where}: big-endian {encoding} frames are not supported "
                            f"(they would need a byte swap after decompression)")
    if encoding == "bslz4" and elem_size != dtype.itemsize:
        raise DetectorError(f"{where}: bitshuffle element size {elem_size} does not match "
                            f"the {dtype.itemsize}-byte pixels ({dtype.newbyteorder('=').name})")
    try:
        return EncodedFrame.from_buffer(encoding, shape, dtype.newbyteorder("="), buf)
    except EncodingError as exc:
        raise DetectorError(f"{where}: {exc}") from None


def safe_meta(value: Any, depth: int = 0) -> Any:
    """A copy made of plain scalars, lists and string-keyed maps (for our start's meta);
    anything else (arrays, byte strings, tags) becomes None."""
    if isinstance(value, META_TYPES) or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if depth > 6:
        return None
    if hasattr(value, "isoformat"):  # CBOR date/time (tag 0)
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): safe_meta(v, depth + 1) for k, v in value.items()
                if isinstance(k, str)}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray) \
            and len(value) <= 64:
        return [safe_meta(v, depth + 1) for v in value]
    return None


# where a series' start names its detector: v2's start, then v1's config (SIMPLON keys)
NAME_KEYS = ("detector_description", "description", "detector_serial_number",
             "detector_number")


def detector_base(meta: dict[str, Any], default: str) -> str:
    """The detector's own name, as an identifier: its description ("Dectris EIGER2 Si
    4M" -> `eiger2_si_4m`), else its serial number ("E-08-0106" -> `e_08_0106`),
    else `default`."""
    for key in NAME_KEYS:
        value = meta.get(key)
        if not isinstance(value, str):
            continue
        name = re.sub(r"[^0-9a-z]+", "_", value.lower()).strip("_")
        name = name.removeprefix("dectris_") if name != "dectris" else name
        if name:
            return name[:64] if name[0].isalpha() else f"d_{name}"[:64]
    return default


def detector_name(base: str, channel: str, nchannels: int = 1) -> str:
    """Our detector name for a channel (a threshold) of detector `base`: `base` when the
    series has one channel, else `base_<channel>` (an identifier)."""
    if not channel or nchannels <= 1:
        return base
    return f"{base}_{re.sub(r'[^0-9A-Za-z_]', '_', channel)}"


def goniometer_axes(meta: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """axis -> (start, increment) per image from a series' start: v2's `goniometer`
    map ({"omega": {"start": 0.0, "increment": 0.25}, ...}), v1's header keys
    (`omega_start`, `omega_increment`, ...); axes with neither left out."""
    out: dict[str, tuple[float, float]] = {}
    gonio = meta.get("goniometer")
    if isinstance(gonio, dict):
        for axis, v in gonio.items():
            if isinstance(v, dict) and _number(v.get("start")) is not None:
                out[str(axis)] = (_number(v["start"]), _number(v.get("increment")) or 0.0)
    for key, value in meta.items():
        if key.endswith("_start") and _number(value) is not None:
            axis = key[:-len("_start")]
            inc = _number(meta.get(f"{axis}_increment"))
            if inc is not None and axis.isidentifier() and axis not in out:
                out[axis] = (_number(value), inc)
    return out


def trajectory_motors(trajectory: dict) -> list[str]:
    """The motors a trajectory map names (fast, slow, tolerance keys)."""
    names = [trajectory.get(k) for k in ("fast", "slow")]
    tol = trajectory.get("tolerance")
    names += list(tol) if isinstance(tol, dict) else []
    return [n for n in names if isinstance(n, str) and n]


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def scan_id_for(start: SeriesStart) -> str:
    """Our scan_id: `user_data.scan_id` of the series' start when given, else the
    series' unique id as a safe file name, else series-<id>. (The series number
    alone repeats after a detector restart; the unique id does not.)"""
    user = start.meta.get("user_data")
    if isinstance(user, dict) and isinstance(user.get("scan_id"), str | int):
        sid = re.sub(r"[^A-Za-z0-9._-]+", "-", str(user["scan_id"])).strip("._-")[:200]
        if sid:
            return sid
    if start.unique_id:
        sid = re.sub(r"[^A-Za-z0-9._-]+", "-", start.unique_id).strip("._-")
        sid = re.sub(r"\.\.+", ".", sid)[:200]
        if sid:
            return sid
    return f"series-{start.series_id}"
