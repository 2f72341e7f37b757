"""A scan whose chain cannot be set up (a dark of another shape than the detector's)
ends fail with the reason once; its points are dropped without a line each: they were
logged 'rejected: point N of scan ...: no scan is open' one by one (20, then every
1000th), burying the reason in a replay's or daemon's log."""

from __future__ import annotations

import dataclasses
import logging

import h5py
import numpy as np
import pytest

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.wire.codec import encode
from tests.support.flow import SIMCONF
from tests.support.paths import CONFIGS


def send_scan(runner: ScanRunner, sim: Simulation, caplog) -> dict:
    """The simulated scan's start, 24 points and end through `runner`: its result."""
    with caplog.at_level(logging.INFO):
        runner.handle(encode(sim.start("s1")))
        for i in range(24):
            runner.handle(encode(sim.point(i, "s1")))
        runner.handle(encode(sim.end("s1")))
        runner.close()
    [result] = runner.results
    return result


def test_the_points_of_a_scan_whose_setup_failed_are_dropped_quietly(tmp_path, caplog):
    with h5py.File(tmp_path / "dark.h5", "w") as f:
        f["dark"] = np.zeros((10, 10), np.float32)  # the detector's frames are not 10 x 10
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    config = Config.load(CONFIGS / "simulated.toml")
    config["node"][0]["dark"] = f"{tmp_path / 'dark.h5'}::/dark"
    runner = ScanRunner(config, output_file=tmp_path / "out.h5")
    result = send_scan(runner, sim, caplog)
    assert result["status"] == "fail" and "setup failed" in result["reason"]
    assert "shape" in result["reason"]
    assert runner.counters["rejected"] == 25  # its 24 points and its end: counted
    assert not [r for r in caplog.records if "no scan is open" in r.getMessage()]
    assert not [r for r in caplog.records if "which is not open" in r.getMessage()]


