"""The frame assembler of the blissdata source over real Lima-layout HDF5 files, its
clock given (`ready(now)`): a file that never comes costs one frame_timeout."""

from __future__ import annotations

import types

import numpy as np

from stream.sources.blissdata.frames import Assembler
from tests.support.bliss import DATA_PATH, write_lima_file


def ref(path, index: int) -> types.SimpleNamespace:
    """A reference as blissdata's Lima stream gives it."""
    return types.SimpleNamespace(format="hdf5", file_path=str(path), data_path=DATA_PATH,
                                 index=index)


def test_a_lost_file_makes_all_its_frames_bad_after_one_timeout(tmp_path):
    """The timeout ran per frame: a lost file of 4 frames stalled the scan 4 timeouts."""
    stack = np.arange(4 * 6, dtype=np.uint16).reshape(4, 2, 3)
    write_lima_file(tmp_path / "f0.h5", stack)  # f1.h5 never reaches the disk
    asm = Assembler(["omega"], [], frame_timeout=10.0)
    asm.values("omega", np.arange(12.0))
    for i in range(12):
        asm.frame(i, ref(tmp_path / f"f{i // 4}.h5", i % 4))
    write_lima_file(tmp_path / "f2.h5", stack)
    got = asm.ready(now=0.0)
    assert [i for i, *_ in got] == [0, 1, 2, 3] and np.array_equal(got[1][1], stack[1])
    assert asm.ready(now=9.0) == [] and asm.waiting()
    late = asm.ready(now=10.5)  # f1's first frame timed out: its others are bad at once
    assert [i for i, *_ in late] == list(range(4, 12))
    for i, frame, motors, _ in late[:4]:
        assert isinstance(frame, str) and f"frame {i}: " in frame
        assert "f1.h5 not readable within 10 s" in frame and motors == {"omega": float(i)}
    assert all(isinstance(f, np.ndarray) for _, f, *_ in late[4:])
