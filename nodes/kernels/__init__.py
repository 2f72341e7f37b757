"""numba kernels. `readonly`: the one array kind they are handed."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

A = TypeVar("A")


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
