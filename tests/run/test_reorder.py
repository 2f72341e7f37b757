"""The reorder buffer: points in id order, gaps declared missing, never waited on forever."""

from stream.run.collector import ReorderBuffer, Slot


def ids(out):
    """Released slots by id; the points of a gap (one range) as ("missing", id)."""
    return [y for x in out for y in ([x.point_id] if isinstance(x, Slot)
                                     else [("missing", i) for i in x])]


def test_a_gap_is_one_range_however_long():
    buf = ReorderBuffer(window=1, timeout=100)
    buf.push(Slot(3_000_000, None, arrived=0.0))
    buf.push(Slot(3_000_001, None, arrived=0.0))
    out = buf.pop(now=0.0)
    assert out[0] == range(0, 3_000_000) and [s.point_id for s in out[1:]] == [3_000_000,
                                                                                3_000_001]


def test_releases_in_order_whatever_the_arrival():
    buf = ReorderBuffer(window=10, timeout=100)
    released = []
    for pid in [2, 0, 3, 1, 5, 4]:
        buf.push(Slot(pid, None, arrived=0.0))
        released += ids(buf.pop(now=0.0))
    assert released == [0, 1, 2, 3, 4, 5]


def test_gap_declared_missing_when_window_overflows():
    buf = ReorderBuffer(window=2, timeout=100)
    out = []
    for pid in [1, 2, 3]:
        buf.push(Slot(pid, None, arrived=0.0))
        out += ids(buf.pop(now=0.0))
    assert out == [("missing", 0), 1, 2, 3]
    assert buf.seen(0) and buf.seen(3) and not buf.seen(4)


def test_gap_declared_missing_after_timeout():
    buf = ReorderBuffer(window=100, timeout=5.0)
    buf.push(Slot(3, None, arrived=10.0))
    assert buf.pop(now=12.0) == []
    assert ids(buf.pop(now=15.5)) == [("missing", 0), ("missing", 1), ("missing", 2), 3]


def test_final_pop_fills_up_to_npoints():
    buf = ReorderBuffer(window=100, timeout=100, npoints=5)
    buf.push(Slot(1, None))
    assert ids(buf.pop(now=0.0, final=True)) == [("missing", 0), 1, ("missing", 2),
                                                 ("missing", 3), ("missing", 4)]


def test_duplicates_are_refused():
    buf = ReorderBuffer()
    buf.push(Slot(0, None))
    buf.pop(0.0)
    try:
        buf.push(Slot(0, None))
    except ValueError as exc:
        assert "already received" in str(exc)
    else:
        raise AssertionError("duplicate accepted")
