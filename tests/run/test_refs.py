"""Frames by reference (issue #13): off by default; when on, only regular files below the
allowed directories, the size checked before reading."""

from __future__ import annotations

import os
from collections import OrderedDict

import h5py
import numpy as np
import pytest

from stream.config.schema import Config
from stream.core.messages import DetectorInfo, End, FrameRef, MessageError, Point, Start
from stream.run.refs import open_regular, read_ref, resolve_ref
from stream.run.runner import ScanRunner
from stream.store.reader import load
from stream.wire.codec import encode

SHAPE = (16, 20)


@pytest.fixture
def files(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    frames = np.arange(2 * SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(2, *SHAPE)
    with h5py.File(refs / "frames.h5", "w") as f:
        f["data"] = frames
        f["big"] = np.zeros((1000, 1000), np.uint16)
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = frames
    os.symlink(secret, refs / "link.h5")
    os.symlink(tmp_path, refs / "up")
    os.mkfifo(refs / "fifo.h5")
    return refs, frames


def test_a_reference_reads_one_frame_below_ref_dirs(files):
    refs, frames = files
    cache: OrderedDict = OrderedDict()
    got = read_ref(FrameRef("frames.h5", "/data", 1), [refs], 1 << 20, cache)
    assert np.array_equal(got, frames[1])
    got = read_ref(FrameRef(str(refs / "frames.h5"), "/data", 0), [refs], 1 << 20, cache)
    assert np.array_equal(got, frames[0]) and len(cache) == 1


@pytest.mark.parametrize("ref, words", [
    (FrameRef("link.h5", "/data", 0), "not below the allowed directories"),
    (FrameRef("up/secret.h5", "/data", 0), "not below the allowed directories"),
    (FrameRef("../secret.h5", "/data", 0), "not below the allowed directories"),
    (FrameRef("/etc/passwd", "/data", 0), "not below the allowed directories"),
    (FrameRef("fifo.h5", "/data", 0), "not a regular file"),
    (FrameRef("frames.h5", "/big", None), "more than the configured maximum"),
    (FrameRef("frames.h5", "/data", None), "is 3D"),
    (FrameRef("frames.h5", "/data", 7), "index 7 not in 0..1"),
    (FrameRef("frames.h5", "/nope", 0), "no dataset"),
    (FrameRef("frames.h5", None, 0), "only HDF5 references"),
])
def test_references_that_are_refused(files, ref, words):
    refs, _ = files
    with pytest.raises(MessageError, match=words):
        read_ref(ref, [refs], 1 << 20, OrderedDict())


def test_a_fifo_is_never_opened_for_reading(files):
    refs, _ = files
    with pytest.raises(MessageError, match="not a regular file"):
        open_regular(resolve_ref("fifo.h5", [refs]))  # returns at once, no writer needed


def run_scan(config: Config, tmp_path, frame) -> dict:
    runner = ScanRunner(config, output_dir=tmp_path / "out")
    start = Start("s", {"det": DetectorInfo(SHAPE, "uint16")}, ["omega"], [], 2,
                  {"kind": "sweep", "fast": "omega"})
    runner.handle(encode(start))
    runner.handle(encode(Point("s", 0, 1.0, {"omega": 0.0}, {}, {"det": frame})))
    runner.handle(encode(Point("s", 1, 1.0, {"omega": 1.0}, {},
                               {"det": np.zeros(SHAPE, np.uint16)})))
    runner.handle(encode(End("s", "success", 2)))
    runner.close()
    return load(tmp_path / "out" / "s.h5")


def test_references_are_off_by_default(files, tmp_path):
    refs, _ = files
    t = run_scan(Config({}), tmp_path, FrameRef(str(refs / "frames.h5"), "/data", 0))
    assert t["points"]["status"].tolist() == [2, 0]  # bad, with the reason
    assert any("frame references are off" in m for m in t["events"]["message"])


def test_references_when_allowed(files, tmp_path):
    refs, _ = files
    config = Config({"source": {"allow_refs": True, "ref_dirs": [str(refs)]}})
    t = run_scan(config, tmp_path, FrameRef("frames.h5", "/data", 0))
    assert t["points"]["status"].tolist() == [0, 0]
