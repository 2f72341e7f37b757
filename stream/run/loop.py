"""The receive loop of a runner on a `Source` (`stream.sources.base`): one turn reads
messages while the runner has room, takes the workers' results, treats a quiet
input as idle, serves the other sockets it watches (the daemon's control), and tells the
source of a scan the runner refused (`tell_refused`).

Not reading when the runner has no room is the flow control: ZeroMQ's high-water
mark then holds the sender. `drain` waits for the points still out at the end of
a scan; `freeze_long_lived` keeps a long-running process's objects out of the
garbage collector.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import zmq


def step(runner: Any, source: Any, timeout: float = 0.2) -> None:
    """One turn of a receive loop on `source` (`sockets`, `receive(timeout)`): read
    messages if there is room, take the workers' results, treat a quiet input as
    idle, and serve the `watch` sockets that are readable."""
    if not runner.ready():
        runner.wait(timeout)
        events: dict = dict(poller_for(runner, source).poll(0)) if runner.watch else {}
    else:
        events = dict(poller_for(runner, source).poll(int(timeout * 1000)))
        busy = any(sock in events for sock in source.sockets)
        messages = source.receive(0) if busy or not events else []
        for parts in messages:
            runner.handle(parts)
        if messages:
            runner.pump()
            tell_refused(runner, source)
        else:
            runner.poll(source)
    for sock, serve in runner.watch.items():
        if sock in events:
            serve()


def tell_refused(runner: Any, source: Any) -> None:
    """A source that keeps its own record of what it sent (`scan_refused`: the DECTRIS
    series history) learns that the runner refused the scan (a start it could not take,
    a scan whose file cannot be written): its record said success from the detector's
    end. The reason is the runner's `last_error` when that names the scan."""
    tell = getattr(source, "scan_refused", None)
    if tell is not None and runner.refused:
        said = runner.last_error
        tell(runner.refused, said if said.startswith(f"scan {runner.refused}:") else "")


def poller_for(runner: Any, source: Any) -> zmq.Poller:
    """The runner's poller over the source's, the workers' and the watched sockets (made
    again when the source or the watched sockets change)."""
    key = (source, tuple(runner.watch))
    if runner.poller is None or runner.poller[0] != key:
        poller = zmq.Poller()
        for sock in (*source.sockets, *runner.executor.sockets, *runner.watch):
            poller.register(sock, zmq.POLLIN)
        runner.poller = (key, poller)
    return runner.poller[1]


def drain(runner: Any) -> None:
    """Wait for the points still out; give up after end_timeout s without a result
    (the collector then writes them as bad)."""
    limit = runner.config["source"]["end_timeout"]
    last = time.monotonic()
    while runner.executor.in_flight and time.monotonic() - last < limit:
        results = runner.executor.collect(timeout=0.2)
        if results:
            last = time.monotonic()
        for parts in results:
            runner.take_result(parts)


def freeze_long_lived() -> None:
    """Collect, then leave the objects alive now (modules, loaded numba kernels, the
    workers) out of later garbage collections (`gc.freeze`). Done once, after the
    first scan, by `run` and `daemon`: a full collection over them took 70-85 ms in
    the daemon, and every point arriving meanwhile waited (P5's maximum latency)."""
    gc.collect()
    gc.freeze()
