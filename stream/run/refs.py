"""Frames by reference (`{"ref": {"uri", "path", "index"}}`), read by the workers.

A reference comes from the network, so it is read only when `[source]
allow_refs` is on, and then only from a regular file whose resolved path
(symlinks followed, then checked) lies below one of `[source] ref_dirs`. The
file is opened with O_NONBLOCK | O_NOFOLLOW and checked with fstat on the
descriptor itself (no FIFO, device or socket: opening a FIFO would block);
h5py reads it through a Python file object, so a read that stalls (a hung
network file system) waits in a system call without the GIL and the rest of
the daemon (control, live, signals, other workers) goes on. The size of the
selection is checked against `max_frame_bytes` before anything is read.
"""

from __future__ import annotations

import math
import os
import stat
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.messages import FrameRef, MessageError

OPEN_FILES = 8  # referenced files kept open per worker (the oldest is closed)


def resolve_ref(uri: str, dirs: list[Path]) -> Path:
    """The real path of a referenced file, if it lies below one of `dirs`
    (a relative uri is taken relative to the first); MessageError if not."""
    if not dirs:
        raise MessageError(f"frame ref {uri!r}: no [source] ref_dirs to read from")
    roots = [Path(os.path.realpath(d)) for d in dirs]
    real = Path(os.path.realpath(roots[0] / uri))
    if not any(real.is_relative_to(r) for r in roots):
        raise MessageError(f"frame ref {uri!r}: not below the allowed directories "
                           f"([source] ref_dirs)")
    return real


def open_regular(path: Path) -> Any:
    """A binary file object for a regular file (never blocks on a FIFO; MessageError
    for anything but a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise MessageError(f"frame ref {path}: cannot open: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MessageError(f"frame ref {path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_ref(ref: FrameRef, dirs: list[Path], max_frame_bytes: int | None,
             cache: OrderedDict | dict) -> np.ndarray:
    """One frame: dataset `ref.path` of the file (2D), or its image `ref.index` (3D)."""
    import h5py

    if ref.path is None:
        raise MessageError(f"frame ref {ref.uri}: only HDF5 references (uri, path, index) "
                           f"are supported")
    path = resolve_ref(ref.uri, dirs)
    f, _ = cache.get(path) or (None, None)
    if f is None:
        fh = open_regular(path)
        try:
            f = h5py.File(fh, "r")
        except OSError as exc:
            fh.close()
            raise MessageError(f"frame ref {path}: not an HDF5 file: {exc}") from None
        cache[path] = (f, fh)
        while len(cache) > OPEN_FILES:
            close_refs([cache.pop(next(iter(cache)))])
    ds = f.get(ref.path) if isinstance(ref.path, str) else None
    if not isinstance(ds, h5py.Dataset):
        raise MessageError(f"frame ref {path}: no dataset {ref.path!r}")
    want = 2 if ref.index is None else 3
    if ds.ndim != want:
        raise MessageError(f"frame ref {path}:{ref.path} is {ds.ndim}D; a reference "
                           f"{'with' if ref.index is not None else 'without'} an index "
                           f"needs {want}D")
    if ref.index is not None and not 0 <= ref.index < ds.shape[0]:
        raise MessageError(f"frame ref {path}:{ref.path}: index {ref.index} not in "
                           f"0..{ds.shape[0] - 1}")
    nbytes = math.prod(ds.shape[-2:]) * ds.dtype.itemsize
    if max_frame_bytes is not None and nbytes > max_frame_bytes:
        raise MessageError(f"frame ref {path}:{ref.path}: a frame of {nbytes} bytes is more "
                           f"than the configured maximum of {max_frame_bytes}")
    return ds[ref.index] if ref.index is not None else ds[()]


def close_refs(opened: Any) -> None:
    """Close (h5py file, file object) pairs of `read_ref`'s cache."""
    for f, fh in list(opened):
        f.close()
        fh.close()
