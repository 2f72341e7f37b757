"""A mask of the other convention (1 = a good pixel, as some beamlines write them; ours
is nonzero = bad, NaN included) excluded most of the detector: the scan ended success
with few pixels or none and no word. More than half excluded is warned at the scan's
start, logged and recorded as an event that inspect shows; a usual mask is not."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from stream.cli.main import main
from stream.store.reader import format_summary, summary
from tests.support.events import warnings_of
from tests.support.files import corrected_chain

CHAIN = corrected_chain(mask="mask.npy")


@pytest.mark.parametrize("mask, warned", [("gaps", False), ("good", True), ("nan", True)])
def test_a_mask_that_excludes_most_pixels_is_warned(tmp_path, caplog, mask, warned):
    scan = tmp_path / "scan.h5"
    assert main(["simulate", "--output", str(scan), "--points", "20", "--shape", "128", "160",
                 "--spots", "6", "--quiet"]) == 0
    gaps = np.zeros((128, 160), np.uint8)
    gaps[:, 80:82] = 1  # a module gap: bad
    values = {"gaps": gaps, "good": 1 - gaps,  # the same mask, 1 = good
              "nan": np.full((128, 160), np.nan)}[mask]
    np.save(tmp_path / "mask.npy", values)
    (tmp_path / "c.toml").write_text(CHAIN)
    out = tmp_path / "out.h5"
    with caplog.at_level(logging.WARNING):
        assert main(["replay", str(scan), "--config", str(tmp_path / "c.toml"), "--output",
                     str(out), "--quiet"]) == 0
    said = [r.getMessage() for r in caplog.records if "of the pixels are excluded" in
            r.getMessage()]
    recorded = [m for m in warnings_of(out) if "of the pixels are excluded" in m]
    if not warned:
        assert not said and not recorded
        return
    share = "99%" if mask == "good" else "100%"
    assert said and recorded and f"correct: {share} of the pixels are excluded" in said[0]
    assert "1 = good pixels" in recorded[0]
    assert f"correct: {share} of the pixels" in format_summary(summary(out))
