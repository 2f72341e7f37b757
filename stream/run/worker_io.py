"""The I/O thread of a worker on a socket (`stream.run.workers.serve`): it owns the
DEALER socket (a CurveZMQ client when given keys), forwards dispatcher <-> chain,
sends the heartbeat even while the chain is busy, and gives up when the dispatcher
has been silent for `orphan` s. It never blocks on the dealer, and when it fails
it tells the chain thread why ("failed"), so that the worker ends."""

from __future__ import annotations

import logging
import os
import time
from collections import deque

import zmq

from stream import __version__
from stream.run.build import build_id
from stream.run.curve import secure_client
from stream.run.tasks import header_of, pack

log = logging.getLogger("stream.run.workers")


def io_loop(ctx: zmq.Context, endpoint: str, inner: str, heartbeat: float, orphan: float,
            parent: int | None, owner: int, keys: str | None = None,
            name: str = "worker") -> None:
    """Forward dispatcher <-> chain and heartbeat. After a stop (the dispatcher's, or
    ours when the dispatcher is gone) wait for the chain's bye, so that it never
    blocks on a send nobody reads. If this thread fails, the chain is told why
    ("failed"), so that it ends instead of waiting for ever."""
    chain = ctx.socket(zmq.PAIR)
    chain.connect(inner)
    try:
        _forward(ctx, endpoint, chain, heartbeat, orphan, parent, owner, keys, name)
    except Exception as exc:  # the chain thread says why (no traceback for a key file)
        if not isinstance(exc, (OSError, ValueError)):
            log.exception("worker %d: I/O thread", os.getpid())
        try:
            chain.send(pack({"type": "failed", "reason": str(exc)}), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the chain has gone already
    finally:
        chain.close(linger=1000)


def _forward(ctx: zmq.Context, endpoint: str, chain: zmq.Socket, heartbeat: float,
             orphan: float, parent: int | None, owner: int, keys: str | None,
             name: str) -> None:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        if keys:
            secure_client(dealer, keys, name)
        dealer.connect(endpoint)
        _loop(dealer, chain, endpoint, heartbeat, orphan, parent, owner)
    finally:
        dealer.close(linger=0)


def _loop(dealer: zmq.Socket, chain: zmq.Socket, endpoint: str, heartbeat: float,
          orphan: float, parent: int | None, owner: int) -> None:
    """Never blocks on the dealer: until a CURVE handshake succeeds it has no peer to
    send to (a refused key, a wrong server.key, no processor), and the hello and the
    results wait in `out`, so that the orphan check still runs."""
    hello = pack({"type": "hello", "pid": os.getpid(), "thread": owner, "parent": parent or 0,
                  "version": __version__, "build": build_id()})
    beat = pack({"type": "heartbeat"})
    out: deque[list] = deque([[hello]])  # for the dealer, in order, when it has a peer
    started = heard = next_beat = time.monotonic()
    answered = stopping = False
    both, chain_only = zmq.Poller(), zmq.Poller()
    for poller, sockets in ((both, (chain, dealer)), (chain_only, (chain,))):
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
    while True:
        _flush(dealer, out)
        if stopping:
            events = dict(chain_only.poll(1000))
        else:
            both.modify(dealer, zmq.POLLIN | (zmq.POLLOUT if out else 0))
            events = dict(both.poll(max(int((next_beat - time.monotonic()) * 1000), 0)))
        now = time.monotonic()
        if chain in events:
            parts = chain.recv_multipart(copy=False)
            if header_of(parts)["type"] == "bye":  # the chain has stopped
                return
            if not stopping:
                out.append(parts)
        if stopping:
            continue
        if events.get(dealer, 0) & zmq.POLLIN:
            parts = dealer.recv_multipart(copy=False)
            heard, answered = now, True
            kind = header_of(parts)["type"]
            if kind == "reset":  # the dispatcher had given us up: register again
                out.append([hello])
            elif kind == "refused":  # another version: the chain ends with the reason
                chain.send(pack({"type": "failed", "refused": True,
                                 "reason": header_of(parts)["reason"]}))
                return
            elif kind != "heartbeat":
                chain.send_multipart(parts, copy=False)
                stopping = kind == "stop"
        if now >= next_beat:
            if not out:  # else the dealer has no peer: beats would only pile up
                out.append([beat])
            next_beat = now + heartbeat
        if not answered and now - started > orphan:
            chain.send(pack({"type": "failed", "reason": (
                f"the processor at {endpoint} never answered in {orphan:g} s: is it "
                f"running? with CurveZMQ, a worker key not among the processor's [workers] "
                f"keys (its log names the refused key) or a server.key that is not the "
                f"processor's are the likely causes")}))
            return
        gone = parent is not None and os.getppid() != parent
        if gone or now - heard > orphan:
            log.warning("worker %d: dispatcher at %s gone; stopping", os.getpid(), endpoint)
            chain.send(pack({"type": "stop"}))
            stopping = True


def _flush(dealer: zmq.Socket, out: deque) -> None:
    while out:
        try:
            dealer.send_multipart(out[0], zmq.NOBLOCK, copy=False)
        except zmq.Again:  # no peer (yet, or for now): the rest wait too
            return
        out.popleft()
