"""The wire encoding of Start / Point / End messages (PROTOCOL.md, version 1).

A message is a ZeroMQ multipart message: part 0 is a msgpack map (the header),
parts 1.. are raw buffers that the header refers to by index (frames of a
point; a detector's flatfield and pixel mask in a start). Frames are
decoded zero-copy into read-only numpy views of the received buffers;
compressed frames (`bslz4`, `lz4`) only have their header checked here and
stay compressed (`EncodedFrame`, a view of the part) until the per-frame
chain decodes them. Nothing is ever unpickled; every field is checked and a
failure raises :class:`MessageError` with the reason.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import msgpack
import numpy as np

from stream.core.encoded import COMPRESSED, EncodedFrame, EncodingError
from stream.core.item import SparseFrame
from stream.core.messages import (
    DETECTOR_MAPS,
    DTYPES,
    ENCODINGS,
    END_STATUS,
    PROTOCOL_VERSION,
    TRAJECTORY_KINDS,
    DetectorInfo,
    End,
    FrameRef,
    Message,
    MessageError,
    Point,
    Start,
)


def describe(exc: BaseException) -> str:
    """An exception's text, or its type's name when it has none (msgpack's FormatError,
    StackError for too deep a nesting) with msgpack's meaning of that type."""
    text = str(exc)
    if text:
        return text
    name = type(exc).__name__
    return {"FormatError": "FormatError (a byte that starts no msgpack object)",
            "StackError": "StackError (nested deeper than msgpack allows)"}.get(name, name)


def encode(msg: Message) -> list[bytes | memoryview]:
    """Encode a message into multipart frames (header first, then buffers)."""
    if isinstance(msg, Start):
        maps: list[memoryview] = []
        header = {
            "type": "start",
            "protocol": msg.protocol,
            "scan_id": msg.scan_id,
            "detectors": {k: _detector_header(d, maps) for k, d in msg.detectors.items()},
            "motors": list(msg.motors),
            "counters": list(msg.counters),
            "npoints": msg.npoints,
            "trajectory": dict(msg.trajectory),
            "meta": dict(msg.meta),
        }
        return [msgpack.packb(header), *maps]
    if isinstance(msg, End):
        header = {"type": "end", "scan_id": msg.scan_id, "status": msg.status,
                  "npoints": msg.npoints}
        if msg.reason:
            header["reason"] = msg.reason
        return [msgpack.packb(header)]
    if isinstance(msg, Point):
        parts: list[bytes | memoryview] = []
        frames: dict[str, Any] = {}
        for name, frame in msg.frames.items():
            if isinstance(frame, FrameRef):
                ref = {"uri": frame.uri}
                if frame.path is not None:
                    ref["path"] = frame.path
                if frame.index is not None:
                    ref["index"] = frame.index
                frames[name] = {"ref": ref}
                continue
            if isinstance(frame, EncodedFrame):  # sent on as it came
                parts.append(frame.buffer)
                frames[name] = {"part": len(parts), "shape": list(frame.shape),
                                "dtype": frame.dtype.name, "encoding": frame.encoding}
                continue
            if isinstance(frame, SparseFrame):
                first = len(parts) + 1
                for arr in (frame.row, frame.col, frame.intensity):
                    parts.append(memoryview(np.ascontiguousarray(arr)).cast("B"))
                frames[name] = {"part": first, "shape": list(frame.shape), "nnz": frame.nnz,
                                "dtype": frame.intensity.dtype.name, "encoding": "sparse"}
                continue
            arr = np.ascontiguousarray(frame)
            parts.append(memoryview(arr).cast("B"))
            frames[name] = {"part": len(parts), "shape": list(arr.shape),
                            "dtype": arr.dtype.name, "encoding": "raw"}
        header = {"type": "point", "scan_id": msg.scan_id, "point_id": msg.point_id,
                  "time": msg.time, "motors": dict(msg.motors),
                  "counters": dict(msg.counters), "frames": frames, **msg.extra}
        return [msgpack.packb(header), *parts]
    raise TypeError(f"not a message: {type(msg).__name__}")


