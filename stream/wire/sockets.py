"""Binding our ZeroMQ sockets: one rule for every lane (data, control, live, workers)."""

from __future__ import annotations

import ipaddress

import zmq


def bind(sock: zmq.Socket, endpoint: str, error: str) -> str:
    """Bind `sock` and return the endpoint bound: a tcp port 0 becomes the port the
    system gave. On failure the socket is closed and OSError says `error` (formatted
    with `endpoint`) and why."""
    try:
        if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
            host = endpoint.rsplit(":", 1)[0]
            return f"{host}:{sock.bind_to_random_port(host)}"
        sock.bind(endpoint)
        return endpoint
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise OSError(f"{error.format(endpoint=endpoint)}: {exc}") from None


def is_loopback(endpoint: str) -> bool:
    """True for endpoints no other host can reach: ipc://, inproc://, tcp loopback."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface or a host name: other hosts may reach it
        return False
