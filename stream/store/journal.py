"""The journal of a `JournaledFile` commit (`stream.store.checkpoint`): its format,
writing, reading back and applying it (`recover`, after a crash mid-commit).

A journal is a header (magic, committed size, new size), records (kind, offset,
length; a DATA record's bytes follow it, a ZERO record zeroes from its offset)
and a tail (magic, crc32 of everything before), written to `<file>.journal.tmp`
and renamed into place: a journal without a valid tail never counts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger("stream.store.checkpoint")

_HEAD = struct.Struct("<8sQQ")  # magic, committed size (boundary), new size
_REC = struct.Struct("<BQQ")  # kind, offset, length (data follows a DATA record)
_TAIL = struct.Struct("<8sI")  # magic, crc32 of everything before
_MAGIC, _END = b"PSJRNL01", b"PSJEND01"
DATA, ZERO = 1, 2  # record kinds: bytes to write; zeros from an offset


def journal_path(path: str | Path) -> Path:
    """Where the journal of `path` goes."""
    return Path(f"{path}.journal")


def write_journal(path: Path, base: int, size: int, records: list, durable: bool) -> None:
    """Made afresh, never through a name someone else planted: a leftover (or a symlink)
    at that name is removed, then the file is created exclusively, without following
    symlinks, readable by our user only."""
    crc = 0
    unlink_quietly(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "wb") as fh:
        def put(b: bytes) -> None:
            nonlocal crc
            fh.write(b)
            crc = zlib.crc32(b, crc)
        put(_HEAD.pack(_MAGIC, base, size))
        for kind, off, data in records:
            length = len(data) if kind == DATA else struct.unpack("<Q", data)[0]
            put(_REC.pack(kind, off, length))
            if kind == DATA:
                put(data)
        fh.write(_TAIL.pack(_END, crc))
        fh.flush()
        if durable:
            os.fsync(fh.fileno())


def read_journal(path: Path) -> tuple[int, int, list[tuple[int, int, bytes]]] | None:
    """(committed size, new size, records) of a complete journal; None if there is none
    or it is not complete (then it never was renamed into place: ignore it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink planted at that name (ELOOP): never ours
        log.warning("%s: journal not read: %s", path, exc)
        return None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    if len(raw) < _HEAD.size + _TAIL.size:
        return None
    magic, crc = _TAIL.unpack_from(raw, len(raw) - _TAIL.size)
    body = raw[:len(raw) - _TAIL.size]
    head, base, size = _HEAD.unpack_from(body)
    if head != _MAGIC or magic != _END or zlib.crc32(body) != crc:
        log.warning("%s: journal is damaged; ignored", path)
        return None
    records, at = [], _HEAD.size
    while at < len(body):
        kind, off, length = _REC.unpack_from(body, at)
        at += _REC.size
        if kind == DATA:
            records.append((kind, off, body[at:at + length]))
            at += length
        else:
            records.append((kind, off, struct.pack("<Q", length)))
    return base, size, records


def pwrite_all(fd: int, data: memoryview, off: int) -> None:
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], off + done)


def apply_records(fd: int, records: list[tuple[int, int, bytes]], size: int) -> None:
    for kind, off, data in records:
        if kind == ZERO:
            length = struct.unpack("<Q", data)[0]
            zeros = bytes(min(length, 1 << 20))
            done = 0
            while done < length:
                done += os.pwrite(fd, zeros[:length - done], off + done)
        else:
            pwrite_all(fd, memoryview(data), off)
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)


def recover(path: str | Path) -> bool:
    """Apply the journal a crash left (if any) to the file; True if there was one."""
    path = Path(path)
    unlink_quietly(Path(f"{journal_path(path)}.tmp"))  # never complete: never renamed
    records = read_journal(journal_path(path))
    if records is None:
        unlink_quietly(journal_path(path))
        return False
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        apply_records(fd, records[2], records[1])
    finally:
        os.close(fd)
    os.unlink(journal_path(path))
    log.info("%s: applied the journal of an interrupted commit", path)
    return True


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def writer_holds(path: str | Path) -> bool | None:
    """Whether another process holds the file's writer lock (`JournaledFile`: a POSIX
    lock); None if the file cannot be opened to ask. A file whose status is running
    and that no process writes was left by a writer that died or gave up. (Asked of
    a file this process writes, it says False: its own locks never conflict.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:  # struct flock: type, whence, start, len, pid (native layout)
        query = struct.pack("@hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return struct.unpack("@hhqqi", answer)[0] != fcntl.F_UNLCK
    except OSError:
        return None
    finally:
        os.close(fd)
