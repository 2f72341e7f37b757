"""Our protocol's data lane: a PULL socket that binds (PROTOCOL.md, "Sockets").

A `Source` (`stream.sources.base`): `ScanRunner.step` reads our own senders
and a DECTRIS detector (`stream.sources.dectris`) alike.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq

from stream.wire.sockets import bind

log = logging.getLogger(__name__)

HEADER_SLACK = 1 << 20  # bytes a message part may have beyond max_frame_bytes (headers)

class ZmqSource:
    """Receives multipart messages on a bound PULL socket; lossless (high-water mark).
    A `stream.sources.base.Source`."""

    done = False  # a live lane has no last message

    def __init__(self, endpoint: str, rcvhwm: int = 64, context: zmq.Context | None = None,
                 max_frame_bytes: int = 0):
        """`max_frame_bytes` (0: no limit): a message part larger than it plus
        HEADER_SLACK never reaches memory (ZeroMQ's MAXMSGSIZE drops the sender's
        connection; it reconnects by itself)."""
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if max_frame_bytes:
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes + HEADER_SLACK)
        self.socket.setsockopt(zmq.LINGER, 0)
        endpoint = bind(self.socket, endpoint, "cannot listen on {endpoint}")
        self.endpoint = self.endpoint_bound = endpoint
        self.sockets = [self.socket]
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.messages = 0
        log.info("listening on %s", endpoint)

    def recv(self, timeout: float) -> list[zmq.Frame] | None:
        """The next multipart message, or None after `timeout` seconds."""
        if not self.poller.poll(int(timeout * 1000)):
            return None
        self.messages += 1
        return self.socket.recv_multipart(copy=False)

    def receive(self, timeout: float = 0.0, limit: int = 1) -> list[list]:
        """Up to `limit` messages waiting now (waiting up to `timeout` s for the first)."""
        out: list[list] = []
        # (Socket.poll makes a Poller each call: with no wait, the read itself says)
        if timeout > 0 and not self.poller.poll(int(timeout * 1000)):
            return out
        while len(out) < limit:
            try:
                out.append(self.socket.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        self.messages += len(out)
        return out

    def status(self) -> dict[str, Any]:
        return {"kind": "zmq", "endpoint": self.endpoint, "messages": self.messages}

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> ZmqSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
