"""Wait until a PUSH socket's receiver is there before sending to it.

ZeroMQ queues messages for an endpoint nobody listens on yet and drops them
when the socket's linger runs out: a sender that closes meanwhile believes
they went. A ZMTP handshake on the socket's monitor proves a receiver took
the connection; until then nothing is sent, so a sender that gives up can say
that none of its messages was delivered.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message


def wait_for_receiver(monitor: zmq.Socket, timeout: float,
                      waiting: Callable[[], None] | None = None) -> bool:
    """True once the monitored socket has completed a handshake with a receiver, False
    after `timeout` s without one; `waiting()` is called once if it has to wait."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        if monitor.poll(200):  # a monitor event, else 0.2 s passed
            if recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return True
        elif time.monotonic() >= deadline:
            return False
        elif not said and waiting is not None:
            waiting()
            said = True
