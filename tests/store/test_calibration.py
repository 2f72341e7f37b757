"""The calibration files a scan was made with are part of its config: recorded with
their sha256, and a crashed file whose dark (flat, mask, ...) has changed since is
not continued with the new one (the file would mix two calibrations)."""

from __future__ import annotations

import hashlib
import logging

import h5py
import numpy as np
import pytest

from stream.config.schema import Config
from stream.core.messages import start_to_json
from stream.core.scan import Scan
from stream.run.runner import ScanRunner
from stream.sources.simulate import Simulation
from stream.sources.simulate.config import SimConfig
from stream.store.reader import format_summary, summary
from stream.store.resume import ResumeError, resume
from stream.store.scanfile import ScanStore
from stream.wire.codec import encode
from tests.support.files import corrected_chain

SIM = SimConfig(npoints=48, shape=(96, 128), spots=12, seed=3)  # SWEEP
CHAIN = corrected_chain(dark="dark.npy", flat="cal.h5::/entry/flat") + """
[output]
flush_interval = 0.0
[workers]
kind = "inline"
"""


def calibrated(tmp_path, dark: float = 3.0) -> Config:
    """A config beside its dark.npy and cal.h5::/entry/flat."""
    cal = tmp_path / "cal"
    cal.mkdir(exist_ok=True)
    np.save(cal / "dark.npy", np.full(SIM.shape, dark, np.float32))
    with h5py.File(cal / "cal.h5", "a") as f:
        if "entry/flat" not in f:
            f["entry/flat"] = np.full(SIM.shape, 1.0, np.float32)
    (cal / "scan.toml").write_text(CHAIN)
    return Config.load(cal / "scan.toml")


def crashed(tmp_path, config: Config, sim: Simulation) -> tuple:
    """A scan file as a crash leaves it (status running, a checkpoint), made with
    `config`; its path and the scan's start."""
    out = tmp_path / "out"
    out.mkdir()
    start = sim.start("recal")
    store = ScanStore.for_scan(out / "recal.h5", Scan.from_start(start), config, "eiger")
    store.checkpoint({}, None)
    store.close_unchanged()
    return out / "recal.h5", start


def test_the_file_records_each_calibration_file_and_its_sha256(tmp_path):
    config = calibrated(tmp_path)
    path, _ = crashed(tmp_path, config, Simulation(SIM))
    s = summary(path)
    cal = tmp_path / "cal"
    assert s["calibration"]["base"] == str(cal)
    files = {f["key"]: f for f in s["calibration"]["files"]}
    assert files["dark"]["path"] == str(cal / "dark.npy")
    assert files["dark"]["sha256"] == hashlib.sha256((cal / "dark.npy").read_bytes()).hexdigest()
    flat = np.full(SIM.shape, 1.0, np.float32)
    head = f"{flat.dtype.str} {flat.shape}".encode()
    assert files["flat"]["sha256"] == hashlib.sha256(head + flat.tobytes()).hexdigest()
    assert files["flat"]["path"] == f"{cal / 'cal.h5'}::/entry/flat"
    text = format_summary(s)
    assert f"calibration dark.npy: sha256 {files['dark']['sha256'][:16]}" in text
    # another dataset in the same HDF5 file changes nothing
    with h5py.File(cal / "cal.h5", "a") as f:
        f["entry/other"] = np.zeros(3)
    assert Config.load(cal / "scan.toml").calibration()["files"] == s["calibration"]["files"]


def test_a_crashed_file_whose_dark_changed_is_not_continued(tmp_path, caplog):
    config = calibrated(tmp_path)
    sim = Simulation(SIM)
    path, start = crashed(tmp_path, config, sim)
    # the same contents: resumed (from anywhere: the config's directory names the files)
    resume(path, config.text(), start_to_json(start),
           calibration=config.calibration()).store.close_unchanged()
    retaken = calibrated(tmp_path, dark=30.0)  # the dark is taken again
    with pytest.raises(ResumeError, match=r"\[\[node\]\] #1 \(correct\) dark = 'dark.npy'.*"
                                          r"another content"):
        resume(path, retaken.text(), start_to_json(start), calibration=retaken.calibration())
    # a restarted runner: a point of the scan is refused, saying which file changed
    runner = ScanRunner(retaken, output_dir=path.parent)
    runner.handle(encode(sim.point(3, "recal")))
    assert "dark.npy" in runner.status()["last_error"]
    assert "another content" in runner.status()["last_error"]
    # its start: a new file, and a warning naming the file that changed
    with caplog.at_level(logging.WARNING):
        runner.handle(encode(start))
    runner.close()
    assert "not resumed" in caplog.text and "dark.npy" in caplog.text
    assert (path.parent / "recal-1.h5").exists()
    assert summary(path)["status"] == "running"  # left for a restart with its dark, or a fill


def test_a_dark_rewritten_while_the_chain_runs_is_not_what_the_file_records(tmp_path):
    """A process keeps the arrays its chain loaded (the workers' chains are built once):
    a dark taken again while the daemon runs is not used, so its scan files must record
    the dark that was loaded, not the file as it is when the scan starts."""
    config = calibrated(tmp_path)
    config.build_nodes()  # as the daemon's warm-up and its workers do at start
    loaded = hashlib.sha256((tmp_path / "cal" / "dark.npy").read_bytes()).hexdigest()
    calibrated(tmp_path, dark=30.0)  # the dark is taken again
    sim = Simulation(SIM)
    runner = ScanRunner(config, output_dir=tmp_path / "out")
    runner.handle(encode(sim.start("later")))
    for i in range(4):
        runner.handle(encode(sim.point(i, "later")))
    runner.handle(encode(sim.end("later", 4)))
    runner.close()
    [result] = runner.results
    files = {f["key"]: f for f in summary(result["file"])["calibration"]["files"]}
    assert files["dark"]["sha256"] == loaded
