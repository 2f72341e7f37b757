"""Atomic checkpoints of an HDF5 file: its bytes on disk change only at commit.

HDF5 is not crash-safe: a process killed while the library writes (a flush,
or a cache eviction between flushes) can leave B-tree nodes, object headers,
global heaps and the superblock's end-of-allocation out of step. Measured by
SIGKILL at random instants of a writer that appends and flushes: plain HDF5,
2 of 300 files no longer read ("bad heap index", "len not positive after
adjustment for EOA"); SWMR (libver latest, `swmr_mode`), 5 of 150 could not
read rows flushed before the kill ("actual len exceeds EOA"), and a crashed
SWMR file opens only with `swmr=True` ("file is already open for write"
otherwise). So the store writes through `JournaledFile`, a file object for
h5py's "fileobj" driver that sees every byte the library writes:

* the bytes of the last commit (below `boundary`) are never touched between
  commits: writes there are held in memory (and read back by the library as
  written); writes beyond it go straight to disk (the committed file refers
  to none of them);
* `commit()` (after `h5py.File.flush()`) writes the held bytes that differ
  from the disk (the superblock, object headers, B-tree nodes, the new tail
  of a chunk: kB to a few MB) to a redo journal `<file>.journal.tmp`,
  renames it to `<file>.journal` (atomic), applies it in place, truncates
  the file to its new size and removes the journal.

Whatever instant the process dies, the disk holds the last commit, or the
last commit plus a complete journal (killed while it was being applied).
`open_h5` reads a file through its journal when there is one (read-only,
nothing changes on disk); `recover` applies it (a writer reopening the file
does). Plain `h5py.File` reads a crashed file too, except in that short
window. Superblock version 0 (libver "earliest"): no status flags, so a
crashed file is never "already open for write". Measured the same way:
300 of 300 kills of the test writer and 196 of 196 of the scan writer (plus
4 killed before the file existed) read as of their last commit; 1 in about
200 left a journal. Without `durable` the commit survives the process, not
a power cut (the bytes are in the page cache, not yet on the platter).

Each commit also starts the writeback of the bytes it added and lets the page
cache drop those added two commits before (`_release_pages`): a scan writes
GBs once, and in the page cache they would crowd out what the machine needs
(in a container, they count against its memory limit).
"""

from __future__ import annotations

import bisect
import collections
import ctypes
import errno
import fcntl
import logging
import os
import struct
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream.store.journal import (
    DATA,
    ZERO,
    apply_records,
    journal_path,
    pwrite_all,
    read_journal,
    recover,
    unlink_quietly,
    write_journal,
)

log = logging.getLogger(__name__)

_GAP = 4096  # unchanged bytes that split a changed run in two
_KEEP_COMMITS = 3  # the bytes of the last commits stay in the page cache (chunks filling up)


