"""tools/compare_outputs.py compare: every .h5 file of two directories, and never
`identical` when there was nothing to compare."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np

from tests.support.paths import ROOT


def compare(a, b) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "compare_outputs.py"),
                           "compare", str(a), str(b)], capture_output=True, text=True,
                          timeout=120)


def write(path, values) -> None:
    with h5py.File(path, "w") as f:
        f["entry/points/point_id"] = np.asarray(values)


def test_compare_finds_every_h5_and_refuses_nothing_to_compare(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    r = compare(a, b)  # empty directories
    assert r.returncode == 2 and "nothing to compare" in r.stderr
    r = compare(a, tmp_path / "nowhere")
    assert r.returncode == 2 and "nowhere: no such directory" in r.stderr
    for d in (a, b):  # names that are neither out_* nor silicon_*
        write(d / "scan.h5", [0, 1, 2])
    r = compare(a, b)
    assert r.returncode == 0 and "scan.h5: 1 datasets compared" in r.stdout
    write(b / "scan.h5", [0, 1, 3])
    r = compare(a, b)
    assert r.returncode == 1 and "scan.h5: entry/points/point_id differs" in r.stdout
    write(b / "scan.h5", [0, 1, 2])
    write(b / "more.h5", [0])  # only in B
    r = compare(a, b)
    assert r.returncode == 1 and f"more.h5: missing in {a}" in r.stdout