def test_a_replay_whose_setup_failed_stops_reading_its_recording(tmp_path, capsys, caplog):
    """The replay went on reading every frame of the recording (a whole scan of GBs)
    only for the runner to drop them, and then logged 'rejected: end of scan ..., which
    is not open'; it now stops at the failure, whose reason it says once."""
    from stream.cli.main import main
    from tests.support.files import frames, monitors, omegas, write_bliss

    src = write_bliss(tmp_path / "bliss.h5", frames(), omegas(), monitors())
    np.save(tmp_path / "mask.npy", np.zeros((10, 10), bool))
    config = tmp_path / "bad.toml"
    config.write_text((CONFIGS / "simulated.toml").read_text().replace(
        "kind = \"correct\"", "kind = \"correct\"\nmask = \"mask.npy\"", 1))
    assert "mask.npy" in config.read_text()
    out = tmp_path / "out.h5"
    with caplog.at_level(logging.INFO):
        assert main(["replay", str(src), "--images", "/1.1/measurement/eiger", "--config",
                     str(config), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    n = len(frames())
    assert f"replay bliss.h5: 0/{n}" in err and f"{n}/{n}" not in err, err
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "which is not open" in m], said
    assert [m for m in said if "setup failed: correct: mask has shape (10, 10)" in m]
    with h5py.File(out, "r") as f:
        assert f["entry"].attrs["status"] == "fail"


def test_a_scan_whose_setup_failed_has_no_missing_points_and_is_not_resumable(tmp_path,
                                                                              caplog):
    """Its points were logged 'points 0..23 (24) missing: no data received' (they were
    received, and dropped) and written as missing rows, and inspect said 'resumable at
    point 0' for a scan that fails again the same way."""
    from stream.store.reader import format_summary, summary

    np.save(tmp_path / "mask.npy", np.zeros((10, 10), np.uint8))  # frames are not 10 x 10
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    path = tmp_path / "bad.toml"
    path.write_text((CONFIGS / "simulated.toml").read_text().replace(
        "kind = \"correct\"", "kind = \"correct\"\nmask = \"mask.npy\"", 1))
    config = Config.load(path)
    out = tmp_path / "out.h5"
    result = send_scan(ScanRunner(config, output_file=out), sim, caplog)
    assert result["status"] == "fail" and result["missing"] == 0
    assert not [r for r in caplog.records if "missing" in r.getMessage()]
    s = summary(out)
    assert s["points"] == 0 and not s["missing_points"] and not s["events"].get("missing")
    assert s["checkpoint"] and not s["checkpoint"]["resumable"]
    text = format_summary(s)
    assert "not resumable" in text and "resumable at" not in text, text
    from stream.store.resume import ResumeError, resume

    with pytest.raises(ResumeError, match="failed at its setup and took no point"):
        resume(out, config.text())


def test_a_dark_of_the_detector_shape_behind_a_frame_crop_says_so(tmp_path):
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    shape = tuple(sim.start("s1").detectors["eiger"].shape)
    np.save(tmp_path / "dark.npy", np.zeros(shape, np.float32))
    config = Config.load(CONFIGS / "simulated.toml")
    config["node"][0]["dark"] = str(tmp_path / "dark.npy")
    config["node"].insert(0, {"kind": "frame", "roi": [2, 42, 3, 53]})
    runner = ScanRunner(config, output_file=tmp_path / "out.h5")
    runner.handle(encode(sim.start("s1")))
    runner.close()
    [result] = runner.results
    assert result["status"] == "fail"
    assert (f"dark has shape {shape}, detector 'eiger''s before the frame node, whose crop, "
            f"rotation or rebin makes its frames (40, 50): give dark cropped, rotated and "
            f"rebinned alike") in result["reason"], result["reason"]


def sparse_point(sim: Simulation, i: int, scan_id: str):
    """Point i of the simulation with its frame sent sparse (`encoding: "sparse"`): the
    pixels above 40 counts, raster-sorted."""
    from stream.core.item import SparseFrame

    point = sim.point(i, scan_id)
    frame = next(iter(point.frames.values()))
    row, col = np.nonzero(frame > 40)
    sparse = SparseFrame(frame.shape, row.astype(np.uint16), col.astype(np.uint16),
                         frame[row, col].astype(np.float32))
    return dataclasses.replace(point, frames={k: sparse for k in point.frames})


def test_dense_frames_for_a_sparse_only_chain_end_the_scan_once(tmp_path, caplog):
    """A chain with no threshold before label run live failed every point of a detector's
    scan, one error each (only replay, which knows its recording, refused at its start).
    The scan's first dense frame now ends it once, as a failed setup; the next scan, sent
    sparse, goes through the same chain."""
    from stream.store.reader import summary
    from stream.store.resume import ResumeError, resume

    config = Config.load(CONFIGS / "imaged11.toml")
    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    runner = ScanRunner(config, output_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        runner.handle(encode(sim.start("dense")))
        for i in range(24):
            runner.handle(encode(sim.point(i, "dense")))
        runner.handle(encode(sim.end("dense")))
        runner.handle(encode(sim.start("sparse")))
        for i in range(24):
            runner.handle(encode(sparse_point(sim, i, "sparse")))
        runner.handle(encode(sim.end("sparse")))
        runner.close()
    dense, sparse = runner.results
    assert dense["status"] == "fail" and dense["reason"].startswith("setup failed: point 0's "
                                                                    "frame is raw")
    assert "has no threshold before label, so it takes sparse frames only" in dense["reason"]
    assert runner.counters["rejected"] == 25  # its 24 points and its end: counted
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and "dense ended: fail" in errors[1], errors  # the reason, once
    s = summary(dense["file"])
    assert s["points"] == 0 and not s["missing_points"] and not s["checkpoint"]["resumable"]
    with pytest.raises(ResumeError, match="failed at its setup and took no point"):
        resume(dense["file"], config.text())
    assert sparse["status"] == "success" and sparse["bad"] == 0 and sparse["cliques"] > 0


@pytest.mark.system  # `peakstream run` as a subprocess, scans sent over its data socket
def test_run_fails_a_dense_scan_once_and_takes_the_next_sparse_one(tmp_path):
    import zmq

    from tests.support.processes import RunProcess

    sim = Simulation(dataclasses.replace(SIMCONF, npoints=24, spots=4))
    config = tmp_path / "sparse.toml"
    config.write_text((CONFIGS / "imaged11.toml").read_text()
                      + '\n[source]\nwarmup = ["uint16/raw"]\n')
    run = RunProcess(config, tmp_path / "out", "--scans", "2", "--quiet")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 10_000)
    push.connect(run.endpoint)
    for scan, point in (("dense", sim.point), ("sparse", lambda i, s: sparse_point(sim, i, s))):
        for msg in (sim.start(scan), *(point(i, scan) for i in range(24)), sim.end(scan)):
            push.send_multipart(encode(msg))
    push.close()
    code, _, err = run.wait(300)
    assert code == 1, err  # a scan failed
    assert err.count("has no threshold before label") == 2, err  # said, and its end
    assert "has no sparse frame" not in err
    with h5py.File(tmp_path / "out" / "dense.h5", "r") as f:
        assert f["entry"].attrs["status"] == "fail" and len(f["entry/points/point_id"]) == 0
    with h5py.File(tmp_path / "out" / "sparse.h5", "r") as f:
        assert f["entry"].attrs["status"] == "success"
