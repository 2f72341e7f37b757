"""numba kernels. `readonly`: the one array kind they are handed.

Their compiled code is cached (`cache=True`) in a directory named after a hash
of every kernel file (`cache_directory`), set here before any kernel module is
imported: numba keys a cached kernel on its own file's time stamp and size
only, so a kernel that calls one in another file (separate -> blobs3d) would
keep running the old callee after an update that changed only the callee's
file. A new hash is a new, empty directory: the first run after any change
compiles afresh (`peakstream warmup`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TypeVar

import numba
import numpy as np

A = TypeVar("A")


def cache_directory(package: Path, base: str | None = None) -> str:
    """Where the kernels of `package` (a folder of modules) cache their code:
    `base` (the user's NUMBA_CACHE_DIR), else $XDG_CACHE_HOME or ~/.cache, then
    peakstream/numba-<hash of the package's *.py files>; `base` itself when it is
    that directory already (a child process of ours)."""
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    name = f"numba-{digest.hexdigest()[:16]}"
    if base and os.path.basename(os.path.normpath(base)) == name:
        return base
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME")
                            or os.path.join(os.path.expanduser("~"), ".cache"), "peakstream")
    return os.path.join(base, name)


# In the environment too: numba reads it again before each compile. Where numba
# cannot write there, it falls back to its own places (per file, as before).
numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"] = cache_directory(
    Path(__file__).parent, os.environ.get("NUMBA_CACHE_DIR"))


def readonly(a: A) -> A:
    """`a` as a read-only view (no copy); anything but a writeable array as it is.

    numba compiles a kernel apart for read-only and writeable arrays: frames from
    the wire are read-only, those from files or a node before are not. Handing the
    kernels always the read-only kind halves what is compiled, and the warm-up's
    frames then load exactly what the real ones use, whatever made them."""
    if isinstance(a, np.ndarray) and a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a
