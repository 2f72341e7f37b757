"""Atomic checkpoints: the disk holds the last commit whatever happens after it, a
commit cut short reads through its journal, and state round-trips through the file."""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from stream.core.item import PEAK_COLUMNS, SparseFrame, clique_columns
from stream.core.messages import DetectorInfo, Start
from stream.core.scan import Scan
from stream.store.checkpoint import JournaledFile, open_h5
from stream.store.journal import apply_records, journal_path, read_journal, recover, write_journal
from stream.store.scanfile import ScanStore
from stream.store.state import read_state, write_state
from tests.support.paths import ROOT


def h5_through(path, create=True) -> tuple[JournaledFile, h5py.File]:
    jf = JournaledFile(path, create=create)
    return jf, h5py.File(jf, "w" if create else "r+")


def grow(f: h5py.File, n0: int, n1: int) -> None:
    """Append rows n0..n1 to a few columns (numbers and strings) and late-assign one."""
    for name in ("a", "s"):
        if name not in f:
            f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(64,),
                             dtype="int64" if name == "a" else h5py.string_dtype())
        f[name].resize((n1,))
    f["a"][n0:n1] = np.arange(n0, n1)
    f["s"][n0:n1] = [f"row {i}" for i in range(n0, n1)]
    if n0:
        f["a"][n0 // 2] = n0 // 2  # an earlier row written again
    f.attrs["rows"] = n1


def rows(f: h5py.File) -> int:
    n = int(f.attrs["rows"])
    assert f["a"][()].tolist() == list(range(n))
    assert f["s"].asstr()[()].tolist() == [f"row {i}" for i in range(n)]
    return n


def test_disk_keeps_the_last_commit_until_the_next(tmp_path):
    path = tmp_path / "f.h5"
    jf, f = h5_through(path)
    grow(f, 0, 100)
    f.flush()
    jf.commit()
    committed = path.read_bytes()
    for n in range(100, 1000, 150):  # the library writes, evicts, flushes ...
        grow(f, n, n + 150)
        f.flush()
    disk = path.read_bytes()
    assert disk[:len(committed)] == committed  # not one committed byte changed
    with h5py.File(path, "r") as g:  # plain h5py reads the last commit
        assert rows(g) == 100
    assert rows(f) == 1000  # while the writer reads what it wrote
    jf.commit()
    f.close()
    jf.commit()
    jf.close()
    with h5py.File(path, "r") as g:
        assert rows(g) == 1000
    assert not journal_path(path).exists()


def test_commit_cut_short_reads_through_its_journal(tmp_path):
    path = tmp_path / "f.h5"
    jf, f = h5_through(path)
    grow(f, 0, 300)
    f.flush()
    jf.commit()
    grow(f, 300, 700)
    f.flush()
    # commit() step by step, dying after the journal is in place and half applied
    records = jf._records()
    assert records, "a commit rewrites bytes of the last one (superblock, headers)"
    tmp = journal_path(path).with_suffix(".journal.tmp")
    write_journal(tmp, jf.boundary, jf.size, records, False)
    half = list(reversed(records))[:max(1, len(records) // 2)]
    # 1. the journal written but not renamed: it never happened
    with open_h5(path) as g:
        assert rows(g) == 300
    os.replace(tmp, journal_path(path))
    # 2. renamed, half of it applied: readers see the new commit through it
    apply_records(jf.fd, half, jf.size)
    fds = len(os.listdir("/proc/self/fd"))
    with open_h5(path) as g:
        assert rows(g) == 700
    assert len(os.listdir("/proc/self/fd")) == fds  # the reader's file went with it
    assert path.stat().st_size > 0 and journal_path(path).exists()  # nothing changed
    # 3. recover() applies it for good; plain h5py then reads the new commit
    jf.discard("the process died")
    f.close()
    jf.close()
    assert recover(path) and not journal_path(path).exists()
    with h5py.File(path, "r") as g:
        assert rows(g) == 700


def test_damaged_or_unfinished_journals_are_ignored(tmp_path):
    path = tmp_path / "f.h5"
    jf, f = h5_through(path)
    grow(f, 0, 50)
    f.close()
    jf.commit()
    jf.close()
    j = journal_path(path)
    write_journal(j, 10, 20, [(1, 0, b"garbage!")], False)
    raw = j.read_bytes()
    j.write_bytes(raw[:-3])  # cut short: no complete trailer
    assert read_journal(j) is None
    j.write_bytes(raw[:30] + b"X" + raw[31:])  # a flipped byte: bad checksum
    assert read_journal(j) is None
    with open_h5(path) as g:
        assert rows(g) == 50
    assert not recover(path) and not j.exists()
    with h5py.File(path, "r") as g:
        assert rows(g) == 50


def test_shrinking_below_the_commit_takes_effect_at_the_next(tmp_path):
    """Raw bytes: a truncate below the commit, then writes that grow the file again."""
    path = tmp_path / "raw"
    jf = JournaledFile(path, create=True)
    jf.write(bytes(range(256)) * 64)  # 16 kB
    jf.commit()
    jf.truncate(1000)
    assert path.stat().st_size == 16384  # the commit is intact on disk
    jf.seek(0, os.SEEK_END)
    jf.write(b"\x07" * 5000)  # 1000..6000, over bytes of the commit: zero then these
    jf.seek(9000)
    jf.write(b"\x09" * 100)  # beyond the new end: 6000..9000 reads as zeros
    want = (bytes(range(256)) * 4)[:1000] + b"\x07" * 5000 + bytes(3000) + b"\x09" * 100
    jf.seek(0)
    assert jf.read(9100) == want
    assert path.read_bytes() == bytes(range(256)) * 64
    jf.commit()
    assert path.read_bytes() == want
    jf.close()


@pytest.mark.system
def test_stores_killed_while_being_made_never_leave_a_half_file(tmp_path):
    """ScanStore makes its file under a hidden name and publishes it complete: kill a
    process that makes store after store, every visible file opens."""
    code = ("import sys\n"
            "from stream.store.scanfile import ScanStore\n"
            "print('go', flush=True)\n"
            "for i in range(100000):\n"
            f"    st = ScanStore({str(tmp_path)!r} + f'/scan{{i}}.h5', scan_id='x',"
            " detector='d', motors=[], counters=[], peak_columns={},"
            " clique_columns={'clique_id': 'int64'})\n"
            "    st.close('success')\n"
            "    print(i, flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"go\n"
        for i in range(4):  # counted, not timed: killed while it makes the fifth or later
            assert proc.stdout.readline() == f"{i}\n".encode()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    made = sorted(tmp_path.glob("scan*.h5"))
    assert len(made) > 3
    for path in made:
        with h5py.File(path, "r") as f:
            assert f["entry"].attrs["status"] in ("running", "success")
    assert len(list(tmp_path.glob(".scan*.part"))) <= 1  # the one being made, hidden


@pytest.mark.system
def test_store_left_open_at_exit_keeps_its_last_checkpoint(tmp_path):
    code = ("from stream.store.scanfile import ScanStore\n"
            f"st = ScanStore({str(tmp_path / 'scan.h5')!r}, scan_id='x', detector='d',"
            " motors=['omega'], counters=[], peak_columns={}, clique_columns={'clique_id':"
            " 'int64'})\n"
            "row = {'point_id': [0], 'time': [0.0], 'status': [0], 'flags': [''],"
            " 'motors/omega': [1.0]}\n"
            "st.points.append(row)\n"
            "st.checkpoint({'linked': 1}, {'collector': {'next_point': 1}})\n"
            "st.points.append({**row, 'point_id': [1]})\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        assert f["entry/points/point_id"][()].tolist() == [0]
        assert f["entry/process/counters"].attrs["linked"] == 1
        assert read_state(f["entry/process/checkpoint"]) == {"collector": {"next_point": 1}}


# ------------------------------------------------------------------ state

def test_state_round_trip_keeps_types_and_bits(tmp_path):
    state = {"kind": "linker", "version": 1, "finished": False, "ratio": 0.1,
             "nan": float("nan"), "big": 2**62 + 1, "empty": np.empty(0, np.int64),
             "arrays": {"f4": np.array([1.5, -0.0, np.inf], np.float32),
                        "u2": np.arange(7, dtype=np.uint16), "b": np.array([True, False]),
                        "m": np.arange(12.0).reshape(3, 4), "scalar": np.float64(2.5)}}
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_state(f, state)
        write_state(f, {**state, "arrays": {**state["arrays"], "u2": np.arange(3, dtype="u2")}})
        got = read_state(f)
    assert got.keys() == state.keys()
    assert got["arrays"]["u2"].tolist() == [0, 1, 2]
    for k in ("kind", "version", "finished", "ratio", "big"):
        assert got[k] == state[k] and type(got[k]) is type(state[k])
    assert np.isnan(got["nan"]) and got["arrays"]["scalar"] == 2.5
    for k in ("f4", "b", "m"):
        a, b = got["arrays"][k], state["arrays"][k]
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert got["empty"].dtype == np.int64 and got["empty"].shape == (0,)
    with h5py.File(tmp_path / "t.h5", "w") as f, pytest.raises(TypeError, match="numeric"):
        write_state(f, {"bad": np.array(["x"])})


def _scan(npoints: int) -> Scan:
    return Scan.from_start(Start("s", {"d": DetectorInfo((8, 8), "uint16")}, motors=["omega"],
                                 npoints=npoints))


def _frame(i: int) -> tuple[SparseFrame, dict]:
    """A 2-pixel peak that moves one column per point: every point links the last."""
    c = i % 7
    frame = SparseFrame((8, 8), np.array([2, 2], np.uint16), np.array([c, c + 1], np.uint16),
                        np.array([5.0, 6.0], np.float32), np.array([1, 1], np.int32), 1)
    peaks = {k: np.array([1], dt) for k, dt in PEAK_COLUMNS.items()}
    peaks["npx"][:] = 2
    return frame, peaks


def test_linker_state_round_trip_through_the_file(tmp_path):
    """A linker stopped after point 5, its state written to and read from a store's
    checkpoint, restored on a fresh linker: the rest links as if it had never stopped."""
    from nodes.link.linker import Linker

    def run(points, linker):
        out = []
        for i in points:
            frame, peaks = _frame(i)
            r = linker.add_point(i, frame if i != 8 else None, peaks if i != 8 else None,
                                 {"omega": float(i)})
            out.append((r.overlaps, r.cliques))
        r = linker.finish()
        return out, r.cliques

    ref = Linker()
    ref.setup(_scan(12))
    want = run(range(12), ref)
    first = Linker()
    first.setup(_scan(12))
    for i in range(6):
        frame, peaks = _frame(i)
        first.add_point(i, frame, peaks, {"omega": float(i)})
    store = ScanStore(tmp_path / "scan.h5", scan_id="s", detector="d", motors=["omega"],
                      counters=[], peak_columns=PEAK_COLUMNS,
                      clique_columns=clique_columns(["omega"]))
    store.checkpoint({}, {"linker": first.state()})
    store.close_unchanged()
    with open_h5(tmp_path / "scan.h5") as f:
        state = read_state(f["entry/process/checkpoint"])["linker"]
    second = Linker()
    second.setup(_scan(12))
    second.restore(state)
    got = run(range(6, 12), second)
    for (oa, ca), (ob, cb) in zip(want[0][6:], got[0], strict=True):
        for d1, d2 in ((oa, ob), (ca, cb)):
            assert d1.keys() == d2.keys()
            for k in d1:
                assert np.array_equal(d1[k], d2[k], equal_nan=True), k
    for k in want[1]:
        assert np.array_equal(want[1][k], got[1][k], equal_nan=True), k


@pytest.mark.system
def test_one_writer_process_at_a_time(tmp_path):
    path = tmp_path / "f.h5"
    jf, f = h5_through(path)
    grow(f, 0, 10)
    f.flush()
    jf.commit()
    code = f"from stream.store.checkpoint import JournaledFile\nJournaledFile({str(path)!r})\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert "another process is writing this file" in r.stderr
    with h5py.File(path, "r") as g:  # readers are welcome
        assert rows(g) == 10
    f.close()
    jf.close()


def resident_pages(path, offset: int, length: int) -> int:
    """Pages of path[offset:offset + length] in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    a = offset // page * page
    n = (offset + length - a + page - 1) // page
    vec = (ctypes.c_ubyte * n)()
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as mm:
        view = ctypes.c_char.from_buffer(mm)
        try:
            rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(view) + a),
                              ctypes.c_size_t(n * page), vec)
        finally:
            del view
    assert rc == 0, os.strerror(ctypes.get_errno())
    return sum(v & 1 for v in vec)


@pytest.fixture
def on_disk(tmp_path):
    """A directory whose files have a page cache to leave (tmpfs pages never leave):
    tmp_path, or one made (and removed) beside the tests when tmp_path is on tmpfs."""
    with open("/proc/mounts") as fh:
        mounts = [line.split() for line in fh]
    best = max((m for m in mounts if str(tmp_path).startswith(m[1])), key=lambda m: len(m[1]))
    if best[2] != "tmpfs":
        yield tmp_path
        return
    made = Path(tempfile.mkdtemp(dir=ROOT / "tests"))
    yield made
    shutil.rmtree(made)


def test_old_bytes_leave_the_page_cache_and_the_file_reads_whole(on_disk):
    """A scan's bytes leave the page cache a few commits after they were written, so GBs
    written once do not crowd the machine's memory; the newest stay (chunks still
    filling up are read back at each commit), and the file reads whole."""
    path = on_disk / "f.h5"
    jf, f = h5_through(path)
    for k in range(8):
        f.create_dataset(f"d{k}", data=np.full(1 << 18, k, np.float64))  # 2 MiB each
        f.flush()
        os.fsync(jf.fd)  # clean pages: the advice drops them whatever the disk's pace
        jf.commit()
    pages = {k: resident_pages(path, f[f"d{k}"].id.get_offset(), 8 << 18) for k in range(8)}
    # d0 shares its first (large) page-cache folio with the superblock, which every
    # commit rewrites; d1 .. d4, added 3 to 6 commits before the last, are gone but for the pages
    # they share with the metadata next to them; d6 and d7 (the last two) stay
    assert all(pages[k] <= 2 for k in range(1, 5)), pages
    assert pages[6] >= (8 << 18) // mmap.PAGESIZE and pages[7] >= pages[6], pages
    f.close()
    jf.commit()
    jf.close()
    with h5py.File(path, "r") as g:
        for k in range(8):
            assert (g[f"d{k}"][()] == k).all()
