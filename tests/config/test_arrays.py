"""The arrays a config names: a file that is not what the key needs is a ConfigError
naming the node, the key and the file (exit 2), never a traceback; an array of the wrong
number of dimensions is refused with its shape, not its numbers."""

from __future__ import annotations

import subprocess
import sys

import fabio
import fabio.cbfimage
import fabio.edfimage
import h5py
import numpy as np
import pytest

from stream.config.base import ConfigError
from stream.config.schema import Config
from tests.support.files import write_bliss

PEAKS = "[[node]]\nkind = 'threshold'\n[[node]]\nkind = 'label'\n[[node]]\nkind = 'properties'\n"


def build(tmp_path, key_value: str, kind: str = "correct"):
    (tmp_path / "c.toml").write_text(f"[[node]]\nkind = '{kind}'\n{key_value}\n" + PEAKS)
    return Config.load(tmp_path / "c.toml").build_nodes()


def test_a_group_named_as_a_dataset(tmp_path):
    """In a Bliss / NeXus file a dark is often an NXdata group: h5py's TypeError
    ('Accessing a group is done with bytes or str') came out as a traceback."""
    with h5py.File(tmp_path / "cal.h5", "w") as f:
        f["entry/dark/data"] = np.zeros((4, 5), np.float32)
    with pytest.raises(ConfigError, match=r"c.toml: \[\[node\]\] #1 \(correct\): dark: .*cal.h5"
                                          r"::/entry/dark is a group, not a dataset"):
        build(tmp_path, "dark = 'cal.h5::/entry/dark'")
    assert build(tmp_path, "dark = 'cal.h5::/entry/dark/data'")[0].dark.shape == (4, 5)


@pytest.mark.parametrize("content", ["text", "objects", "truncated"])
def test_a_npy_that_is_not_numbers(tmp_path, content):
    path = tmp_path / "dark.npy"
    if content == "text":
        path.write_text("1 2 3\n4 5 6\n")
    elif content == "objects":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    else:
        np.save(path, np.zeros((4, 5)))
        path.write_bytes(path.read_bytes()[:90])
    with pytest.raises(ConfigError, match=r"\(correct\): dark: .*dark.npy is not a numpy "
                                          r".npy file of numbers"):
        build(tmp_path, "dark = 'dark.npy'")


def test_strings_are_not_numbers(tmp_path):
    np.save(tmp_path / "mask.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ConfigError, match=r"mask: .*mask.npy holds <U1 values, not numbers"):
        build(tmp_path, "mask = 'mask.npy'")
    with h5py.File(tmp_path / "cal.h5", "w") as f:
        f["names"] = [b"x", b"y"]
    with pytest.raises(ConfigError, match=r"cal.h5::/names holds object values, not numbers"):
        build(tmp_path, "mask = 'cal.h5::/names'")


@pytest.mark.parametrize("kind, key", [("correct", "dark"), ("correct", "flat"),
                                       ("correct", "mask"), ("threshold", "cut_map")])
def test_a_3d_array_is_refused_by_its_shape(tmp_path, kind, key):
    np.save(tmp_path / "stack.npy", np.full((2, 128, 160), 3.17, np.float32))
    with pytest.raises(ConfigError) as err:
        build(tmp_path, f"{key} = 'stack.npy'", kind)
    text = str(err.value)
    assert f"{key} must be a 2D array" in text and "shape (2, 128, 160) (float32)" in text
    assert "3.17" not in text and len(text) < 300


@pytest.mark.system
def test_the_command_line_exits_2_with_the_reason(tmp_path):
    with h5py.File(tmp_path / "cal.h5", "w") as f:
        f.create_group("entry")
    frames = np.zeros((3, 16, 16), np.uint16)
    write_bliss(tmp_path / "x.h5", frames, np.arange(3.0), np.ones(3))
    (tmp_path / "c.toml").write_text("[[node]]\nkind = 'correct'\ndark = 'cal.h5::/entry'\n"
                                     + PEAKS)
    done = subprocess.run([sys.executable, "-m", "stream.cli", "replay", str(tmp_path / "x.h5"),
                           "--images", "/1.1/measurement/eiger",
                           "--config", str(tmp_path / "c.toml"), "--output",
                           str(tmp_path / "o.h5")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "is a group, not a dataset" in done.stderr and "Traceback" not in done.stderr


def test_single_frame_edf_and_cbf_files_are_arrays(tmp_path):
    """What `peakstream stats --output dark.edf` writes (or a Lima EDF / CBF saving) was
    refused: 'neither a .npy file nor FILE.h5::/dataset'."""
    dark = np.arange(20, dtype=np.float32).reshape(4, 5)
    fabio.edfimage.EdfImage(data=dark, header={"note": "a dark"}).write(str(tmp_path / "d.edf"))
    fabio.cbfimage.CbfImage(data=dark.astype(np.int32)).write(str(tmp_path / "m.cbf"))
    node = build(tmp_path, "dark = 'd.edf'\nmask = 'm.cbf'")[0]
    np.testing.assert_array_equal(node.dark, dark)
    np.testing.assert_array_equal(node.mask, dark != 0)


def test_an_edf_of_several_frames_or_none_is_refused(tmp_path):
    stack = fabio.edfimage.EdfImage(data=np.zeros((4, 5), np.float32))
    stack.append_frame(data=np.ones((4, 5), np.float32))
    stack.write(str(tmp_path / "darks.edf"))
    with pytest.raises(ConfigError, match=r"\(correct\): dark: .*darks.edf holds 2 frames, "
                                          r"not one image \(make one, e.g. their median"):
        build(tmp_path, "dark = 'darks.edf'")
    (tmp_path / "text.edf").write_text("not an EDF\n")
    with pytest.raises(ConfigError, match=r"\(correct\): dark: cannot read .*text.edf"):
        build(tmp_path, "dark = 'text.edf'")