def _detector_header(info: DetectorInfo, parts: list[memoryview]) -> dict[str, Any]:
    """A detector's entry of the start header; its maps are appended to `parts`."""
    out: dict[str, Any] = {"shape": list(info.shape), "dtype": info.dtype}
    for key in DETECTOR_MAPS:
        arr = getattr(info, key)
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.dtype.name not in DETECTOR_MAPS[key]:  # to a dtype the decoder accepts
            arr = arr.astype(np.float32) if key == "flatfield" else (arr != 0).view(np.uint8)
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # native order
        parts.append(memoryview(arr).cast("B"))
        out[key] = {"part": len(parts), "shape": list(arr.shape), "dtype": arr.dtype.name}
    return out


# ----------------------------------------------------------------- decoding


def decode(parts: list[bytes | memoryview | Any], max_frame_bytes: int | None = None,
           frames: bool = True) -> Message:
    """Decode multipart frames into a message, or raise MessageError saying why.

    `parts` may hold bytes, memoryviews or zmq.Frame objects (their buffers are
    used without copying). Frames larger than `max_frame_bytes` are refused.
    `frames=False`: a point's frames are checked as thoroughly but not made, its
    `frames` map stays empty (the runner makes them: views, checked on arrival).
    """
    if not parts:
        raise MessageError("empty message")
    bufs = [getattr(p, "buffer", p) for p in parts]
    try:
        header = msgpack.unpackb(bufs[0], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"header is not msgpack: {describe(exc)}") from None
    if not isinstance(header, dict):
        raise MessageError(f"header is a {type(header).__name__}, not a map")
    kind = header.get("type")
    if kind == "start":
        return _decode_start(header, bufs)
    if kind == "point":
        return _decode_point(header, bufs, max_frame_bytes, frames)
    if kind == "end":
        return _decode_end(header)
    raise MessageError(f"unknown message type {kind!r}")


def _get(h: dict, key: str, types: type | tuple, what: str = "", optional: bool = False):
    if key not in h or (optional and h[key] is None):
        if optional:
            return None
        raise MessageError(f"{what or h.get('type', 'message')}: missing key {key!r}")
    value = h[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise MessageError(f"{what or h.get('type')}: {key!r} must be "
                           f"{_names(types)}, got bool")
    if not isinstance(value, types):
        raise MessageError(f"{what or h.get('type')}: {key!r} must be {_names(types)}, "
                           f"got {type(value).__name__}")
    return value


def _names(types: type | tuple) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def _shape(value: Any, where: str) -> tuple[int, int]:
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536
                       for v in value)):
        raise MessageError(f"{where}: shape must be two positive integers below 65536, "
                           f"got {value!r}")
    return int(value[0]), int(value[1])


def _dtype(value: Any, where: str) -> str:
    if value not in DTYPES:
        raise MessageError(f"{where}: dtype {value!r} not one of {', '.join(DTYPES)}")
    return value


def _scan_id(h: dict) -> str:
    sid = _get(h, "scan_id", str)
    if not sid or len(sid) > 200:
        raise MessageError(f"{h['type']}: scan_id must be 1..200 characters")
    return sid


def _number_map(h: dict, key: str, flags: list[str]) -> dict[str, float]:
    """A point's motors or counters: name -> float. A value that is not a number (null:
    a counter that failed to read, a string) is NaN, with a flag saying so in `flags`:
    the point is kept, as one whose counter or motor is NaN (not scaled, not linked)."""
    value = _get(h, key, dict, optional=True) or {}
    out = {}
    for name, v in value.items():
        if not isinstance(name, str):
            raise MessageError(f"point: {key} names must be strings, got {name!r}")
        if isinstance(v, bool) or not isinstance(v, int | float):
            flags.append(f"{key[:-1]} {name!r} = {reprlib.repr(v)} is not a number: "
                         f"taken as NaN")
            v = math.nan
        out[name] = float(v)
    return out


