"""A client library's thread, bridged to the runner's receive loop.

Control-system clients (blissdata's Redis reads, p4p's monitor callbacks) block
or call back in threads of their own. A `Bridge` gives such a source the face
every source has (`sockets`, `receive(timeout)`, `close()`): the source's
thread turns what it reads into our messages and `emit`s them, encoded, on an
inproc PUSH; the runner polls the PULL end. The PUSH blocks when the runner
holds back (the high-water mark), so back-pressure reaches the client thread
and nothing is dropped between the two.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

import zmq

from stream.core.messages import Message
from stream.wire.codec import encode

log = logging.getLogger(__name__)

DRAIN = 16  # messages handed to the runner per receive() at most
_ids = itertools.count()


class Bridge:
    """An inproc PUSH/PULL pair and a stop flag shared with one producer thread."""

    def __init__(self, name: str, hwm: int = 64, context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        address = f"inproc://peakstream-{name}-{next(_ids)}"
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, hwm)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(address)
        self.push = self.context.socket(zmq.PUSH)  # used by the producer thread only
        self.push.setsockopt(zmq.SNDHWM, hwm)
        self.push.setsockopt(zmq.SNDTIMEO, 200)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(address)
        self.sockets = [self.pull]
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, target: Any, name: str) -> None:
        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def emit(self, msg: Message) -> bool:
        """Send one message to the runner, waiting while it holds back; False if the
        source is closing first (the message is then dropped)."""
        parts = encode(msg)
        while not self.stopping.is_set():
            try:
                self.push.send_multipart(parts, copy=False)
                return True
            except zmq.Again:
                continue
        return False

    def receive(self, timeout: float = 0.0) -> list[list]:
        """Up to DRAIN messages waiting now (waiting up to `timeout` s for the first)."""
        out: list[list] = []
        if not self.pull.poll(int(timeout * 1000)):
            return out
        while len(out) < DRAIN:
            try:
                out.append(self.pull.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        return out

    def close(self, join: float = 5.0) -> None:
        """Stop the producer thread (it sees `stopping`) and close both ends."""
        self.stopping.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(join)
            if self.thread.is_alive():
                log.warning("%s: the source's thread did not stop within %g s",
                            self.thread.name, join)
        for sock in (self.push, self.pull):
            if not sock.closed:
                sock.close(linger=0)
