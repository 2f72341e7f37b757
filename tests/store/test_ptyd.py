"""The .ptyd file (ptypy's PtyScan layout, h5rw conventions) written live by a chain with
a ptyd node, read back with an independent reader written from the layout; a file
still being written shows its chunks so far; open-ended scans; export from a run."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from stream.config.schema import Config
from stream.core.messages import DetectorInfo, End, Point, Start
from stream.run.runner import ScanRunner
from stream.wire.codec import encode
from tests.support.dectris import sim_scan
from tests.support.paths import CONFIGS

NY, NX = 4, 8  # a raster of 32 points: dtz fast, dty slow (um)
DTY = np.repeat(np.arange(NY) * 0.5, NX)
DTZ = np.tile(np.arange(NX) * 0.25, NY)
CROP = (slice(32, 96), slice(48, 112))  # frame size [64, 64] around (64, 80)


def config(tmp_path, extra: str = "") -> Config:
    text = (CONFIGS / "ptyd.toml").read_text()
    if extra:
        text = text.replace('min_frames = 16                   # points per chunk written',
                            f"min_frames = 16\n{extra}")
    path = tmp_path / "ptyd.toml"
    path.write_text(text + '\n[workers]\nkind = "inline"  # each point written as it arrives\n')
    return Config.load(path)


def start(npoints: int | None = 32) -> Start:
    return Start("ptycho", {"eiger": DetectorInfo((128, 160), "uint16")}, ["dty", "dtz"], [],
                 npoints, {"kind": "grid", "nfast": NX, "fast": "dtz", "slow": "dty"},
                 {"sample": "x"})


def point(i: int, frames) -> Point:
    return Point("ptycho", i, float(i), {"dty": float(DTY[i]), "dtz": float(DTZ[i])}, {},
                 {"eiger": frames[i]})


def read_layout(path) -> dict:
    """The file as the issue's layout describes it, read with plain h5py."""
    with h5py.File(path, "r") as f:
        assert f.attrs["h5rw_version"] == "0.1"
        meta = f["meta"]
        assert meta.attrs["type"] == "dict" and f["chunks"].attrs["type"] == "dict"
        m = {}
        for k in meta:
            v = meta[k]
            m[k] = None if v.attrs["type"] == "None" else v[()]
            if isinstance(m[k], bytes):
                m[k] = m[k].decode()
        chunks = [f["chunks"][str(i)] for i in range(len(f["chunks"]))]
        return {"meta": m, "sizes": [len(c["data"]) for c in chunks],
                **{k: np.concatenate([c[k][()] for c in chunks]) if chunks else None
                   for k in ("data", "indices", "positions", "weights")},
                "types": {k: chunks[0][k].attrs["type"] for k in chunks[0]} if chunks else {}}


def test_chunks_meta_and_every_field(tmp_path):
    frames, _, _ = sim_scan("uint16")
    mask = np.zeros((64, 64), np.uint8)
    mask[10:12, :] = 1
    np.save(tmp_path / "mask.npy", mask)
    runner = ScanRunner(config(tmp_path, 'mask = "mask.npy"'), output_dir=tmp_path / "out")
    runner.handle(encode(start()))
    for i in range(32):
        runner.handle(encode(point(i, frames)))
    runner.handle(encode(End("ptycho", "success", 32)))
    runner.close()
    assert runner.results[0]["status"] == "success"
    got = read_layout(tmp_path / "out" / "ptycho.ptyd")
    m = got["meta"]
    assert m["num_frames"] == 32 and m["label"] == "" and m["propagation"] == "farfield"
    assert list(m["shape"]) == [64, 64] and list(m["center"]) == [32.0, 32.0]
    assert m["energy"] == 17.0 and m["distance"] == 5.0 and list(m["psize"]) == [75e-6] * 2
    assert isinstance(m["version"], str)
    assert got["sizes"] == [16, 16]
    assert got["types"] == {"data": "array", "indices": "arraylist", "positions": "array",
                            "weights": "array"}
    assert np.array_equal(got["data"], np.stack([f[CROP] for f in frames]))
    assert np.array_equal(got["indices"], np.arange(32))
    assert np.allclose(got["positions"], np.stack([DTY, DTZ], 1) * 1e-6)
    assert np.array_equal(got["weights"], np.broadcast_to(1.0 - mask, (32, 64, 64)))


