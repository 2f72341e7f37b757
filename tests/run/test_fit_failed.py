"""Cliques of linker split "pixels" whose Gaussian fit fails (fit_intensity NaN) are
counted: the file's counter fit_failed, which inspect shows, and a warning at the end
of the scan, for a scan through the runner and for a relink of its file."""

from __future__ import annotations

import numpy as np

from stream.config.schema import Config
from stream.core.messages import DetectorInfo, End, Point, Start
from stream.offline.relink import relink
from stream.run.runner import ScanRunner
from stream.store.reader import format_summary, load, summary
from stream.wire.codec import encode
from tests.support.link import failing_fit_volume

NPOINTS, SHAPE = 16, (40, 40)
CONFIG = """
[[node]]
kind = "threshold"
cut = 8.0

[[node]]
kind = "label"
split = "none"

[[node]]
kind = "properties"

[linker]
criterion = "any_pixel"
split = "{split}"
"""


def scan_file(tmp_path, split: str):
    vol = np.rint(failing_fit_volume(NPOINTS, SHAPE)).astype(np.uint16)
    (tmp_path / f"{split}.toml").write_text(CONFIG.format(split=split))
    runner = ScanRunner(Config.load(tmp_path / f"{split}.toml"),
                        output_file=tmp_path / f"{split}.h5")
    runner.handle(encode(Start("fit", {"eiger": DetectorInfo(SHAPE, "uint16")}, ["omega"],
                               npoints=NPOINTS)))
    for p in range(NPOINTS):
        runner.handle(encode(Point("fit", p, 1.0 + p, {"omega": 0.5 * p}, {},
                                   {"eiger": vol[p]})))
    runner.handle(encode(End("fit", "success", NPOINTS)))
    runner.close()
    assert runner.results[0]["status"] == "success", runner.results
    return tmp_path / f"{split}.h5"


def fit_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and "fit failed" in r.getMessage()]


def test_cliques_whose_fit_failed_are_counted_in_the_file(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        path = scan_file(tmp_path, "pixels")
    cliques = load(path)["cliques"]
    assert cliques["clique_id"].shape[0] == 4
    assert np.isnan(cliques["fit_intensity"]).sum() == 3  # 1 point, 4 pixels, 2 points
    s = summary(path)
    assert s["counters"]["fit_failed"] == 1  # the spot on 2 points only
    assert "(1 whose Gaussian fit failed: fit_intensity NaN)" in format_summary(s)
    (warning,) = fit_warnings(caplog)
    assert str(path) in warning and ": 1 clique(s) whose 3D Gaussian fit failed" in warning

    caplog.clear()
    plain = scan_file(tmp_path, "none")  # no fit: nothing failed, nothing said
    assert summary(plain)["counters"]["fit_failed"] == 0 and not fit_warnings(caplog)
    assert "fit failed" not in format_summary(summary(plain))
    with caplog.at_level("WARNING"):
        relink(plain, tmp_path / "relinked.h5", split="pixels")
    assert summary(tmp_path / "relinked.h5")["counters"]["fit_failed"] == 1
    (warning,) = fit_warnings(caplog)
    assert "relinked.h5: 1 clique(s)" in warning