def _decode_start(h: dict, bufs: list) -> Start:
    protocol = _get(h, "protocol", int)
    if protocol != PROTOCOL_VERSION:
        raise MessageError(f"start: protocol {protocol} not supported (this is {PROTOCOL_VERSION})")
    scan_id = _scan_id(h)
    dets = _get(h, "detectors", dict)
    if not dets:
        raise MessageError("start: no detectors")
    detectors = {}
    for name, d in dets.items():
        where = f"start: detector {name!r}"
        if not isinstance(name, str) or not name.isidentifier():
            raise MessageError(f"{where}: name must be an identifier")
        if not isinstance(d, dict):
            raise MessageError(f"{where}: must be a map")
        shape = _shape(d.get("shape"), where)
        maps = {key: _detector_map(d[key], key, shape, bufs, where)
                for key in DETECTOR_MAPS if d.get(key) is not None}
        detectors[name] = DetectorInfo(shape, _dtype(d.get("dtype"), where), **maps)
    motors = _get(h, "motors", list, optional=True) or []
    counters = _get(h, "counters", list, optional=True) or []
    for key, names in (("motors", motors), ("counters", counters)):
        if not all(isinstance(n, str) and n for n in names):
            raise MessageError(f"start: {key} must be a list of names")
    npoints = _get(h, "npoints", int, optional=True)
    if npoints is not None and not 0 <= npoints < 1 << 63:
        raise MessageError(f"start: npoints must be 0..2**63-1, got {npoints}")
    trajectory = _get(h, "trajectory", dict, optional=True) or {"kind": "sweep"}
    if trajectory.get("kind", "sweep") not in TRAJECTORY_KINDS:
        raise MessageError(f"start: trajectory kind {trajectory.get('kind')!r} not one of "
                           f"{', '.join(TRAJECTORY_KINDS)}")
    try:  # a bad trajectory map (unknown key, missing nfast, ...) is a malformed start
        from stream.core.trajectory import make_trajectory

        make_trajectory(trajectory, npoints, list(motors))
    except ValueError as exc:
        raise MessageError(f"start: {exc}") from None
    meta = _get(h, "meta", dict, optional=True) or {}
    return Start(scan_id, detectors, list(motors), list(counters), npoints,
                 dict(trajectory), dict(meta), protocol)


