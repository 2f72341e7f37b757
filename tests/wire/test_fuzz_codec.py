"""Property-based fuzz of the message decoder (issue #13): whatever the bytes, `decode`
returns a message or raises MessageError with a reason; nothing else escapes it."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.item import SparseFrame
from stream.core.messages import DetectorInfo, End, Message, MessageError, Point, Start
from stream.wire.codec import decode, encode

SHAPE = (8, 12)
KEYS = ["type", "protocol", "scan_id", "detectors", "motors", "counters", "npoints",
        "trajectory", "meta", "point_id", "time", "frames", "status", "reason", "part",
        "shape", "dtype", "encoding", "nnz", "ref", "uri", "path", "index", "kind", "nfast",
        "fast", "slow", "det", "omega", "flatfield", "pixel_mask"]
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.binary(max_size=12) | st.sampled_from(KEYS))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), c,
                                        max_size=4), max_leaves=12)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def valid_messages() -> list[list[bytes]]:
    """A start (with a flatfield), dense, sparse, reference and an end: the seeds."""
    frame = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    sparse = SparseFrame(SHAPE, np.array([0, 1], np.uint16), np.array([2, 3], np.uint16),
                         np.array([5.0, 6.0], np.float32))
    start = Start("s1", {"det": DetectorInfo(SHAPE, "uint16", flatfield=np.ones(SHAPE,
                                                                                 np.float32))},
                  ["omega"], ["monitor"], 10, {"kind": "sweep", "fast": "omega"})
    msgs: list[Message] = [start, Point("s1", 0, 1.0, {"omega": 0.0}, {"monitor": 1.0},
                                        {"det": frame}),
                           Point("s1", 1, 1.0, {"omega": 1.0}, {}, {"det": sparse}),
                           End("s1", "success", 10)]
    return [[bytes(p) for p in encode(m)] for m in msgs]


SEEDS = valid_messages()


def check(parts: list) -> None:
    try:
        msg = decode(parts, max_frame_bytes=1 << 16)
    except MessageError as exc:
        assert str(exc)  # always a reason
    else:
        assert isinstance(msg, Start | Point | End)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_any_bytes(parts):
    check(parts)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=10),
       st.lists(st.binary(max_size=300), max_size=4))
def test_any_header(header, buffers):
    check([msgpack.packb(header, use_bin_type=True), *buffers])


def _set(tree, path: list, value):
    """`tree` with the value at `path` (keys into nested maps) replaced or deleted."""
    node = tree
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return tree
        node = node[key]
    if isinstance(node, dict):
        if value is _DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return tree


_DELETE = object()


@FUZZ
@given(st.sampled_from(range(len(SEEDS))),
       st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
       VALUES | st.just(_DELETE), st.integers(0, 3), st.integers(-4, 4))
def test_a_valid_message_with_one_field_changed(seed, path, value, part, cut):
    header, *buffers = SEEDS[seed]
    h = msgpack.unpackb(header, raw=False)
    _set(h, path, value)
    if buffers and part < len(buffers) and cut:
        buffers = list(buffers)
        buffers[part] = buffers[part][:cut] if cut > 0 else buffers[part] + b"\0" * -cut
    check([msgpack.packb(h, use_bin_type=True), *buffers])


def test_the_seeds_are_valid():
    for parts in SEEDS:
        assert isinstance(decode(parts), Start | Point | End)
