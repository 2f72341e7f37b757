"""`peakstream run` with `[source] kind = "dectris"`: a real subprocess reads the DECTRIS
emulator's stream (v2, lz4 frames) and our motor lane, and writes the scan's cliques
where the spots were put."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from stream.sources.dectris.emulator import DetectorEmulator
from stream.store.reader import load, summary
from tests.support.paths import ROOT

SHAPE = (32, 40)
NPOINTS = 8
# two spots: a 3x3 block of 1000 counts at (6, 7) on points 1-3, at (20, 30) on 5-6
SPOTS = [((6, 7), (1, 2, 3)), ((20, 30), (5, 6))]


def frames() -> list[np.ndarray]:
    out = [np.full(SHAPE, 5, np.uint16) for _ in range(NPOINTS)]
    for (r, c), points in SPOTS:
        for p in points:
            out[p][r - 1:r + 2, c - 1:c + 2] = 1000
    return out


@pytest.mark.system
def test_run_reads_a_dectris_detector_and_our_motor_lane(tmp_path):
    with DetectorEmulator(version=2, encoding="lz4") as emu:
        config = tmp_path / "dectris.toml"
        config.write_text(f'[source]\nkind = "dectris"\ndetector_endpoint = "{emu.endpoint}"\n'
                          "stream_version = 2\njoin_timeout = 10.0\n")
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", str(config), "--listen",
             "tcp://127.0.0.1:0", "--output", str(out), "--scans", "1", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        seen, banner = "", None
        while banner is None:  # past the warm-up's lines, to the one that says it reads
            line = proc.stderr.readline()
            if not line:
                proc.kill()
                raise AssertionError(f"run did not read the detector: {seen}{proc.stderr.read()}")
            seen += line
            banner = line if "writing to" in line else None
        # the documented wait (`until grep -q "listening on" run.log`) never ended: the
        # banner of a DECTRIS source had no "listening on"
        lane = re.search(r"listening on (tcp://\S+) \(motor lane\), reading DECTRIS "
                         r"stream v2 from ", banner)
        if lane is None:
            proc.kill()
            raise AssertionError(f"no 'listening on' in the banner: {banner}")
        emu.connect_motors(lane.group(1))
        emu.send_series(frames(), series_id=7, motors=[{"omega": 0.5 * i}
                                                       for i in range(NPOINTS)],
                        counters=[{"monitor": 1e4}] * NPOINTS)
        try:
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    files = sorted(out.rglob("*.h5"))
    assert len(files) == 1, (files, stdout, stderr)
    s = summary(files[0])
    assert s["status"] == "success" and s["points"] == NPOINTS
    data = load(files[0])
    cliques = data["cliques"]
    order = np.argsort(cliques["first_point"])
    assert cliques["n2d"][order].tolist() == [3, 2]
    assert cliques["first_point"][order].tolist() == [1, 5]
    # equal intensities: the centroid is the mean of the members' positions
    np.testing.assert_allclose(cliques["omega"][order], [1.0, 2.75])
    np.testing.assert_allclose(cliques["s_raw"][order], [6.0, 20.0])
    np.testing.assert_allclose(cliques["f_raw"][order], [7.0, 30.0])
