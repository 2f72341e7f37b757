"""The dispatcher's own workers (`stream.run.dispatch`): started as threads or
processes on its endpoint, seen alive, and ended at its close."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import zmq

from stream.core.threads import named_thread
from stream.run.workers import serve

# one thread per worker for the numeric libraries, so N workers use N cores
SINGLE_THREADED = {v: "1" for v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                    "BLOSC_NTHREADS")}


def start_worker(kind: str, endpoint: str, ctx: zmq.Context, heartbeat: float, keys: str,
                 name: str) -> Any:
    """A worker of the dispatcher at `endpoint`: a thread of this process (`kind`
    threads) or a process of its own (`python -m stream.run.workers`, which ends with
    this process); the Thread or Popen."""
    if kind == "threads":
        child = named_thread(serve, name, args=(endpoint, ctx),
                             kwargs={"heartbeat": heartbeat, "keys": keys or None})
        child.start()
        return child
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **SINGLE_THREADED,
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get(
               "PYTHONPATH", "")) if p)}
    here = endpoint.replace("tcp://*:", "tcp://127.0.0.1:").replace(
        "tcp://0.0.0.0:", "tcp://127.0.0.1:")  # bound on all interfaces
    with_keys = ["--keys", keys] if keys else []
    return subprocess.Popen([sys.executable, "-m", "stream.run.workers", here,
                             "--heartbeat", str(heartbeat),
                             "--parent", str(os.getpid()), *with_keys], env=env)


def alive(child: Any) -> bool:
    return child.is_alive() if isinstance(child, threading.Thread) else child.poll() is None


def end_workers(children: list[Any], registered: set[int]) -> None:
    """Wait for the workers told to stop; a process not `registered` (still starting:
    it would never hear the stop) is terminated, one that does not end is killed."""
    for child in children:
        if isinstance(child, subprocess.Popen) and child.pid not in registered:
            child.terminate()
        if isinstance(child, threading.Thread):
            child.join(timeout=5)
        else:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
