"""The executor of worker threads and processes (`stream.run.executors` chooses it).

`Dispatcher`: a ROUTER socket and N workers on DEALER sockets, threads over
  inproc:// or processes over ipc:// / tcp://. A task goes only to a worker
  that has a credit (it said it is ready; `CREDITS` each), results come back on
  the same socket, each return is a credit again. Workers heartbeat; a worker
  that stays silent for `timeout` s, or whose thread or process ended, has its
  tasks handed to another (a point whose workers died `MAX_ATTEMPTS` times is
  bad, never lost); a worker that ended is started again (up to `respawn`
  times per session). A worker whose calibration files are not what this
  process loaded at its start (`stream.run.workers`: unfit) is refused, and
  none of ours is started again after that.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from stream import __version__
from stream.config.schema import Config
from stream.run.build import build_id
from stream.run.curve import need_keys, secure_server
from stream.run.spawn import alive, end_workers, start_worker
from stream.run.tasks import Params, bad_result, encode_scan, encode_task, header_of, pack
from stream.wire.sockets import bind

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
CLOSE_WAIT = 5.0  # s close() waits for local workers still starting to register


@dataclass
class Task:
    seq: int
    scan: int
    point_id: int
    parts: list
    params: Params | None = None  # the parameter changes in force for this point
    preview: int = 0  # bin a preview of its frame (the live lane)
    attempts: int = 0
    worker: bytes | None = None


@dataclass
class WorkerState:
    identity: bytes
    pid: int
    thread: int
    seen: float
    local: bool = True  # started by this dispatcher (not a `peakstream worker` elsewhere)
    address: str = ""  # its IP address on a tcp:// endpoint
    done: int = 0  # results it gave back
    credits: int = 0
    sent: float = 0.0  # when it was last given a task
    scan: int | None = None
    tasks: set[int] = field(default_factory=set)


class Dispatcher:
    """Tasks to ready workers (credits), results back, dead workers' tasks reassigned."""

    def __init__(self, config: Config, kind: str, count: int, endpoint: str = "", *,
                 heartbeat: float = 0.5, timeout: float = 5.0, respawn: int | None = None,
                 context: zmq.Context | None = None, keys: str = ""):
        if kind not in ("threads", "processes"):
            raise ValueError(f"workers kind {kind!r}: threads or processes")
        self.kind, self.count = kind, count
        self.heartbeat, self.timeout = heartbeat, timeout
        self.respawn = 2 * count + 2 if respawn is None else respawn
        self.ctx = context or zmq.Context.instance()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.LINGER, 0)
        need_keys(endpoint, keys)  # never bind a reachable address without CurveZMQ
        self.keys = keys
        self.auth = secure_server(self.router, self.ctx, keys) if keys else None
        try:
            self.endpoint, self._ipc = self._bind(endpoint)
        except BaseException:
            self.router.close(linger=0)
            if self.auth is not None:
                self.auth.stop()
            raise
        self.sockets = (self.router,)  # readable when results (or heartbeats) came
        # the calibration this process loaded (and records): a worker that loads other
        # contents says it is unfit, and is refused
        self.config_msg = pack({"type": "config", "text": config.text(),
                                "base": str(config.base), "calibration": config.calibration()})
        self.unfit = ""  # why a worker of ours was refused: none is started again
        self.tasks: dict[int, Task] = {}
        self.queue: deque[int] = deque()  # seqs waiting for a credit
        self.workers: dict[bytes, WorkerState] = {}
        self._refused: dict[tuple[str, str], float] = {}  # (address, version): last logged
        self.children: list[Any] = []  # Popen or Thread
        self.done: list[list] = []
        self.scan: tuple[int, list] | None = None  # key, scan message
        self.reassigned = 0  # tasks handed to another worker
        self.restarted = 0  # workers started again after theirs ended
        self._next_beat = 0.0
        for _ in range(count):
            self._spawn()
        log.info("%d worker %s on %s", count, kind, self.endpoint)

    # ------------------------------------------------------------ the executor API

    @property
    def in_flight(self) -> int:
        return len(self.tasks) + len(self.done)

    def start_scan(self, scan: int, start_parts: list, detector: str,
                   max_frame_bytes: int) -> None:
        self.scan = (scan, encode_scan(scan, [bytes(_buffer(p)) for p in start_parts],
                                       detector, max_frame_bytes))
        for w in list(self.workers.values()):  # set up now, not on the first point
            self._set_up(w, scan)

    def submit(self, seq: int, scan: int, point_id: int, parts: list,
               params: Params | None = None, preview: int = 0,
               point: Any = None) -> None:
        """A point for the workers, with the parameter changes in force for it (sent
        with the task, so every worker, and a worker that takes it over, applies them).
        `point` is unused: the workers get the message as it arrived."""
        self.tasks[seq] = Task(seq, scan, point_id, parts, params, preview)
        self.queue.append(seq)
        self._dispatch()

    def collect(self, timeout: float = 0.0) -> list[list]:
        """Results that came back; waits up to `timeout` s for one if points are out."""
        deadline = time.monotonic() + timeout
        self._read(0)
        while not self.done and self.tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._read(min(left, self.heartbeat))
            self._check()
        self._check()
        out, self.done = self.done, []
        return out

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": len(self.workers), "queued": len(self.queue),
                "at_workers": sum(len(w.tasks) for w in self.workers.values()),
                "reassigned": self.reassigned, "restarted": self.restarted,
                "remote": [{"address": w.address, "pid": w.pid, "done": w.done,
                            "tasks": len(w.tasks)}
                           for w in self.workers.values() if not w.local]}

    def close(self) -> None:
        # a worker whose hello waits unread (nothing was dispatched: a block replay)
        # registers now, so that it hears the stop instead of waiting to be orphaned
        deadline = time.monotonic() + CLOSE_WAIT
        while sum(w.local for w in self.workers.values()) < sum(map(alive, self.children)) \
                and time.monotonic() < deadline:
            self._read(0.05)
        stop = pack({"type": "stop"})
        for identity in list(self.workers):
            self._send(identity, [stop])
        end_workers(self.children, {w.pid for w in self.workers.values()})
        self.router.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        if self._ipc is not None:
            Path(self._ipc).unlink(missing_ok=True)

    # ------------------------------------------------------------ workers

    def _bind(self, endpoint: str) -> tuple[str, str | None]:
        if not endpoint:
            if self.kind == "threads":
                endpoint = f"inproc://peakstream-workers-{uuid.uuid4().hex}"
            else:
                path = Path(tempfile.gettempdir()) / f"peakstream-{os.getpid()}-" \
                                                     f"{uuid.uuid4().hex[:8]}.ipc"
                endpoint = f"ipc://{path}"
        endpoint = bind(self.router, endpoint, "workers: cannot bind {endpoint}")
        return endpoint, endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None

    def _spawn(self) -> None:
        self.children.append(start_worker(self.kind, self.endpoint, self.ctx, self.heartbeat,
                                          self.keys, f"worker-{len(self.children)}"))

    def _read(self, timeout: float) -> None:
        """Handle every message waiting on the socket (waiting up to `timeout` s for one)."""
        if not self.router.poll(int(timeout * 1000)):
            return
        while True:
            try:
                identity, *parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._message(identity.bytes, parts, identity)

    def _message(self, identity: bytes, parts: list, frame: Any = None) -> None:
        header = header_of(parts)
        kind = header["type"]
        w = self.workers.get(identity)
        if kind == "hello":
            if (header.get("version"), header.get("build")) != (__version__, build_id()):
                self._refuse(identity, header, _peer(frame))
                return
            if w is not None:
                self._lost(w, "registered again")
            local = header.get("parent") == os.getpid() or (
                self.kind == "threads" and header["pid"] == os.getpid())
            w = self.workers[identity] = WorkerState(
                identity, header["pid"], header["thread"], time.monotonic(), local,
                _peer(frame))
            if not local:
                log.warning("remote worker pid %d from %s joined", w.pid, w.address or "?")
            self._send(identity, [self.config_msg])
            if self.scan is not None:
                self._set_up(w, self.scan[0])
            return
        if kind == "result":
            self._result(header["seq"], parts)
        if kind == "unfit" and w is not None:
            self._refuse_unfit(w, header["reason"])
            return
        if w is None:  # a worker we had given up: it must register again
            self._send(identity, [pack({"type": "reset"})])
            return
        w.seen = time.monotonic()
        if kind == "ready":
            w.credits = header["credits"]
            log.info("worker pid %d ready (%d credits)", w.pid, w.credits)
        elif kind == "result":
            w.credits += 1
            w.done += 1
            w.tasks.discard(header["seq"])
        self._dispatch()

    def _refuse(self, identity: bytes, hello: dict, address: str) -> None:
        """A worker of another peakstream version or build: its nodes could parse the
        config otherwise, or compute other results, mixed silently into the file."""
        theirs = f"{hello.get('version') or 'an older one'} (build {hello.get('build') or '?'})"
        why = (f"the processor runs peakstream {__version__} (build {build_id()}), this "
               f"worker {theirs}; install the same peakstream on both")
        now, last = time.monotonic(), self._refused.get((address, theirs))
        if last is None or now - last >= 60:  # an old worker says hello again and again
            self._refused[(address, theirs)] = now
            log.warning("refused worker pid %s from %s: %s", hello.get("pid"),
                        address or "?", why)
        self._send(identity, [pack({"type": "refused", "reason": f"refused: {why}"})])

    def _refuse_unfit(self, w: WorkerState, why: str) -> None:
        """A worker whose calibration files are not what this process loaded at its start:
        refused (it ends). One of ours is not started again: another would load the same
        files; the points go to the workers left, or are bad saying why."""
        self.workers.pop(w.identity, None)
        self._send(w.identity, [pack({"type": "refused", "reason": f"refused: {why}"})])
        if w.local:
            self.unfit, self.respawn = why, 0
        log.error("refused worker pid %d%s: %s%s", w.pid,
                  "" if w.local else f" from {w.address or '?'}", why,
                  "; no worker is started again" if w.local else "")

    def _result(self, seq: int, parts: list) -> None:
        task = self.tasks.pop(seq, None)
        if task is None:  # already answered by another worker after a reassignment
            return
        owner = self.workers.get(task.worker) if task.worker is not None else None
        if owner is not None:
            owner.tasks.discard(seq)
        self.done.append(parts)

    def _dispatch(self) -> None:
        while self.queue:
            ready = [w for w in self.workers.values() if w.credits > 0]
            if not ready:
                return
            w = min(ready, key=lambda x: x.sent)  # round robin among the ready ones
            task = self.tasks.get(self.queue.popleft())
            if task is None:
                continue
            sent = self._set_up(w, task.scan) and self._send(
                w.identity, encode_task(task.seq, task.scan, task.point_id, task.parts,
                                        task.params, task.preview))
            if not sent:
                self.queue.appendleft(task.seq)
                self._lost(w, "unreachable")
                continue
            w.credits -= 1
            w.sent = time.monotonic()
            w.tasks.add(task.seq)
            task.worker = w.identity

    def _set_up(self, w: WorkerState, scan: int) -> bool:
        """Give the worker the scan's start message if it has not had it."""
        if w.scan == scan or self.scan is None or self.scan[0] != scan:
            return True
        w.scan = scan
        return self._send(w.identity, self.scan[1])

    def _send(self, identity: bytes, parts: list) -> bool:
        try:
            self.router.send_multipart([identity, *parts], copy=False)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer is gone
            log.debug("workers: cannot send to %r: %s", identity, exc)
            return False

    def _check(self) -> None:
        """Heartbeats both ways, ended threads or processes, silent workers."""
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat
            beat = pack({"type": "heartbeat"})
            for identity in list(self.workers):
                self._send(identity, [beat])
        for child in [c for c in self.children if not alive(c)]:
            self.children.remove(child)
            pid = child.pid if isinstance(child, subprocess.Popen) else None
            ident = child.ident if isinstance(child, threading.Thread) else None
            for w in [w for w in self.workers.values() if w.local and (
                      (pid is not None and w.pid == pid) or
                         (ident is not None and w.thread == ident and w.pid == os.getpid()))]:
                self._lost(w, f"its {'process' if pid else 'thread'} ended"
                              f"{f' (exit code {child.returncode})' if pid else ''}")
            if self.respawn > 0:
                self.respawn -= 1
                self.restarted += 1
                self._spawn()
        for w in [w for w in self.workers.values() if now - w.seen > self.timeout]:
            self._lost(w, f"no heartbeat for {now - w.seen:.1f} s")
            for child in self.children:  # a hung process of ours: end it, a new one starts
                if isinstance(child, subprocess.Popen) and child.pid == w.pid and w.local:
                    child.kill()
        if self.queue and not self.workers and not self.children:
            self._fail_queued("no worker is left (" + (
                f"a worker was refused: {self.unfit}" if self.unfit else
                "they ended and the restarts are used up") + ")")
        self._dispatch()

    def _lost(self, w: WorkerState, why: str) -> None:
        """A worker given up: its tasks go to the others (or are bad after MAX_ATTEMPTS)."""
        self.workers.pop(w.identity, None)
        back = []
        for seq in sorted(w.tasks):
            task = self.tasks.get(seq)
            if task is None:
                continue
            task.attempts += 1
            task.worker = None
            if task.attempts >= MAX_ATTEMPTS:
                del self.tasks[seq]
                self.done.append(bad_result(seq, task.scan, task.point_id,
                                            f"{task.attempts} workers died while processing "
                                            f"this point"))
            else:
                back.append(seq)
        self.queue.extendleft(reversed(back))
        self.reassigned += len(back)
        log.warning("worker pid %d%s lost (%s): %d point(s) handed to another worker", w.pid,
                    "" if w.local else f" at {w.address or '?'}", why, len(back))

    def _fail_queued(self, why: str) -> None:
        while self.queue:
            task = self.tasks.pop(self.queue.popleft(), None)
            if task is not None:
                self.done.append(bad_result(task.seq, task.scan, task.point_id, why))


def _peer(frame: Any) -> str:
    """The IP address a message came from (tcp:// only; "" otherwise)."""
    try:
        return frame.get("Peer-Address") if frame is not None else ""
    except (zmq.ZMQError, AttributeError, OSError):
        return ""


def _buffer(part: Any) -> Any:
    return getattr(part, "buffer", part)
