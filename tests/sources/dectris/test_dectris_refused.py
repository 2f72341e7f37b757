"""A series whose start the runner refuses (here `[source] detector` names a channel the
series does not have): the source's series history said `ended`, `success`, from the
detector's end, though no file was written. Real sockets (emulator, source's lanes) and
an in-process runner writing real HDF5 files."""

from __future__ import annotations

import numpy as np

from stream.config.schema import Config
from stream.run.runner import ScanRunner
from tests.support.dectris import emulator_and_source, send_in_thread
from tests.support.paths import CONFIGS

NPOINTS = 6


def run_until(runner: ScanRunner, src, done, steps: int = 3000) -> dict:
    """Steps of the runner's loop on the source until its status satisfies `done`."""
    for _ in range(steps):
        runner.step(src, 0.05)
        if done(status := src.status()):
            return status
    raise AssertionError(f"the source never got there: {src.status()}")


def test_a_series_the_runner_refused_is_rejected_in_the_history(tmp_path):
    config = Config.load(CONFIGS / "simulated.toml")
    config.override("source", "detector", "threshold_3")
    runner = ScanRunner(config, output_dir=tmp_path / "out")
    try:
        with emulator_and_source(join_timeout=0.5) as (emu, src):
            frames = [{"threshold_1": np.full((8, 10), 5, np.uint16),
                       "threshold_2": np.full((8, 10), 2, np.uint16)}] * NPOINTS
            t = send_in_thread(emu, frames, series_id=1,
                               motors=[{"omega": 0.1 * i} for i in range(NPOINTS)])
            status = run_until(runner, src, lambda s: s["history"])
            t.join()
    finally:
        runner.close()
    entry = status["history"][-1]
    assert entry["state"] == "ended"  # the detector's end came
    assert entry["status"] == "rejected", entry  # it was "success"
    assert "has no detector 'threshold_3'" in entry["reason"], entry
    assert not list((tmp_path / "out").glob("*.h5")) and not runner.results
