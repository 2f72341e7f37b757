"""`peakstream web`: the Bokeh server of the live view (docs/web.md).

One process holds the live lane's subscriber (`Inbox`), the state of the scans
(`LiveState`, drained into every 0.1 s on the server's loop, and by each page right
before its refresh) and a Bokeh document per open page (`Page`), each refreshed from
that state a few times a second. The daemon
runs it as a child process (`[web] port`), so the page never takes the processor's
time or its GIL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

from stream.service.clients import parse_value
from stream.service.control import read_token, request
from stream.service.web.state import Inbox, LiveState

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
DRAIN_EVERY = 0.1  # s between two drains of the live lane's inbox


class Control:
    """The daemon's control socket, as the pages' controls use it (never raises)."""

    def __init__(self, endpoint: str, timeout: float = 3.0):
        self.endpoint, self.timeout = endpoint, timeout

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            return request(self.endpoint, req, timeout=self.timeout)
        except TimeoutError as exc:
            return {"ok": False, "error": str(exc)}

    def settable(self) -> list[str]:
        """node.key of every parameter the daemon says may change during a scan (its
        `get` reply's `settable`), in the chain's order."""
        reply = self.ask({"cmd": "get"})
        if not reply.get("ok"):
            log.warning("web: no parameters from %s: %s", self.endpoint, reply.get("error"))
            return []
        settable = reply.get("settable") or {}
        return [f"{node}.{key}" for node, params in reply["params"].items()
                for key in params if key in settable.get(node, ())]

    def token(self) -> str:
        """The daemon's control token (set needs it): from $PEAKSTREAM_TOKEN_FILE or the
        file the daemon's status names; "" when it cannot be read (then set is refused)."""
        path = os.environ.get("PEAKSTREAM_TOKEN_FILE") or self.ask({"cmd": "status"}).get(
            "token_file")
        try:
            return read_token(path) if path else ""
        except OSError as exc:
            log.warning("web: cannot read the control token %s: %s", path, exc.strerror)
            return ""

    def set(self, node: str, key: str, text: str) -> dict[str, Any]:
        return self.ask({"cmd": "set", "node": node, "key": key, "value": parse_value(text),
                         "token": self.token()})


def connectable(endpoint: str) -> str:
    """An endpoint as a client connects to it (a wildcard bind means this host)."""
    for wildcard in ("//*:", "//0.0.0.0:"):
        endpoint = endpoint.replace(wildcard, "//127.0.0.1:")
    return endpoint


def origins(address: str, port: int) -> list[str]:
    """The hosts a page may be loaded from (Bokeh checks the websocket's Origin)."""
    if address in WILDCARD:
        return ["*"]
    hosts = {*LOOPBACK[:2], address}
    if address not in LOOPBACK:
        hosts |= {socket.gethostname(), socket.getfqdn()}
    return sorted(f"{h}:{port}" for h in hosts)


def free_port(address: str) -> int:
    """A port free now on `address` (port 0: the websocket origins need the number)."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


ALIVE = "/ps-alive"  # answers this server's instance (the page's reload after a restart)


def alive_handler(instance: str) -> Any:
    """The handler of ALIVE: this server's instance, never cached. A page whose server
    went away (Bokeh does not open a session on a new one) asks it while stale and
    reloads when another server answers (template.py)."""
    from tornado.web import RequestHandler

    class Alive(RequestHandler):
        def get(self) -> None:
            self.set_header("Cache-Control", "no-store")
            self.set_header("Content-Type", "text/plain")
            self.write(instance)

    return Alive


class WebView:
    """The Bokeh server, the live lane's inbox and the shared state."""

    def __init__(self, live: str, control: str | None = None, port: int = 5006,
                 address: str = "127.0.0.1", interval: float = 0.25, stale_after: float = 3.0):
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import Server
        from tornado.ioloop import IOLoop, PeriodicCallback

        self.live, self.interval = connectable(live), interval
        self.instance = secrets.token_hex(8)  # a page of another server reloads (ALIVE)
        self.control = Control(connectable(control)) if control else None
        self.state = LiveState(stale_after)
        self.inbox = Inbox(self.live)  # raises ValueError for an endpoint zmq cannot read
        try:
            self.port, self.address = port or free_port(address), address
            self.loop = IOLoop.current()
            self.server = Server({"/": Application(FunctionHandler(self._page))},
                                 port=self.port, address=address, io_loop=self.loop,
                                 allow_websocket_origin=origins(address, self.port),
                                 extra_patterns=[(ALIVE, alive_handler(self.instance))])
        except OSError:  # the port is busy: no subscriber left behind
            self.inbox.close()
            raise
        self._drain = PeriodicCallback(lambda: self.state.drain(self.inbox),
                                       DRAIN_EVERY * 1000)

    @property
    def url(self) -> str:
        """The page's address: on a wildcard bind, by this machine's host name."""
        host = socket.gethostname() if self.address in WILDCARD else self.address
        return f"http://{host}:{self.port}/"

    @property
    def bound(self) -> str:
        """What the server listens on, in words."""
        every = " (every interface)" if self.address in WILDCARD else ""
        return f"{self.address or '0.0.0.0'}:{self.port}{every}"

    def _page(self, doc: Any) -> None:
        from stream.service.web.page import Page

        Page(doc, self.state, self.control, self.interval, self.live, self.inbox)
        doc.template_variables["instance"] = self.instance

    def start(self) -> None:
        self.server.start()
        self._drain.start()

    def run(self) -> None:
        """Serve until stop() (SIGTERM / SIGINT from the CLI)."""
        self.start()
        self.loop.start()

    def stop(self) -> None:
        self._drain.stop()
        self.server.stop()
        self.loop.stop()

    def close(self) -> None:
        self.inbox.close()
