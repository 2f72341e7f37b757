"""The wire between the runner and its workers: tasks out, results back (the message
list is in `stream.run.workers`). Part 0 is a msgpack map with `type`, the other parts
raw buffers; nothing is ever pickled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from stream.core.item import Item, SparseFrame

CREDITS = 2  # tasks a worker holds at once: one in the chain, one on its way


def pack(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header)


def header_of(parts: list) -> dict[str, Any]:
    """The msgpack header of one of our messages (part 0)."""
    return msgpack.unpackb(getattr(parts[0], "buffer", parts[0]), raw=False)


Params = tuple[int, dict[str, dict[str, Any]]]  # version, {node: {key: value}}


def encode_task(seq: int, scan: int, point_id: int, parts: list, params: Params | None = None,
                preview: int = 0) -> list:
    """A point for the workers: its wire message as it arrived, numbered; the parameter
    changes in force for it, and whether to bin a preview of its frame."""
    header: dict[str, Any] = {"type": "task", "seq": seq, "scan": scan, "point_id": point_id}
    if params is not None and params[0]:
        header["params"] = [params[0], params[1]]
    if preview:
        header["preview"] = int(preview)
    return [pack(header), *parts]


def encode_scan(scan: int, start_parts: list, detector: str, max_frame_bytes: int) -> list:
    return [pack({"type": "scan", "scan": scan, "detector": detector,
                  "max_frame_bytes": max_frame_bytes}), *start_parts]


# ------------------------------------------------------------------ results


@dataclass
class Result:
    """A point back from a worker: its item (sparse frame and 2D peaks) or why it is bad."""

    seq: int
    scan: int
    point_id: int
    item: Item
    status: str  # ok | bad
    reason: str = ""
    preview: np.ndarray | None = None  # float32, the binned frame, when it was asked for


ALIGN = 8  # a packed result's arrays start at multiples of this (numba's aligned arrays)


def result_of(seq: int, scan: int, item: Item, status: str, reason: str = "",
              preview: np.ndarray | None = None) -> Result:
    """What a result carries, as `decode_result(encode_result(...))` gives it back, but
    without the wire: a new item with the point's fields, and of a good point its sparse
    frame (with its runs when it has them), 2D peaks and named outputs as contiguous
    read-only arrays. Worker threads hand this to the runner as it is (in one process the
    encoding and decoding, ~0.1 ms of CPU per point, bought nothing).

    Never the nodes' own arrays made read-only: read-only views of them (a node may
    keep an array it made and write it again), and of a named output a node could
    write again (writeable) a copy, which the next point cannot change while the
    collector or the linker still holds it. The sparse frame and the peaks are each
    point's own arrays (the kernels make them; threshold copies out of its reused
    buffers)."""
    out = Item(item.point_id, item.detector, item.time, item.motors, item.counters,
               flags=list(item.flags))
    sp = item.sparse
    if status == "ok":
        if sp is not None:
            out.sparse = SparseFrame(
                tuple(int(n) for n in sp.shape), _r(sp.row), _r(sp.col), _r(sp.intensity),
                None if sp.label is None else _r(sp.label), int(sp.npeaks),
                None if sp.runs is None else _r(sp.runs))
        if item.peaks is not None:
            out.peaks = {name: _r(col) for name, col in item.peaks.items()}
        out.outputs = {name: _own(arr) for name, arr in item.outputs.items()}
    return Result(seq, scan, item.point_id, out, status, reason,
                  None if preview is None else _c(preview))


def _c(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr)


def _r(arr: np.ndarray) -> np.ndarray:
    """A contiguous read-only view (of a copy, if `arr` is not contiguous): the linker
    hands its kernels read-only arrays (`nodes.kernels.readonly`); a worker thread's
    result is so already, and the collector's thread, the one that is serial, does not
    make views of them. A view, so that the array the node made stays as it was."""
    view = np.ascontiguousarray(arr).view()
    view.setflags(write=False)
    return view


def _own(arr: Any) -> np.ndarray:
    """A named output as the result keeps it: `_r` of a copy if a node could write it
    again (the copy of a few small arrays a point costs ~1 us), else of it."""
    arr = np.asarray(arr)
    return _r(arr.copy() if arr.flags.writeable else arr)


def encode_result(seq: int, scan: int, item: Item, status: str, reason: str = "",
                  preview: np.ndarray | None = None, packed: bool = False) -> list:
    """`result_of` for a socket: msgpack header + raw buffers. `packed`: the buffers in
    one part, each at a multiple of ALIGN (for a socket: each part of a message costs
    ~3 us a hop, ~20 parts ~60 us)."""
    res = result_of(seq, scan, item, status, reason, preview)
    item = res.item
    buffers: list[memoryview] = []

    def add(arr: np.ndarray) -> list:
        buffers.append(memoryview(arr.reshape(-1)).cast("B"))  # (also with a 0 in the shape)
        return [arr.dtype.str, list(arr.shape)]

    sparse = None
    sp = item.sparse
    if sp is not None:
        sparse = {"shape": list(sp.shape), "npeaks": sp.npeaks,
                  "row": add(sp.row), "col": add(sp.col), "intensity": add(sp.intensity),
                  "label": add(sp.label) if sp.label is not None else None}
        if sp.runs is not None:  # the label node's runs of the pixels, for the linker
            sparse["runs"] = add(sp.runs)
    peaks = None
    if item.peaks is not None:
        peaks = [[name, *add(col)] for name, col in item.peaks.items()]
    outputs = [[name, *add(arr)] for name, arr in item.outputs.items()]
    header = {"type": "result", "seq": seq, "scan": scan, "point_id": item.point_id,
              "status": status, "reason": reason, "detector": item.detector,
              "time": item.time, "motors": item.motors, "counters": item.counters,
              "flags": item.flags, "sparse": sparse, "peaks": peaks, "outputs": outputs}
    if res.preview is not None:
        header["preview"] = add(res.preview)
    if packed and buffers:
        header["packed"] = True
        return [pack(header), _pack(buffers)]
    return [pack(header), *buffers]


def _padded(nbytes: int) -> int:
    """Bytes a buffer takes in a packed result: rounded up to ALIGN."""
    return -(-nbytes // ALIGN) * ALIGN


def _pack(buffers: list[memoryview]) -> np.ndarray:
    out = np.empty(sum(_padded(b.nbytes) for b in buffers), np.uint8)
    pos = 0
    for b in buffers:
        out[pos:pos + b.nbytes] = np.frombuffer(b, np.uint8)
        pos += _padded(b.nbytes)
    return out


def decode_result(parts: list) -> Result:
    """The inverse of `encode_result`: arrays are views of the received buffers."""
    h = header_of(parts)
    if h.get("packed"):  # the arrays one after the other, each at a multiple of ALIGN
        data = np.frombuffer(getattr(parts[1], "buffer", parts[1]), np.uint8)
        if data.ctypes.data % ALIGN:  # a socket's receive buffer may not be aligned
            data = data.copy()
        pos = 0

        def take(spec: list) -> np.ndarray:
            nonlocal pos
            dtype, shape = np.dtype(spec[0]), spec[1]
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            arr = data[pos:pos + nbytes].view(dtype).reshape(shape)
            pos += _padded(nbytes)
            return arr
    else:
        raw = iter(getattr(p, "buffer", p) for p in parts[1:])

        def take(spec: list) -> np.ndarray:
            dtype, shape = spec
            return np.frombuffer(next(raw), dtype=np.dtype(dtype)).reshape(shape)

    item = Item(h["point_id"], h["detector"], h["time"], h["motors"], h["counters"],
                flags=list(h["flags"]))
    sp = h["sparse"]
    if sp is not None:
        row, col, intensity = take(sp["row"]), take(sp["col"]), take(sp["intensity"])
        label = take(sp["label"]) if sp["label"] is not None else None
        runs = take(sp["runs"]) if sp.get("runs") is not None else None
        item.sparse = SparseFrame(tuple(sp["shape"]), row, col, intensity, label, sp["npeaks"],
                                  runs)
    if h["peaks"] is not None:
        item.peaks = {name: take([dtype, shape]) for name, dtype, shape in h["peaks"]}
    item.outputs = {name: take([dtype, shape]) for name, dtype, shape in h["outputs"]}
    preview = take(h["preview"]) if h.get("preview") is not None else None
    return Result(h["seq"], h["scan"], h["point_id"], item, h["status"], h["reason"], preview)


def as_result(out: list | Result) -> Result:
    """A result as an executor hands it back: a worker thread's `Result` as it is, a
    wire message decoded."""
    return out if isinstance(out, Result) else decode_result(out)


def bad_result(seq: int, scan: int, point_id: int, reason: str) -> list:
    """A result for a point no worker could process (its workers died)."""
    return encode_result(seq, scan, Item(point_id, ""), "bad", reason)
