"""`peakstream web`'s command line: the live view in a browser
(`stream.service.web.server`, docs/web.md)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

log = logging.getLogger(__name__)


def cmd_web(args: argparse.Namespace) -> int:
    """peakstream web [--live] [--control --allow-control] [--port] [--address]."""
    from stream.service.web.server import LOOPBACK, WebView

    try:
        import bokeh  # noqa: F401 (the optional extra [web])
    except ImportError:
        print("peakstream web: Bokeh is not installed: pip install -e '.[web]'",
              file=sys.stderr)
        return 2
    if args.allow_control and args.address not in LOOPBACK:
        log.warning("web: controls are on and the page is served on %s: anyone who can "
                    "reach it can change the processing parameters", args.address)
    try:
        view = WebView(args.live, args.control if args.allow_control else None, args.port,
                       args.address, args.interval, args.stale_after)
    except OSError as exc:
        print(f"peakstream web: cannot serve on {args.address}:{args.port}: {exc}",
              file=sys.stderr)
        return 2
    except ValueError as exc:  # --live not an endpoint
        print(f"peakstream web: --live: {exc}", file=sys.stderr)
        return 2

    def stop(*_: Any) -> None:
        view.loop.add_callback_from_signal(view.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"peakstream web: the page is on {view.url} (served on {view.bound}, live lane "
          f"{view.live}, controls {'on, ' + view.control.endpoint if view.control else 'off'})",
          file=sys.stderr, flush=True)
    try:
        view.run()
    finally:
        view.close()
    return 0


def add_parser(sub: Any) -> None:
    """The `web` command's options."""
    p = sub.add_parser(
        "web", help="the live view in a browser (a Bokeh server fed by the live lane)",
        description="Serve a page that shows the scan in progress as it runs (progress, "
                    "peaks per point, the latest frame with its peaks, the map, the radial "
                    "pattern, the last cliques and their rocking curves, the scans so far), "
                    "fed by a daemon's live lane. Every open page is updated; a page opened "
                    "mid-scan shows the scan so far. See docs/web.md.")
    p.add_argument("--live", default="tcp://127.0.0.1:5556",
                   help="the daemon's live lane endpoint (default tcp://127.0.0.1:5556)")
    p.add_argument("--control", default="tcp://127.0.0.1:5557",
                   help="the daemon's control endpoint, used with --allow-control "
                        "(default tcp://127.0.0.1:5557)")
    p.add_argument("--allow-control", action="store_true",
                   help="let the page change node parameters (e.g. threshold.cut) through "
                        "the control socket; off by default")
    p.add_argument("--port", type=int, default=5006,
                   help="HTTP port of the page (default 5006; 0: any free port)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1, this machine only; "
                        "0.0.0.0 serves every interface: an explicit choice)")
    p.add_argument("--interval", type=float, default=0.25,
                   help="s between two refreshes of a page (default 0.25)")
    p.add_argument("--stale-after", type=float, default=3.0,
                   help="s without a live message before the page says 'stale' (default 3)")
    p.set_defaults(func=lambda args: cmd_web(args))
