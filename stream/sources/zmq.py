"""Our protocol's data lane: a PULL socket that binds (PROTOCOL.md, "Sockets")."""

from __future__ import annotations

import logging

import zmq

log = logging.getLogger(__name__)


class ZmqSource:
    """Receives multipart messages on a bound PULL socket; lossless (high-water mark)."""

    def __init__(self, endpoint: str, rcvhwm: int = 64, context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            if endpoint.endswith(":0"):
                port = self.socket.bind_to_random_port(endpoint.rsplit(":", 1)[0])
                endpoint = f"{endpoint.rsplit(':', 1)[0]}:{port}"
            else:
                self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise OSError(f"cannot listen on {endpoint}: {exc}") from None
        self.endpoint = endpoint
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        log.info("listening on %s", endpoint)

    def recv(self, timeout: float) -> list[zmq.Frame] | None:
        """The next multipart message, or None after `timeout` seconds."""
        if not self.poller.poll(int(timeout * 1000)):
            return None
        return self.socket.recv_multipart(copy=False)

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> ZmqSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
