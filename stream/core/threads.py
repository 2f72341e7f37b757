"""Threads that carry their name down to the operating system.

Python names its threads for itself only; `top -H`, `ps -L`, py-spy and
/proc/PID/task/*/comm show "python" for all of them. `named_thread` sets the
kernel's name of the thread (15 characters, Linux) when it starts, so that an
operator sees which thread (worker-0, worker-io, checkpoint ...) spends the CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

PR_SET_NAME = 15
_libc: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:  # no libc to call: names stay Python's own
        _libc = None


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a SLURM or cgroup share, not
    the machine's count), for the defaults of every pool of workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_os_name(name: str) -> None:
    """Name the calling thread for the kernel (first 15 bytes; nothing off Linux)."""
    if _libc is not None:
        _libc.prctl(PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)


def named_thread(target: Callable[..., Any], name: str, args: tuple = (),
                 kwargs: dict[str, Any] | None = None, daemon: bool = True) -> threading.Thread:
    """A `threading.Thread` (not started) whose kernel name is `name` too."""

    def run(*a: Any, **k: Any) -> None:
        set_os_name(name)
        target(*a, **k)

    return threading.Thread(target=run, name=name, args=args, kwargs=kwargs or {},
                            daemon=daemon)
