"""A series whose every announced image came but whose end never did ends as a success
with a reason saying so (it was aborted as timed out); one with images missing still
times out."""

from __future__ import annotations

import numpy as np

from stream.core.messages import End
from tests.support.dectris import collect, decoded, emulator_and_source

SHAPE = (16, 24)
FRAMES = [np.full(SHAPE, 10 * i, np.uint16) for i in range(6)]
MOTORS = [{"omega": 0.25 * i} for i in range(6)]


def test_a_whole_series_without_its_end_is_complete():
    with emulator_and_source(2, "raw", motors=["omega"], series_timeout=1.0) as (emu, src):
        emu.send_series(FRAMES, series_id=1, motors=MOTORS, fault="no-end")
        whole = [m for m in decoded(collect(src)) if isinstance(m, End)]
        emu.send_series(FRAMES, series_id=2, motors=MOTORS, fault="no-end", nimages=7)
        short = [m for m in decoded(collect(src)) if isinstance(m, End)]
        st = src.status()
    assert whole[-1].status == "success" and whole[-1].npoints == 6, whole
    assert "no end of series 1" in whole[-1].reason and "all 6 images came" in whole[-1].reason
    assert short[-1].status == "abort" and short[-1].reason.startswith("timeout"), short
    assert st["ended"] == 1 and st["timed_out"] == 1
