"""The parsers of the daemon's clients: status, get, set, stop (the control socket) and
watch (the live lane); light to import, so a client answers fast."""

from __future__ import annotations

import argparse


def _client(name: str):
    def run(args: argparse.Namespace) -> int:
        from stream.service import clients

        return getattr(clients, f"cmd_{name}")(args)
    return run


def add_clients(sub) -> None:
    """status, get, set (the control socket) and watch (the live lane)."""
    control = "tcp://127.0.0.1:5557"
    for name, text in (("status", "a running daemon's state, counters, scan and file"),
                       ("get", "a node's parameters (every node's without NODE)"),
                       ("set", "change a node parameter from the next point on"),
                       ("stop", "finish the scan in progress, write it and exit")):
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}, over "
                                                         f"the daemon's control socket.")
        p.add_argument("--control", default=control, help=f"the daemon's control endpoint "
                                                          f"(default {control})")
        p.add_argument("--timeout", type=float, default=5.0,
                       help="s to wait for the answer (default 5)")
        if name in ("set", "stop"):
            p.add_argument("--token-file", help="the daemon's control token file (default: "
                                                "$PEAKSTREAM_TOKEN_FILE, else where the "
                                                "daemon's status says it is)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "get":
            p.add_argument("node", nargs="?", help="node kind, e.g. threshold")
            p.add_argument("key", nargs="?", help="one parameter")
        elif name == "set":
            p.add_argument("node", help="node kind, e.g. threshold")
            p.add_argument("key", help="parameter, e.g. cut")
            p.add_argument("value", help="new value (number, true/false or text)")
        p.set_defaults(func=_client(name))
    live = "tcp://127.0.0.1:5556"
    p = sub.add_parser("watch", help="a one-line live status of a running daemon",
                       description="Subscribe to the daemon's live lane and print its "
                                   "progress (rates, lag, points, cliques) on one line, "
                                   "rewritten in place.")
    p.add_argument("--live", default=live, help=f"the live lane endpoint (default {live})")
    p.add_argument("--once", action="store_true", help="print one line and exit")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="--once: s to wait for a progress message (default 10)")
    p.set_defaults(func=_client("watch"))
    from stream.cli import web

    web.add_parser(sub)
