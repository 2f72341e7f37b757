"""Which crashed file a point of a scan not open continues, and what is said when none."""

from __future__ import annotations

import os

from stream.core.item import PEAK_COLUMNS, clique_columns
from stream.core.messages import Point
from stream.run.runner import ScanRunner
from stream.store.scanfile import ScanStore
from stream.wire.codec import encode
from tests.support.resume import config


def test_a_moved_crashed_file_of_the_same_config_is_not_called_another_config(tmp_path):
    """A crashed file renamed (a copy, a move: never resumed into) is no edited config:
    the point is refused as of no open scan, without a claim about the config."""
    cfg = config(0.0)
    store = ScanStore(tmp_path / "sweep.h5", scan_id="sweep", detector="d",
                      motors=["omega"], counters=[], peak_columns=PEAK_COLUMNS,
                      clique_columns=clique_columns(["omega"]), config_text=cfg.text())
    store.checkpoint({}, None)
    store.close_unchanged()  # as a crash leaves it: status running
    os.rename(tmp_path / "sweep.h5", tmp_path / "sweep-moved.h5")
    runner = ScanRunner(cfg, output_dir=tmp_path)
    runner.handle(encode(Point("sweep", 5, 0.0, {"omega": 1.0})))
    status = runner.status()
    runner.close()
    assert status["rejected"] == 1 and status["last_error"] == ""
