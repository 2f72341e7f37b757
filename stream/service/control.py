"""The control socket (PROTOCOL.md "Control requests"), served from a thread of its own.

A ROUTER bound at `[control] endpoint` takes msgpack maps with `cmd` from
REQ or DEALER clients and answers each with a msgpack map carrying `ok`:

    status      {"ok": true, "state": ..., ...} at once, from the snapshot the
                daemon's main loop refreshes (so it answers within milliseconds
                while the processor is at full load)
    stop        {"ok": true}: like SIGTERM (the daemon's `on_stop`)

set, checkpoint and stop change the daemon: they need `"token": "<the token>"`,
which the daemon keeps in `[control] token_file` (default
DIRECTORY/.peakstream-control-token, mode 0600: only the daemon's user can
read it; `status` says where it is, so `peakstream set` finds it).
    get, set, checkpoint
                handed to the main loop over an inproc PAIR and applied there
                between points (`ControlServer.serve`, polled by the runner's
                step); answered when the main loop has answered, or with an
                error after `busy_timeout` s

Anything else (not msgpack, not a map, no or an unknown `cmd`, a request of
more than one part) gets {"ok": false, "error": "..."}; the server never dies
of a request.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from stream.wire.sockets import bind

log = logging.getLogger(__name__)

COMMANDS = ("status", "get", "set", "checkpoint", "stop")
MAIN_LOOP = ("get", "set", "checkpoint")
PRIVILEGED = ("set", "checkpoint", "stop")  # these need the token
TOKEN_NAME = ".peakstream-control-token"
MAX_REQUEST = 1 << 20  # bytes: a control request is a small map


def pack(body: dict[str, Any]) -> bytes:
    return msgpack.packb(body, use_bin_type=True, default=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars and other odd values in replies: as plain values or text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def parse(body: bytes) -> dict[str, Any]:
    """A request map, or ValueError saying why it is not one."""
    try:
        req = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several kinds on junk
        raise ValueError(f"not a msgpack map: {type(exc).__name__}") from None
    if not isinstance(req, dict):
        raise ValueError(f"a request is a msgpack map with 'cmd', got {type(req).__name__}")
    cmd = req.get("cmd")
    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    return req


def make_token(path: Path) -> str:
    """The control token in `path`: kept if the file is ours (a regular file of our user,
    mode 0600), else made afresh (exclusively, never through a symlink), so that clients
    of the same user keep working across restarts."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                and stat.S_IMODE(st.st_mode) == 0o600):
            token = read_token(path)
            if len(token) >= 32:
                return token
        path.unlink()  # not ours or not private: never used, never written through
    token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_token(path: str | Path) -> str:
    """The token a file holds (OSError if it cannot be read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd) as fh:
        return fh.read(200).strip()


class ControlServer:
    """The ROUTER's thread, started by `start(snapshot)` (status answers from the first
    snapshot on, never a placeholder); `serve()` is the main loop's half. With a
    `token`, set / checkpoint / stop must carry it (`"token": "..."`); status and get
    need none."""

    def __init__(self, endpoint: str, on_stop: Callable[[], None],
                 handler: Callable[[dict[str, Any]], dict[str, Any]],
                 context: zmq.Context | None = None, busy_timeout: float = 30.0,
                 token: str = "", token_file: str = ""):
        self.token, self.token_file = token, token_file
        self.refused = 0  # privileged requests without the right token
        self.ctx = context or zmq.Context.instance()
        self.on_stop, self.handler, self.busy_timeout = on_stop, handler, busy_timeout
        self.snapshot: dict[str, Any] = {}
        self.snapshot_time = time.monotonic()
        self.requests = 0
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.endpoint = bind(self.router, endpoint, "control: cannot bind {endpoint}")
        inner = f"inproc://peakstream-control-{uuid.uuid4().hex}"
        self.inbox = self.ctx.socket(zmq.PAIR)  # the main loop's end
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(inner)
        self._pair = self.ctx.socket(zmq.PAIR)  # the thread's end
        self._pair.setsockopt(zmq.LINGER, 0)
        self._pair.connect(inner)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self, snapshot: dict[str, Any]) -> None:
        """Serve requests, status answering with `snapshot` until the next `update`
        (its requests wait in the bound socket until then)."""
        self.update(snapshot)
        self._thread.start()
        log.info("control socket on %s", self.endpoint)

    def update(self, snapshot: dict[str, Any]) -> None:
        """The main loop's latest status (replaced whole: the thread only reads it)."""
        self.snapshot = snapshot
        self.snapshot_time = time.monotonic()

    def serve(self) -> None:
        """Main loop: answer the requests the thread handed over."""
        while True:
            try:
                key, body = self.inbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            req = msgpack.unpackb(body, raw=False, strict_map_key=False)
            try:
                reply = self.handler(req)
            except Exception as exc:  # a bug of ours must not stop the daemon
                log.exception("control: %s failed", req.get("cmd"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.inbox.send_multipart([key, pack(reply)])

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        else:  # never started: its sockets are closed here
            self.router.close(linger=0)
            self._pair.close(linger=0)
        self.inbox.close(linger=0)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._pair, zmq.POLLIN)
        pending: dict[bytes, tuple[list[bytes], float]] = {}
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if self.router in events:
                    self._request(self.router.recv_multipart(), pending)
                if self._pair in events:
                    key, reply = self._pair.recv_multipart()
                    envelope, _ = pending.pop(key, (None, 0.0))
                    if envelope is not None:
                        self._send(envelope, reply)
                now = time.monotonic()
                for key, (envelope, since) in list(pending.items()):
                    if now - since > self.busy_timeout:
                        del pending[key]
                        self._send(envelope, pack({"ok": False, "error": "the daemon did not "
                                                   f"answer within {self.busy_timeout:g} s"}))
        except Exception:  # the control thread must not take the daemon down with it
            log.exception("control thread failed")
        finally:
            self.router.close(linger=0)
            self._pair.close(linger=0)

    def _request(self, parts: list[bytes], pending: dict) -> None:
        # REQ clients put an empty delimiter between identity and body; DEALERs may not
        n = 2 if len(parts) > 1 and parts[1] == b"" else 1
        envelope, body = parts[:n], parts[n:]
        self.requests += 1
        try:
            if len(body) != 1:
                raise ValueError(f"a request is one msgpack map, got {len(body)} parts")
            req = parse(body[0])
        except ValueError as exc:
            self._send(envelope, pack({"ok": False, "error": str(exc)}))
            return
        cmd = req["cmd"]
        if cmd in PRIVILEGED and self.token and not (
                isinstance(req.get("token"), str)
                and hmac.compare_digest(req["token"].encode(), self.token.encode())):
            self.refused += 1
            log.warning("control: %s refused: no or a wrong token", cmd)
            self._send(envelope, pack({"ok": False, "error": f"{cmd} needs the control token "
                                       f"(in {self.token_file or 'the token file'}, readable "
                                       f"by the daemon's user; peakstream set reads it)"}))
            return
        if cmd == "status":
            snap = self.snapshot
            reply = {"ok": True, **snap, "token_file": self.token_file,
                     "control_refused": self.refused,
                     "snapshot_age": round(time.monotonic() - self.snapshot_time, 4)}
            self._send(envelope, pack(reply))
        elif cmd == "stop":
            log.info("control: stop requested")
            self.on_stop()
            self._send(envelope, pack({"ok": True, "state": "stopping"}))
        else:
            key = uuid.uuid4().bytes
            pending[key] = (envelope, time.monotonic())
            self._pair.send_multipart([key, body[0]])

    def _send(self, envelope: list[bytes], reply: bytes) -> None:
        try:
            self.router.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client went away
            log.debug("control: reply not sent: %s", exc)


def request(endpoint: str, req: dict[str, Any], timeout: float = 5.0,
            context: zmq.Context | None = None) -> dict[str, Any]:
    """Send one request, wait up to `timeout` s for the reply (TimeoutError if none)."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(pack(req))
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no peakstream daemon answered at {endpoint} within "
                               f"{timeout:g} s")
        return msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
    finally:
        sock.close(linger=0)
