"""A DECTRIS image that does not fit the scan (wrong shape or dtype) is refused on
arrival; a later copy of it that fits replaces it (event `replaced`, docs/security.md),
as on our own protocol's lane: it used to be dropped as a duplicate, the point bad."""

from __future__ import annotations

import numpy as np
import pytest

from stream.store.reader import load
from tests.support.dectris import collect, emulator_and_source, live_tables, sim_scan


@pytest.mark.parametrize("version", [1, 2])
def test_a_valid_image_after_one_that_did_not_fit_replaces_it(tmp_path, version):
    frames, motors, counters = sim_scan()
    n, shape = len(frames), frames[0].shape
    with emulator_and_source(version, "bslz4", motors=["omega"], counters=["monitor"],
                             join_timeout=30.0) as (emu, src):
        scan = "emu-1" if version == 2 else "series-1"
        emu.arm(1, shape, "uint16", n)
        for i in range(n):
            emu.motors(scan, i, motors[i], counters[i])
            if i == 3:  # a copy of the wrong shape first
                emu.image(1, 3, np.zeros((shape[0] // 2, shape[1]), np.uint16))
            if i == 5:  # one of the wrong dtype
                emu.image(1, 5, frames[5].astype(np.uint32))
            emu.image(1, i, frames[i])
        emu.image(1, 7, frames[7])  # a plain duplicate is still dropped
        emu.end(1)
        messages = collect(src)
        status = src.status()
    got, result = live_tables(tmp_path, messages)
    assert result["status"] == "success" and result["bad"] == 0, result
    assert not np.any(got["points"]["status"] != 0)
    events = load(tmp_path / "live.h5")["events"]
    kinds = [str(k, "utf8") if isinstance(k, bytes) else str(k) for k in events["kind"]]
    replaced = sorted(int(p) for k, p in zip(kinds, events["point_id"], strict=True)
                      if k == "replaced")
    assert replaced == [3, 5], list(zip(kinds, events["point_id"], strict=True))
    assert status["image_duplicate"] == 1 and status["joined"] == n + 2, status
