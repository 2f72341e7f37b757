"""Stats over frames: every image equals numpy's over the stack, in memory and spilled
to disk in row bands; point ranges, bad frames, the output files and the command."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest

from stream.cli.main import main
from stream.cli.stats import add_parser
from stream.config.arrays import load_array
from stream.offline.stats import (
    FrameStats,
    frame_stats,
    parse_points,
    recording_frames,
    write_stats,
)
from stream.store.reader import load, summary
from tests.support.files import corrected_chain, same, write_lima

QS = [0.0, 10.0, 50.0, 97.5, 100.0]


def stack(n: int = 13, shape=(37, 23), dtype=np.uint16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100, 30, (n, *shape)).astype(dtype)
    return rng.poisson(50, (n, *shape)).astype(dtype)


def expected(frames: np.ndarray) -> dict[str, np.ndarray]:
    out = {"mean": frames.mean(axis=0, dtype=np.float64).astype(np.float32),
           "min": frames.min(axis=0), "max": frames.max(axis=0),
           "median": np.median(frames, axis=0).astype(np.float32)}
    for q, v in zip(QS, np.percentile(frames, QS, axis=0), strict=True):
        out[f"percentile_{q:g}"] = v.astype(np.float32)
    return out


def check(images: dict[str, np.ndarray], frames: np.ndarray) -> None:
    want = expected(frames)
    assert set(images) == set(want)
    for name, image in images.items():
        assert image.shape == frames.shape[1:], name
        if name in ("min", "max"):
            assert image.dtype == frames.dtype
            np.testing.assert_array_equal(image, want[name], err_msg=name)
        elif name == "mean":
            np.testing.assert_allclose(image, want[name], rtol=1e-6, err_msg=name)
        else:  # computed in float64 band by band exactly as numpy does over the stack
            np.testing.assert_array_equal(image, want[name], err_msg=name)


STATS = ["mean", "min", "max", "median", "percentile"]


@pytest.mark.parametrize("n", [13, 12])  # odd and even: the median of an even count averages
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_in_memory_equals_numpy(n, dtype):
    frames = stack(n, dtype=dtype)
    images, info = frame_stats(iter(frames), STATS, QS)
    check(images, frames)
    assert info["nframes"] == n and "in memory" in info["method"]


def test_spilled_in_row_bands_equals_numpy(tmp_path):
    frames = stack(17, shape=(41, 29))
    bands = []
    acc = FrameStats(STATS, QS, max_bytes=frames[0].nbytes * 3, spill_dir=tmp_path)
    for f in frames:
        acc.add(f)
    assert acc.band_rows() < frames.shape[1]  # bands smaller than the frame
    assert len(list(tmp_path.iterdir())) == 1  # the frames went to one spill file
    images = acc.images(lambda stage, done, total: bands.append((stage, done, total)))
    acc.close()
    check(images, frames)
    nb = -(-frames.shape[1] // acc.band_rows())
    assert bands[-1] == ("bands", nb, nb) and len(bands) == nb
    assert list(tmp_path.iterdir()) == []  # the spill file is gone


def test_one_row_bands(tmp_path):
    frames = stack(9, shape=(7, 300))
    acc = FrameStats(["median"], max_bytes=1, spill_dir=tmp_path)
    for f in frames:
        acc.add(f)
    assert acc.band_rows() == 1
    np.testing.assert_array_equal(acc.images()["median"],
                                  np.median(frames, axis=0).astype(np.float32))
    acc.close()


def test_running_stats_keep_no_frames():
    frames = stack(5)
    acc = FrameStats(["mean", "max"])
    for f in frames:
        acc.add(f)
    assert acc._frames == [] and acc._spill is None
    np.testing.assert_array_equal(acc.images()["max"], frames.max(axis=0))


def test_wrong_shape_is_rejected_and_counted(caplog):
    frames = stack(4)
    images, info = frame_stats([frames[0], np.zeros((5, 5), np.uint16), *frames[1:]],
                               ["max", "median"])
    assert info["rejected"] == 1 and info["nframes"] == 4
    np.testing.assert_array_equal(images["max"], frames.max(axis=0))
    assert "shape (5, 5)" in caplog.text


@pytest.mark.parametrize("bad", [dict(stats=["mode"]), dict(stats=["percentile"]),
                                 dict(stats=["mean"], percentiles=[101.0])])
def test_bad_requests(bad):
    with pytest.raises(ValueError):
        FrameStats(bad["stats"], bad.get("percentiles", ()))


def test_no_frames():
    with pytest.raises(ValueError, match="no frames"):
        frame_stats([], ["mean"])


def test_parse_points():
    assert parse_points("0:100") == (0, 100)
    assert parse_points("5:") == (5, None)
    assert parse_points(":7") == (0, 7)
    assert parse_points(None) == (0, None)
    for text in ("5", "7:3", "a:b", "-1:4"):
        with pytest.raises(ValueError):
            parse_points(text)


def edf_series(tmp_path: Path, frames: np.ndarray) -> str:
    for i, f in enumerate(frames):
        fabio.edfimage.EdfImage(data=f).write(str(tmp_path / f"img_{i:04d}.edf"))
    return str(tmp_path / "img_%04d.edf")


def test_recording_point_range_and_bad_frame(tmp_path):
    frames = stack(12, shape=(16, 20))
    pattern = edf_series(tmp_path, frames)
    (tmp_path / "img_0005.edf").write_bytes(b"{\nDim_1 = 20 ;\n}\ngarbage")  # unreadable
    counts: dict[str, int] = {}
    it, total = recording_frames([pattern], (3, 9), counts=counts)
    images, info = frame_stats(it, ["mean", "median"], total=total)
    assert total == 6 and counts["bad"] == 1 and info["nframes"] == 5
    keep = frames[[3, 4, 6, 7, 8]]
    np.testing.assert_array_equal(images["median"], np.median(keep, axis=0).astype(np.float32))
    np.testing.assert_allclose(images["mean"], keep.mean(axis=0), rtol=1e-6)


def test_recording_hdf5_stack(tmp_path):
    frames = stack(10, shape=(12, 9))
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["entry/data"] = frames
    it, total = recording_frames([f"{tmp_path / 's.h5'}::/entry/data"], parse_points("2:"))
    images, _ = frame_stats(it, ["min", "percentile"], [25.0], total=total)
    assert total == 8
    np.testing.assert_array_equal(images["min"], frames[2:].min(axis=0))
    np.testing.assert_array_equal(images["percentile_25"],
                                  np.percentile(frames[2:], 25.0, axis=0).astype(np.float32))


def test_hdf5_output_loads_as_config_array(tmp_path):
    frames = stack(6)
    images, info = frame_stats(iter(frames), ["median", "max"])
    paths = write_stats(tmp_path / "dark.h5", images, {"inputs": ["a.edf"], "points": "0:6",
                                                       **info})
    assert paths == [f"{tmp_path / 'dark.h5'}::/entry/stats/median",
                     f"{tmp_path / 'dark.h5'}::/entry/stats/max"]
    dark = load_array("dark.h5::/entry/stats/median", tmp_path, "test")
    np.testing.assert_array_equal(dark, np.median(frames, axis=0).astype(np.float32))
    with h5py.File(tmp_path / "dark.h5") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/stats"].attrs["signal"] == "median"
        proc = f["entry/process"]
        assert proc["points"].asstr()[()] == "0:6" and proc["nframes"][()] == 6
        assert "median" in proc["method"].asstr()[()]
        assert list(proc["inputs"].asstr()[()]) == ["a.edf"]


def test_npy_and_edf_outputs(tmp_path):
    frames = stack(5)
    images, _ = frame_stats(iter(frames), ["mean"])
    write_stats(tmp_path / "m.npy", images, {})
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), images["mean"])
    write_stats(tmp_path / "m.edf", images, {"points": ":"})
    with fabio.open(str(tmp_path / "m.edf")) as img:
        np.testing.assert_array_equal(img.data, images["mean"])
        assert img.header["peakstream_stat"] == "mean"
    with pytest.raises(ValueError, match="one image"):
        write_stats(tmp_path / "two.npy", {"a": frames[0], "b": frames[1]}, {})


def command(argv: list[str]) -> int:
    top = argparse.ArgumentParser(prog="peakstream")
    add_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(argv)
    return args.func(args)


def test_command(tmp_path, capsys):
    frames = stack(8, shape=(10, 14))
    pattern = edf_series(tmp_path, frames)
    out = tmp_path / "dark.h5"
    rc = command(["stats", pattern, "--stat", "median", "max", "--percentile", "10",
                  "--points", "0:6", "--output", str(out), "--memory", "0.0001"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "bands" in err and "frames" in err and "6 frames" in err  # the progress bar
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["entry/stats/median"][()],
                                      np.median(frames[:6], axis=0).astype(np.float32))
        np.testing.assert_array_equal(
            f["entry/stats/percentile_10"][()],
            np.percentile(frames[:6], 10, axis=0).astype(np.float32))
        assert sorted(f["entry/stats"]) == ["max", "median", "percentile_10"]
    assert command(["stats", str(tmp_path / "nothing_*.edf"), "--output",
                    str(tmp_path / "x.h5")]) == 2
    assert command(["stats", pattern, "--points", "9:3", "--output",
                    str(tmp_path / "x.h5")]) == 2
    assert not os.path.exists(tmp_path / "x.h5")


def test_an_edf_dark_from_stats_is_used_by_a_replay(tmp_path):
    """`stats --output dark.edf` wrote what a config could not load ('neither a .npy file
    nor FILE.h5::/dataset'): a replay with that dark now equals one with numpy's median
    of the dark series as .npy, and the file records the image's sha256."""
    darks = stack(7, shape=(128, 160), seed=4) // 3
    assert main(["stats", edf_series(tmp_path, darks), "--stat", "median", "--output",
                 str(tmp_path / "dark.edf"), "--quiet"]) == 0
    median = np.median(darks, axis=0).astype(np.float32)
    np.save(tmp_path / "dark.npy", median)
    scan = tmp_path / "scan.h5"
    assert main(["simulate", "--output", str(scan), "--points", "20", "--shape", "128", "160",
                 "--spots", "6", "--quiet"]) == 0
    tables = {}
    for name in ("dark.edf", "dark.npy"):
        (tmp_path / f"{name}.toml").write_text(corrected_chain(dark=name))
        out = tmp_path / f"{name}.h5"
        assert main(["replay", str(scan), "--config", str(tmp_path / f"{name}.toml"),
                     "--output", str(out), "--quiet"]) == 0
        tables[name] = load(out)
    same(tables["dark.edf"], tables["dark.npy"])
    dark, = summary(tmp_path / "dark.edf.h5")["calibration"]["files"]
    head = f"{median.dtype.str} {median.shape}".encode()
    assert dark["sha256"] == hashlib.sha256(head + median.tobytes()).hexdigest()


def test_a_lima_dark_series_without_a_dataset_path(tmp_path, capsys):
    """A dark series saved by Lima (one HDF5 file, /entry_0000/measurement/data) asked for
    --images FILE::/path; its frames are found as a replay finds them, and said so."""
    darks = stack(9, shape=(16, 20), seed=2)
    lima = write_lima(tmp_path / "dark_0000.h5", darks)
    assert command(["stats", str(lima), "--stat", "median", "--output",
                    str(tmp_path / "dark.npy"), "--quiet"]) == 0
    assert f"{lima}: no FILE::/path given: taking /entry_0000/measurement/data" in \
        capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "dark.npy"),
                                  np.median(darks, axis=0).astype(np.float32))
