"""Bliss master files given without --images: the frames their scan entries hold
(`stream.sources.files.bliss`), taken when they are one detector's, refused naming them
when they are several detectors'."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stream.sources.files import default_images, recordings
from tests.support.files import frames, monitors, omegas, write_bliss


def test_links_and_virtual_datasets_to_the_same_frames_are_one(tmp_path):
    """Links (soft, external) and a virtual dataset of the same sources are the same
    frames; a dangling link is passed over."""
    lima = tmp_path / "eiger_0000.h5"
    with h5py.File(lima, "w") as f:
        f["entry_0000/measurement/data"] = np.stack(frames()[:3])
    layout = h5py.VirtualLayout((3, *frames()[0].shape), dtype="uint16")
    layout[:] = h5py.VirtualSource(lima.name, "entry_0000/measurement/data",
                                   shape=(3, *frames()[0].shape))
    with h5py.File(tmp_path / "RAW_0001.h5", "w") as f:
        f["1.1/instrument/eiger/data"] = h5py.ExternalLink(lima.name,
                                                           "/entry_0000/measurement/data")
        f["1.1/measurement/eiger"] = h5py.SoftLink("/1.1/instrument/eiger/data")
        f["1.1/measurement/gone"] = h5py.ExternalLink("missing.h5", "/data")
        f.create_group("2.1/instrument/eiger").create_virtual_dataset("data", layout)
        f.create_group("2.1/measurement").create_virtual_dataset("eiger", layout)
    images, said = default_images([str(tmp_path / "RAW_0001.h5")])
    assert images == ["measurement/eiger"] and "RAW_0001.h5: no --images given" in said
    assert default_images([str(lima)], images=["/x"]) == (["/x"], "")  # given: as given
    assert default_images([str(lima)]) == (  # no scan entry: its one stack of frames
        ["/entry_0000/measurement/data"], f"{lima}: no --images given: replaying "
        f"/entry_0000/measurement/data (as --images /entry_0000/measurement/data)")
    with pytest.raises(ValueError, match=r"eiger_0000.h5: .*--images .*its 3D datasets"):
        recordings([str(lima)])  # the images not given (as default_images gives them)
    with h5py.File(lima, "a") as f:
        f["entry_0000/instrument/eiger/data"] = h5py.SoftLink("/entry_0000/measurement/data")
        f["entry_0000/dark"] = np.stack(frames()[:2])  # other frames: not guessed
    with pytest.raises(ValueError, match=r"eiger_0000.h5: holds 2 stacks of frames \("
                       r"/entry_0000/dark, /entry_0000/measurement/data\): name the one"):
        default_images([str(lima)])


def test_two_detectors_are_refused_naming_both(tmp_path):
    master = write_bliss(tmp_path / "master.h5", frames()[:4], omegas()[:4], monitors()[:4])
    with h5py.File(master, "a") as f:
        f["2.1/measurement/frelon"] = np.stack(frames()[:4])
    with pytest.raises(ValueError, match=r"master.h5: its scan entries hold the frames of more "
                       r"than one detector: measurement/eiger \(scan entries 1.1\); "
                       r"measurement/frelon \(scan entries 2.1\); name the one to replay "
                       r"with --images measurement/eiger"):
        default_images([str(master)])
    other = write_bliss(tmp_path / "other.h5", frames()[:4], omegas()[:4], monitors()[:4])
    with h5py.File(other, "a") as f:  # two detectors in one entry
        f["1.1/instrument/frelon/data"] = np.stack(frames()[:4])
    with pytest.raises(ValueError, match=r"instrument/frelon/data \(scan entries 1.1\)"):
        default_images([str(other)])
    with pytest.raises(ValueError, match=r"different detectors: measurement/eiger in .*a.h5; "
                       r"measurement/frelon in .*b.h5"):
        default_images([str(write_bliss(tmp_path / "a.h5", frames()[:4], omegas()[:4],
                                        monitors()[:4])), str(_frelon(tmp_path / "b.h5"))])


def _frelon(path):
    with h5py.File(path, "w") as f:
        f["1.1/measurement/frelon"] = np.stack(frames()[:4])
    return path