class JournaledFile:
    """A file for h5py's "fileobj" driver whose disk bytes change only in `commit()`."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_NOFOLLOW | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        self.fd = os.open(self.path, flags, 0o666)
        if not readonly:
            try:  # one writer process at a time (a POSIX lock: readers' flock unaffected)
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self.fd)
                raise OSError(errno.EBUSY, "another process is writing this file",
                              str(self.path)) from None
            if not create:
                recover(self.path)
        self.boundary = os.fstat(self.fd).st_size  # the committed bytes
        self.size = self.boundary  # the library's end of file
        self.zero_from = self.boundary  # [zero_from, boundary) reads as zeros (after a shrink)
        self.segs: dict[int, np.ndarray] = {}  # start -> uint8 written below `boundary`
        self._starts: list[int] = []  # sorted starts of `segs`
        self.pos = 0
        self.failed: str | None = None  # set by a failed write: nothing more reaches the disk
        self.commits = 0
        # the boundaries of the last commits: bytes written before the oldest may leave
        # the page cache
        self._kept = collections.deque([self.boundary], maxlen=_KEEP_COMMITS + 1)
        if readonly:
            records = read_journal(journal_path(self.path))
            if records is not None:
                self._overlay(*records)

    # ---------------------------------------------------------- file protocol

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return not self.readonly

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = offset if whence == os.SEEK_SET else (
            self.pos + offset if whence == os.SEEK_CUR else self.size + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = max(self.size - self.pos, 0)
        data = self._read_at(self.pos, n)
        self.pos += n
        return data

    def write(self, data: Any) -> int:
        """The library's write (never raises into it: a failed write marks the file
        failed, keeps the bytes in memory for the library to read back, and commit()
        then refuses)."""
        if self.readonly:
            raise OSError(f"{self.path}: opened read-only")
        mv = memoryview(data).cast("B")
        self._write_at(self.pos, mv)
        self.pos += mv.nbytes
        return mv.nbytes

    def truncate(self, n: int | None = None) -> int:
        n = self.pos if n is None else n
        if self.readonly:
            raise OSError(f"{self.path}: opened read-only")
        if n >= self.boundary:
            self._disk(os.ftruncate, self.fd, n)
        else:  # below the commit: take effect at the next commit
            self._disk(os.ftruncate, self.fd, self.boundary)  # later writes are dead
            self.zero_from = min(self.zero_from, n)
        for s in [s for s in self._starts if s + self.segs[s].shape[0] > n]:
            if s >= n:
                del self.segs[s]
            else:
                self.segs[s] = self.segs[s][:n - s].copy()
        self._starts = [s for s in self._starts if s in self.segs]
        self.size = n
        return n

    def flush(self) -> None:
        """The library's flush: nothing to do (commit() is the durable step)."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a reader's file (open_h5) goes with its h5py handle
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)

    # ---------------------------------------------------------- commit

    def commit(self, durable: bool = False) -> None:
        """Make the bytes written so far the file on disk, atomically (see the module
        docstring). `durable` adds fsyncs (power loss; a killed process needs none)."""
        if self.readonly or self.failed is not None:
            raise OSError(f"{self.path}: cannot commit ({self.failed or 'read-only'})")
        disk = os.fstat(self.fd).st_size
        records = self._records()
        try:
            if records or disk != self.size:
                jpath = journal_path(self.path)
                tmp = Path(f"{jpath}.tmp")
                if durable:
                    os.fsync(self.fd)  # the bytes beyond the boundary first
                write_journal(tmp, self.boundary, self.size, records, durable)
                os.replace(tmp, jpath)
                apply_records(self.fd, records, self.size)
                if durable:
                    os.fsync(self.fd)
                os.unlink(jpath)
        except OSError as exc:
            self.failed = f"commit failed: {exc}"
            unlink_quietly(Path(f"{journal_path(self.path)}.tmp"))
            raise
        self._release_pages()
        self.boundary = self.zero_from = self.size
        self.segs.clear()
        self._starts.clear()
        self.commits += 1

    def _release_pages(self) -> None:
        """Start the writeback of what this commit wrote, and let the page cache drop
        what the commit two before this one added (clean by now), except the byte
        ranges this commit rewrote: a chunk still filling up is read back at each
        commit (a lag of one commit read ~11 kB a frame back from the disk).

        A scan writes GBs once and never reads them: kept in the page cache, they
        crowd out what the machine does need, and where memory is touched for the
        first time (a fresh VM) each new page-cache page costs ~8 us (the checkpoint
        thread's CPU per EIGER2 4M frame 0.5 -> 0.2 ms, tools/bench_stream.py)."""
        _start_writeback(self.fd, self.boundary, self.size - self.boundary)
        self._kept.append(self.size)
        if len(self._kept) <= _KEEP_COMMITS:
            return
        start, stop = self._kept[0], self._kept[1]
        for s in self._starts:  # the held segments, in order: skip each
            end = s + self.segs[s].shape[0]
            if end > start:
                _drop_pages(self.fd, start, min(s, stop))
                start = max(start, end)
        _drop_pages(self.fd, start, stop)

    def discard(self, reason: str) -> None:
        """Nothing more reaches the disk (later writes are held in memory), so the disk
        keeps the last commit and the library can still close its handle."""
        self.failed = self.failed or reason

    def give_back(self) -> None:
        """After a failure: free the disk space of the bytes written beyond the last
        commit (dead: the disk keeps that commit), so that a full disk has room for the
        file's final status; not while a journal of a commit under way needs them."""
        if self.failed is not None and not journal_path(self.path).exists():
            try:
                os.ftruncate(self.fd, self.boundary)
            except OSError as exc:
                log.warning("%s: cannot free what the last commit left: %s", self.path, exc)

    # ---------------------------------------------------------- internals

    def _disk(self, fn: Any, *args: Any) -> bool:
        """A write to the disk beyond the commit; False (and `failed` set) if it failed
        or the file failed before."""
        if self.failed is not None:
            return False
        try:
            fn(*args)
            return True
        except OSError as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            log.error("%s: write failed: %s", self.path, self.failed)
            return False

    def _write_at(self, off: int, mv: memoryview) -> None:
        end = off + mv.nbytes
        hi = min(end, self.boundary)
        if off < hi:
            self._hold(off, np.frombuffer(mv[:hi - off], np.uint8))
        lo = max(off, self.boundary)
        if lo < end and not self._disk(pwrite_all, self.fd, mv[lo - off:], lo):
            self._hold(lo, np.frombuffer(mv[lo - off:], np.uint8))  # failed: kept in memory
        self.size = max(self.size, end)

    def _hold(self, a: int, data: np.ndarray) -> None:
        """Keep bytes written below the boundary in `segs` (disjoint byte ranges; the
        caller's buffer is copied: h5py hands over the library's own memory)."""
        b = a + data.shape[0]
        k = bisect.bisect_right(self._starts, a) - 1
        if k < 0 or self._starts[k] + self.segs[self._starts[k]].shape[0] <= a:
            k += 1  # no segment before a reaches into [a, b)
        j = k
        while j < len(self._starts) and self._starts[j] < b:
            j += 1
        over = self._starts[k:j]  # segments overlapping [a, b)
        if len(over) == 1 and over[0] <= a and b <= over[0] + self.segs[over[0]].shape[0]:
            self.segs[over[0]][a - over[0]:b - over[0]] = data  # within one segment
            return
        if not over:
            self._starts.insert(k, a)
            self.segs[a] = data.copy()
            return
        lo = min(a, over[0])
        hi = max(b, over[-1] + self.segs[over[-1]].shape[0])
        new = np.empty(hi - lo, np.uint8)  # covered by the segments and the write
        for s in over:
            seg = self.segs.pop(s)
            new[s - lo:s - lo + seg.shape[0]] = seg
        new[a - lo:b - lo] = data
        self._starts[k:j] = [lo]
        self.segs[lo] = new

    def _read_at(self, off: int, n: int) -> bytes:
        end = min(off + n, self.size)
        k = max(bisect.bisect_right(self._starts, off) - 1, 0)
        while k < len(self._starts) and self._starts[k] + self.segs[self._starts[k]].shape[0] \
                <= off:
            k += 1
        held = k < len(self._starts) and self._starts[k] < end
        zeroed = self.zero_from < self.boundary and off < self.boundary and end > self.zero_from
        if not held and not zeroed and end - off == n:
            got = os.pread(self.fd, n, off)  # the usual case: straight from the disk
            return got if len(got) == n else got + bytes(n - len(got))
        out = np.zeros(n, np.uint8)
        for a, b in ((off, min(end, self.zero_from)), (max(off, self.boundary), end)):
            if a < b:  # from the disk, except the range a shrink zeroed
                got = os.pread(self.fd, b - a, a)
                out[a - off:a - off + len(got)] = np.frombuffer(got, np.uint8)
        while k < len(self._starts) and self._starts[k] < end:
            s = self._starts[k]
            seg = self.segs[s]
            a, b = max(off, s), min(end, s + seg.shape[0])
            out[a - off:b - off] = seg[a - s:b - s]
            k += 1
        return out.tobytes()

    def _records(self) -> list[tuple[int, int, bytes]]:
        """(kind, offset, data) to apply: a zeroed range, then the bytes that differ from
        the disk in each held segment (a chunk rewritten with more rows differs only in
        its tail)."""
        records: list[tuple[int, int, bytes]] = []
        if self.zero_from < self.boundary:
            records.append((ZERO, self.zero_from, struct.pack("<Q", self.boundary
                                                                - self.zero_from)))
        for s in self._starts:
            seg = self.segs[s]
            if s + seg.shape[0] > self.zero_from or seg.shape[0] < _GAP:  # whole
                records.append((DATA, s, seg.tobytes()))
                continue
            old = np.frombuffer(os.pread(self.fd, seg.shape[0], s), np.uint8)
            diff = np.flatnonzero(old != seg)
            if not diff.shape[0]:
                continue  # rewritten with the same bytes
            cut = np.flatnonzero(np.diff(diff) > _GAP)  # runs of changed bytes
            for a, b in zip(diff[np.r_[0, cut + 1]].tolist(),
                            (diff[np.r_[cut, diff.shape[0] - 1]] + 1).tolist(), strict=True):
                records.append((DATA, s + a, seg[a:b].tobytes()))
        return records

    def _overlay(self, base: int, size: int, records: list[tuple[int, int, bytes]]) -> None:
        """A reader's view of a file whose journal was not applied (or not fully)."""
        self.boundary = self.zero_from = base
        for kind, off, data in records:
            if kind == ZERO:
                self.zero_from = off
            else:
                self._write_at(off, memoryview(data))
        self.size = size


def open_h5(path: str | Path) -> h5py.File:
    """Open an output file for reading, finished or left by a crash at any instant
    (through its journal if a commit was interrupted; the disk is not changed)."""
    path = Path(path)
    if journal_path(path).exists():
        jf = JournaledFile(path, readonly=True)
        try:
            return h5py.File(jf, "r")
        except Exception:
            jf.close()
            raise
    return h5py.File(path, "r", locking=False)


def _drop_pages(fd: int, a: int, b: int) -> None:
    """Advise the kernel to drop the (clean) cached pages of bytes a..b."""
    if b > a and hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, a, b - a, os.POSIX_FADV_DONTNEED)
        except OSError:  # advice only
            pass


def _libc_sync_file_range() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return fn


_SYNC_FILE_RANGE = _libc_sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing bytes offset.. to the disk, without waiting (Linux
    sync_file_range(SYNC_FILE_RANGE_WRITE), as PostgreSQL's *_flush_after does)."""
    if length > 0 and _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, 2)  # an error only leaves it to the kernel
