"""SIMPLON stream v1 ("legacy"): multipart messages of JSON parts and raw data.

As the EIGER SIMPLON API documents them (field lists checked against
DECTRIS-compatible senders and readers):

* series header: part 1 `{"htype": "dheader-1.0", "series": N, "header_detail":
  "none" | "basic" | "all"}`; basic adds part 2, the detector configuration
  (a JSON map: x/y_pixels_in_detector, nimages, ntrigger, count_time,
  flatfield_correction_applied, ...); all adds three header + data pairs:
  `dflatfield-1.0` (float32), `dpixelmask-1.0` (uint32), `dcountrate_table-1.0`
  (float32), each header with `shape` [x, y] and `type`. So 1, 2 or 8 parts,
  and one more when the user set a header appendix.
* image: `{"htype": "dimage-1.0", "series", "frame", "hash"}`, `{"htype":
  "dimage_d-1.0", "shape": [x, y], "type", "encoding", "size"}` (shape fast
  axis first: the numpy shape is (y, x)), the data, `{"htype": "dconfig-1.0",
  "start_time", "stop_time", "real_time"}` (ns); 4 parts, 5 with an appendix.
  Encodings `<` (raw little endian), `lz4<` (one bare LZ4 block, no size),
  `bs8-lz4<`, `bs16-lz4<`, `bs32-lz4<` (bitshuffle + LZ4 in the HDF5 filter
  framing, 12-byte header: the same bytes as an Eiger HDF5 chunk).
* end: `{"htype": "dseries_end-1.0", "series": N}`.

A bslz4 frame goes on as it came (a view of the received part). A bare LZ4
block gets the LZ4 HDF5 filter's 12-byte header and block size in front (one
copy of the compressed bytes) and also goes on compressed.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

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

HEADER_PARTS = {"none": 1, "basic": 2, "all": 8}
MAP_TYPES = {"dflatfield-1.0": "flatfield", "dpixelmask-1.0": "pixel_mask",
             "dcountrate_table-1.0": "countrate_table"}
ENCODING = re.compile(r"(?:bs(8|16|32)-)?(lz4)?([<>])")
MAX_JSON = 1 << 24  # bytes of a JSON part we are willing to parse


def _buffer(part: Any) -> memoryview:
    return memoryview(getattr(part, "buffer", part)).cast("B")


def _json(part: Any, where: str) -> dict[str, Any]:
    buf = _buffer(part)
    if buf.nbytes > MAX_JSON:
        raise DetectorError(f"{where}: a JSON part of {buf.nbytes} bytes is too large")
    try:
        value = json.loads(bytes(buf))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DetectorError(f"{where}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DetectorError(f"{where}: JSON {type(value).__name__}, not a map")
    return value


def decode_v1(parts: list) -> DetectorMessage:
    """One stream v1 multipart message, or DetectorError saying why."""
    if not parts:
        raise DetectorError("empty message")
    first = _json(parts[0], "part 1")
    htype = first.get("htype")
    if htype == "dheader-1.0":
        return _header(first, parts)
    if htype == "dimage-1.0":
        return _image(first, parts)
    if htype == "dseries_end-1.0":
        if len(parts) != 1:
            raise DetectorError(f"dseries_end has {len(parts)} parts, not 1")
        return SeriesEnd(uint(first.get("series"), "dseries_end: series"))
    raise DetectorError(f"part 1: unknown htype {htype!r} (a stray part of a message?)")


def _header(first: dict, parts: list) -> SeriesStart:
    series = uint(first.get("series"), "dheader: series")
    detail = first.get("header_detail")
    if detail not in HEADER_PARTS:
        raise DetectorError(f"dheader: header_detail {detail!r} is not none, basic or all")
    want = HEADER_PARTS[detail]
    if len(parts) not in (want, want + 1):
        raise DetectorError(f"dheader with header_detail {detail} has {len(parts)} parts, "
                            f"expected {want} ({want + 1} with an appendix)")
    start = SeriesStart(series, meta={"stream": "v1", "header_detail": detail})
    if len(parts) == want + 1:
        start.meta["header_appendix"] = _appendix(parts[-1])
    if detail == "none":
        return start
    config = _json(parts[1], "dheader config (part 2)")
    _configure(start, config)
    seen: set[str] = set()
    for i in (2, 4, 6) if detail == "all" else ():
        h = _json(parts[i], f"dheader part {i + 1}")
        kind = MAP_TYPES.get(h.get("htype"))
        if kind is None or kind in seen:
            raise DetectorError(f"dheader part {i + 1}: htype {h.get('htype')!r} is not one "
                                f"of {', '.join(MAP_TYPES)}, or comes a second time")
        seen.add(kind)
        arr = _map(h, parts[i + 1], f"dheader {h['htype']}")
        if kind == "countrate_table":
            start.meta["countrate_table_shape"] = list(arr.shape)
        else:
            getattr(start, kind)[""] = arr
    return start


def _configure(start: SeriesStart, config: dict) -> None:
    """What the detector configuration (header part 2) tells of the series."""
    x, y = config.get("x_pixels_in_detector"), config.get("y_pixels_in_detector")
    if x is not None and y is not None:
        start.shape = frame_shape([y, x], "dheader config: pixels in detector")
    bits = config.get("bit_depth_image")
    if bits in (8, 16, 32):
        start.dtype = f"uint{bits}"
    nimages, ntrigger = config.get("nimages"), config.get("ntrigger", 1)
    if nimages is not None:
        start.npoints = uint(nimages, "dheader config: nimages") * \
            max(uint(ntrigger, "dheader config: ntrigger"), 1)
    start.flatfield_applied = bool(config.get("flatfield_correction_applied", False))
    start.meta.update({k: safe_meta(v) for k, v in config.items()
                       if k not in ("flatfield", "pixel_mask", "countrate_correction_table")})
    start.meta["flatfield_applied"] = start.flatfield_applied


def _map(h: dict, data: Any, where: str) -> np.ndarray:
    dims = h.get("shape")
    if not isinstance(dims, list) or len(dims) != 2:
        raise DetectorError(f"{where}: shape must be [x, y], got {dims!r}")
    shape = frame_shape(dims[::-1], where)
    try:
        dtype = np.dtype(str(h.get("type"))).newbyteorder("<")
    except TypeError:
        raise DetectorError(f"{where}: unknown type {h.get('type')!r}") from None
    return raw_frame(_buffer(data), shape, dtype, where)


def _appendix(part: Any) -> Any:
    try:
        return safe_meta(json.loads(bytes(_buffer(part))))
    except (ValueError, UnicodeDecodeError):
        return None


def _image(first: dict, parts: list) -> SeriesImage:
    series = uint(first.get("series"), "dimage: series")
    frame_id = uint(first.get("frame"), "dimage: frame")
    where = f"image {frame_id}"
    if len(parts) not in (4, 5):
        raise DetectorError(f"{where}: {len(parts)} parts, expected 4 (5 with an appendix)")
    desc = _json(parts[1], f"{where}: part 2")
    if desc.get("htype") != "dimage_d-1.0":
        raise DetectorError(f"{where}: part 2 htype {desc.get('htype')!r} is not dimage_d-1.0")
    conf = _json(parts[3], f"{where}: part 4")
    if conf.get("htype") != "dconfig-1.0":
        raise DetectorError(f"{where}: part 4 htype {conf.get('htype')!r} is not dconfig-1.0")
    times = {k: conf[k] * 1e-9 for k in ("start_time", "stop_time", "real_time")
             if isinstance(conf.get(k), int | float) and not isinstance(conf.get(k), bool)}
    frame = _frame(desc, _buffer(parts[2]), where)
    return SeriesImage(series, frame_id, {"": frame}, times=times)


def _frame(desc: dict, data: memoryview, where: str) -> np.ndarray | EncodedFrame:
    dims = desc.get("shape")
    if isinstance(dims, list) and len(dims) == 3 and dims[2] == 1:
        dims = dims[:2]
    if not isinstance(dims, list) or len(dims) != 2:
        raise DetectorError(f"{where}: shape must be [x, y], got {dims!r}")
    shape = frame_shape(dims[::-1], where)  # [x, y]: fast axis first
    encoding = desc.get("encoding")
    m = ENCODING.fullmatch(encoding) if isinstance(encoding, str) else None
    if m is None or (m.group(1) and not m.group(2)):
        raise DetectorError(f"{where}: encoding {encoding!r} is not one of <, lz4<, "
                            f"bs8-lz4<, bs16-lz4<, bs32-lz4<")
    bits, lz4, order = m.groups()
    try:
        dtype = np.dtype(str(desc.get("type"))).newbyteorder(order)
    except TypeError:
        raise DetectorError(f"{where}: unknown pixel type {desc.get('type')!r}") from None
    frame_dtype(dtype, where)
    size = desc.get("size")
    if size is not None and size != data.nbytes:
        raise DetectorError(f"{where}: dimage_d says {size!r} bytes, the data part has "
                            f"{data.nbytes}")
    if bits:
        return compressed_frame("bslz4", data, shape, dtype, int(bits) // 8, where)
    if lz4:
        return _bare_lz4(data, shape, dtype, where)
    return raw_frame(data, shape, dtype, where)


def _bare_lz4(body: memoryview, shape: tuple[int, int], dtype: np.dtype,
              where: str) -> np.ndarray | EncodedFrame:
    """One bare LZ4 block of the whole frame, framed as the LZ4 HDF5 filter does."""
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if nbytes >= 1 << 32:
        raise DetectorError(f"{where}: a frame of {nbytes} bytes is too large for lz4<")
    if body.nbytes == nbytes:  # the filter would take this block as stored: decode it here
        import lz4.block

        try:
            raw = lz4.block.decompress(body, uncompressed_size=nbytes)
        except Exception as exc:  # lz4 raises LZ4BlockError
            raise DetectorError(f"{where}: corrupt lz4 data: {exc}") from None
        return raw_frame(raw, shape, dtype, where)
    framed = struct.pack(">QII", nbytes, nbytes, body.nbytes) + body
    return compressed_frame("lz4", framed, shape, dtype, dtype.itemsize, where)