def _detector_map(spec: Any, key: str, shape: tuple[int, int], bufs: list,
                  where: str) -> np.ndarray:
    """A flatfield or pixel mask: a read-only view of its part, checked against the frames."""
    where = f"{where}: {key}"
    if not isinstance(spec, dict):
        raise MessageError(f"{where}: must be a map with part, shape and dtype")
    part = spec.get("part")
    if not isinstance(part, int) or isinstance(part, bool) or not 1 <= part < len(bufs):
        raise MessageError(f"{where}: part {part!r} does not name one of the "
                           f"{len(bufs) - 1} buffer parts")
    if _shape(spec.get("shape"), where) != shape:
        raise MessageError(f"{where}: shape {spec.get('shape')!r} is not the frames' "
                           f"{list(shape)}")
    if spec.get("dtype") not in DETECTOR_MAPS[key]:
        raise MessageError(f"{where}: dtype {spec.get('dtype')!r} not one of "
                           f"{', '.join(DETECTOR_MAPS[key])}")
    dtype = np.dtype(spec["dtype"])
    buf = memoryview(bufs[part])
    if buf.nbytes != shape[0] * shape[1] * dtype.itemsize:
        raise MessageError(f"{where}: buffer has {buf.nbytes} bytes, shape {list(shape)} "
                           f"{dtype.name} needs {shape[0] * shape[1] * dtype.itemsize}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def _decode_end(h: dict) -> End:
    status = _get(h, "status", str)
    if status not in END_STATUS:
        raise MessageError(f"end: status {status!r} not one of {', '.join(END_STATUS)}")
    npoints = _get(h, "npoints", int, optional=True)
    if npoints is not None and not 0 <= npoints < 1 << 63:
        raise MessageError(f"end: npoints must be 0..2**63-1, got {npoints}")
    reason = _get(h, "reason", str, optional=True) or ""
    return End(_scan_id(h), status, npoints, reason)


_POINT_KEYS = {"type", "scan_id", "point_id", "time", "motors", "counters", "frames"}


def _decode_point(h: dict, bufs: list, max_frame_bytes: int | None,
                  keep_frames: bool = True) -> Point:
    scan_id = _scan_id(h)
    point_id = _get(h, "point_id", int)
    if not 0 <= point_id < 1 << 63:
        raise MessageError(f"point: point_id must be 0..2**63-1, got {point_id}")
    t = _get(h, "time", (int, float), optional=True)
    time = float(t) if t is not None else math.nan
    frames: dict[str, Any] = {}
    for name, f in (_get(h, "frames", dict, optional=True) or {}).items():
        frame = _decode_frame(name, f, bufs, max_frame_bytes, keep_frames)
        if keep_frames:
            frames[name] = frame
    extra = {k: v for k, v in h.items() if k not in _POINT_KEYS}
    flags: list[str] = []
    motors, counters = _number_map(h, "motors", flags), _number_map(h, "counters", flags)
    if flags:  # the point's flags (`stream.run.workers`)
        given = extra.get("flags")
        extra["flags"] = [*(given if isinstance(given, list) else []), *flags]
    return Point(scan_id, point_id, time, motors, counters, frames, extra)


def _decode_frame(name: str, f: Any, bufs: list, max_frame_bytes: int | None,
                  make: bool = True):
    where = f"point: frame {name!r}"
    if not isinstance(f, dict):
        raise MessageError(f"{where}: must be a map")
    if "ref" in f:
        ref = f["ref"]
        if not isinstance(ref, dict) or not isinstance(ref.get("uri"), str):
            raise MessageError(f"{where}: ref needs a 'uri' string")
        index = ref.get("index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise MessageError(f"{where}: ref index must be an integer")
        return FrameRef(ref["uri"], ref.get("path"), index)
    encoding = f.get("encoding", "raw")
    if encoding not in ENCODINGS:
        raise MessageError(f"{where}: unknown encoding {encoding!r} "
                           f"(known: {', '.join(ENCODINGS)})")
    nparts = 3 if encoding == "sparse" else 1
    part = f.get("part")
    if (not isinstance(part, int) or isinstance(part, bool)
            or not 1 <= part <= len(bufs) - nparts):
        raise MessageError(f"{where}: part {part!r} does not name {nparts} of the "
                           f"{len(bufs) - 1} buffer parts")
    shape = _shape(f.get("shape"), where)
    dtype = np.dtype(_dtype(f.get("dtype"), where))
    if encoding == "sparse":
        return _decode_sparse(f, bufs[part:part + 3], shape, dtype, where)
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if max_frame_bytes is not None and nbytes > max_frame_bytes:
        raise MessageError(f"{where}: {nbytes} bytes is more than the configured maximum "
                           f"of {max_frame_bytes}")
    buf = memoryview(bufs[part])
    if encoding in COMPRESSED:  # the header only: decompressed by the chain
        try:
            return EncodedFrame.from_buffer(encoding, shape, dtype, buf)
        except EncodingError as exc:
            raise MessageError(f"{where}: {exc}") from None
    if buf.nbytes != nbytes:
        raise MessageError(f"{where}: buffer has {buf.nbytes} bytes, shape {list(shape)} "
                           f"{dtype.name} needs {nbytes}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape) if make else None


def _decode_sparse(f: dict, bufs: list, shape: tuple[int, int], dtype: np.dtype,
                   where: str) -> SparseFrame:
    """Three parts (row u16, col u16, intensity) of `nnz` raster-sorted pixels."""
    nnz = f.get("nnz")
    if not isinstance(nnz, int) or isinstance(nnz, bool) or not 0 <= nnz <= shape[0] * shape[1]:
        raise MessageError(f"{where}: nnz {nnz!r} must be 0..{shape[0] * shape[1]}")
    arrays = []
    for name, dt, buf in zip(("row", "col", "intensity"), (np.uint16, np.uint16, dtype), bufs,
                             strict=True):
        mv = memoryview(buf)
        if mv.nbytes != nnz * np.dtype(dt).itemsize:
            raise MessageError(f"{where}: sparse {name} has {mv.nbytes} bytes, {nnz} pixels "
                               f"need {nnz * np.dtype(dt).itemsize}")
        arrays.append(np.frombuffer(mv, dtype=dt))
    row, col, intensity = arrays
    if nnz and (row.max() >= shape[0] or col.max() >= shape[1]):
        raise MessageError(f"{where}: sparse pixels outside the frame {list(shape)}")
    key = row.astype(np.int64) * shape[1] + col
    if nnz > 1 and not (np.diff(key) > 0).all():
        raise MessageError(f"{where}: sparse pixels are not raster-sorted and unique")
    return SparseFrame(shape, row, col, intensity.astype(np.float32, copy=False))
