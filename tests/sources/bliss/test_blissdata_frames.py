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


def test_a_file_lima_still_fills_is_waited_for_without_a_timeout(tmp_path):
    """Lima gives references for frames acquired, not saved: the timeout ran from the
    first failed read of a file still open for writing, so a pause (a refill) or a slow
    scan longer than frame_timeout while Lima filled one file made its frames bad. The
    timeout runs once the file is due: a later file has frames, or the scan is sealed."""
    stack = np.arange(4 * 6, dtype=np.uint16).reshape(4, 2, 3)
    asm = Assembler(["omega"], [], frame_timeout=10.0)
    asm.values("omega", np.arange(8.0))
    for i in range(3):  # f0.h5's first 3 frames acquired, the file not yet written
        asm.frame(i, ref(tmp_path / "f0.h5", i))
    assert asm.ready(now=0.0) == [] and asm.ready(now=100.0) == []  # a long pause
    asm.frame(3, ref(tmp_path / "f0.h5", 3))
    assert asm.ready(now=200.0) == []
    write_lima_file(tmp_path / "f0.h5", stack)  # Lima closes it
    got = asm.ready(now=201.0)
    assert [i for i, *_ in got] == [0, 1, 2, 3]
    assert all(np.array_equal(f, stack[i]) for i, f, *_ in got)
    # f1.h5 gets frames, then Lima goes on to f2.h5 and f1.h5 never comes: f1 is due,
    # one timeout from its first failed read as due
    for i in range(4, 8):
        asm.frame(i, ref(tmp_path / "f1.h5", i % 4))
    assert asm.ready(now=300.0) == []  # f1.h5 is the newest file: not due
    asm.frame(8, ref(tmp_path / "f2.h5", 0))
    assert asm.ready(now=301.0) == [] and asm.waiting()
    late = asm.ready(now=311.5)
    assert [i for i, *_ in late] == [4, 5, 6, 7]
    assert all(isinstance(f, str) and "f1.h5 not readable within 10 s" in f
               for _, f, *_ in late)


def test_a_sealed_scan_makes_its_last_file_due(tmp_path):
    asm = Assembler([], [], frame_timeout=10.0)
    asm.frame(0, ref(tmp_path / "f0.h5", 0))
    assert asm.ready(now=0.0, final=True) == []  # the timer starts: the scan is sealed
    late = asm.ready(now=10.5, final=True)
    assert [i for i, *_ in late] == [0] and "not readable within 10 s" in late[0][1]
