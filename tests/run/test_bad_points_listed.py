"""Points refused on arrival and never replaced are bad with their reason: the scan's
reason names the first of them (it was empty) and inspect lists them all, ids and
reasons (it printed only `events bad 2`)."""

from __future__ import annotations

import numpy as np

from stream.store.reader import format_summary, summary
from stream.wire.codec import encode
from tests.support.flow import run_altered


def test_refused_points_are_named_in_the_reason_and_listed_by_inspect(tmp_path):
    path = tmp_path / "s.h5"

    def alter(i, point):
        (name, frame), = point.frames.items()
        if i == 4:  # half the rows the start announced
            point.frames[name] = np.ascontiguousarray(frame[: frame.shape[0] // 2])
        if i == 5:  # another dtype
            point.frames[name] = frame.astype(np.uint32)
        return encode(point)

    result = run_altered(path, "bad", 24, alter)
    assert result["status"] == "incomplete", result
    assert "(the first: point 4: frame is [64, 160], start announced [128, 160]" \
        in result["reason"], result["reason"]
    s = summary(path)
    assert [b["point_id"] for b in s["bad_points"]] == [4, 5]
    assert "uint32" in s["bad_points"][1]["reason"]
    text = format_summary(s)
    assert "bad         points 4-5" in text
    assert "point 4: frame is [64, 160]" in text and "point 5: frame is uint32" in text