def test_a_file_being_written_shows_its_chunks_so_far_and_open_ended_follows(tmp_path):
    frames, _, _ = sim_scan("uint16")
    runner = ScanRunner(config(tmp_path), output_dir=tmp_path / "out")
    runner.handle(encode(start(None)))
    path = tmp_path / "out" / "ptycho.ptyd"
    seen = []
    for i in range(32):
        runner.handle(encode(point(i, frames)))
        runner.pump()
        got = read_layout(path)  # opens between two writes, as ptypy polls it
        seen.append((sum(got["sizes"]), got["meta"]["num_frames"]))
    runner.handle(encode(End("ptycho", "success", 27)))
    runner.close()
    # inline workers: each point is written as it arrives; a chunk per 16 points
    assert seen[14] == (0, None)  # open-ended: not known before the first chunk
    assert seen[15] == (16, 16) and seen[30] == (16, 16) and seen[31] == (32, 32)
    assert read_layout(path)["meta"]["num_frames"] == 32


def test_a_scan_that_ends_short_says_how_many_frames_it_has(tmp_path):
    frames, _, _ = sim_scan("uint16")
    runner = ScanRunner(config(tmp_path), output_dir=tmp_path / "out")
    runner.handle(encode(start(32)))
    for i in range(20):
        runner.handle(encode(point(i, frames)))
    runner.handle(encode(End("ptycho", "abort", 20, "stopped")))
    runner.close()
    got = read_layout(tmp_path / "out" / "ptycho.ptyd")
    assert got["sizes"] == [16, 4] and got["meta"]["num_frames"] == 20


def test_export_from_a_finished_run_equals_the_live_file(tmp_path):
    frames, _, _ = sim_scan("uint16")
    runner = ScanRunner(config(tmp_path), output_dir=tmp_path / "out")
    runner.handle(encode(start()))
    for i in [*range(10), *range(11, 32)]:  # point 10 never comes: missing
        runner.handle(encode(point(i, frames)))
    runner.handle(encode(End("ptycho", "success", 32)))
    runner.close()
    out = tmp_path / "export.ptyd"
    done = subprocess.run([sys.executable, "-m", "stream.cli", "export",
                           str(tmp_path / "out" / "ptycho.h5"), "--format", "ptyd",
                           "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "31 frames (ptyd)" in done.stdout
    live, exported = read_layout(tmp_path / "out" / "ptycho.ptyd"), read_layout(out)
    assert exported["meta"]["num_frames"] == 31 == live["meta"]["num_frames"]
    for key in ("data", "indices", "positions", "weights"):
        assert np.array_equal(live[key], exported[key]), key
    assert 10 not in exported["indices"]


def test_export_of_a_run_without_ptyd_node_says_why(tmp_path):
    frames, motors, counters = sim_scan("uint16")
    runner = ScanRunner(Config.load(CONFIGS / "simulated.toml"), output_file=tmp_path / "s.h5")
    runner.handle(encode(Start("s", {"eiger": DetectorInfo((128, 160), "uint16")},
                               ["omega"], ["monitor"], 2)))
    for i in range(2):
        runner.handle(encode(Point("s", i, 0.0, motors[i], counters[i], {"eiger": frames[i]})))
    runner.handle(encode(End("s", "success", 2)))
    runner.close()
    from stream.offline.export import export

    with pytest.raises(ValueError, match="no ptyd outputs"):
        export(tmp_path / "s.h5", "ptyd", tmp_path / "x.ptyd")
