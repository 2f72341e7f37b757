"""Connections a sender over ipc:// holds open until its receiver has read them.

ZeroMQ's linger and a context's end wait only until a message is handed to the
kernel. A receiver stalled at its high-water mark that then sees the sender hang
up drops what is still queued in its unix socket (libzmq takes the hang-up on
ipc for an error; over tcp the hang-up is read after the data). So a sender that
exits right after its last message keeps copies of its connected unix sockets
open past the context's end, and closes each once its peer has read all it was
sent (Linux: /proc/self/fd and SIOCOUTQ; elsewhere nothing is held).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
import time


def hold_ipc_connections() -> list[socket.socket]:
    """Copies of this process's connected unix (ipc://) stream sockets, which keep the
    connections open after ZeroMQ closes its own. The context's end only waits until
    a message is handed to the kernel; a receiver stalled at its high-water mark that
    then sees the peer hang up drops what is still in its socket's queue (libzmq, on
    ipc: the hang-up is taken for an error, the rest is never read)."""
    held: list[socket.socket] = []
    if not os.path.isdir("/proc/self/fd"):  # not Linux
        return held
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM \
                and _peer_connected(sock):
            held.append(sock)
        else:
            sock.close()
    return held


def _peer_connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _unread(sock: socket.socket) -> int:
    """Bytes we wrote that the peer has not read yet (SIOCOUTQ)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                              b"\0" * 4))[0]
    except OSError:
        return 0


def release_when_read(held: list[socket.socket], poll: float = 0.05) -> None:
    """Close the held connections once their peers have read all we wrote, however
    long their flow control holds us back (a peer that goes away reads nothing more)."""
    while held:
        sock = held[0]
        if _unread(sock) == 0 or not _peer_connected(sock):
            held.pop(0).close()
        else:
            time.sleep(poll)
