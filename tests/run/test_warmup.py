"""The warm-up: a tiny scan of each [source] warmup frame kind through the config's own
runner loads every kernel a scan will use, so a scan that follows compiles nothing."""

from __future__ import annotations

import numpy as np
import pytest

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.run.warmup import _CompileClock, frame_kinds, loaded_kernels, warmup
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.wire.codec import encode
from tests.support.paths import CONFIGS


def config(*kinds: str) -> Config:
    c = Config.load(CONFIGS / "simulated.toml")
    c.override("source", "warmup", list(kinds))
    return c


def test_after_the_warmup_a_scan_compiles_nothing(tmp_path):
    c = config("uint16/raw")
    report = warmup(c)
    assert report.problems == [] and report.frames == ["uint16/raw"]
    assert loaded_kernels() >= 20  # dense pass, labels, moments, overlaps, union-find, split
    sim = Simulation(SimConfig(npoints=60, shape=(128, 160), spots=12, seed=2))
    runner = ScanRunner(c, output_file=tmp_path / "scan.h5")
    with _CompileClock() as clock:
        for msg in (sim.start("s"), *(sim.point(i, "s") for i in range(60)), sim.end("s")):
            runner.handle(encode(msg))
        runner.close()
    assert runner.results[0]["status"] == "success"
    assert runner.results[0]["cliques"] > 0
    assert [c.name for c in clock.compiled] == []  # nothing left for the first scan


def test_a_second_warmup_loads_nothing_new():
    """...and says the same count of kernels ready (all those in memory: the count said
    "60 kernels ready" on one start and "21" on another, only those loaded meanwhile)."""
    c = config("uint16/raw")
    first = warmup(c)
    again = warmup(c)
    assert again.compiled == [] and again.problems == []
    assert again.kernels == first.kernels == loaded_kernels() > 0


def test_frame_kinds_and_none():
    assert frame_kinds(config("uint16", "uint32/bslz4")) == [("uint16", "raw"),
                                                            ("uint32", "bslz4")]
    report = warmup(config())
    assert report.frames == [] and report.kernels == 0


def test_bad_warmup_entries_are_config_errors():
    from stream.config.base import ConfigError

    for bad in (["uint12/raw"], ["uint16/zip"]):
        with pytest.raises(ConfigError, match="warmup"):
            config(*bad)
    assert np.dtype("uint16")  # the dtypes the wire knows


def test_a_chain_of_sparse_frames_warms_with_sparse_frames():
    c = Config.load(CONFIGS / "imaged11.toml")  # label with no threshold: ImageD11 files
    assert frame_kinds(c) == [("uint16", "sparse"), ("uint32", "sparse")]
    report = warmup(c)
    assert report.problems == [] and report.frames == ["uint16/sparse", "uint32/sparse"]


@pytest.mark.system
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_warms_up_cleanly(path):
    """configs.md: each runs as it stands. Its warm-up scan must fit the chain: ROIs and
    crops larger than the default frame (roimap), motors a node needs (ptyd's dty, dtz),
    frames that come sparse (imaged11)."""
    report = warmup(Config.load(path))
    assert report.problems == []


def test_a_geometry_made_for_a_detector_warms_with_its_frames(tmp_path):
    """The warm-up scan's frames have the shape of the PONI file's detector, which the
    integrate node now checks its frames against (not the default 128 x 160)."""
    (tmp_path / "small.poni").write_text(
        "poni_version: 2\nDetector: Detector\n"
        'Detector_config: {"pixel1": 7.5e-05, "pixel2": 7.5e-05, "max_shape": [96, 128]}\n'
        "Distance: 0.1\nPoni1: 0.0036\nPoni2: 0.0048\nWavelength: 3.1e-11\n")
    (tmp_path / "c.toml").write_text(
        '[source]\nwarmup = ["uint16/raw"]\n[[node]]\nkind = "integrate"\n'
        'poni = "small.poni"\nnpt = 50\n[[node]]\nkind = "threshold"\ncut = 40.0\n'
        "[[node]]\nkind = 'label'\n[[node]]\nkind = 'properties'\n")
    report = warmup(Config.load(tmp_path / "c.toml"))
    assert report.problems == [] and report.frames == ["uint16/raw"]
