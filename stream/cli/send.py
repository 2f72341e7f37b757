"""`peakstream simulate --send`: the scan over ZeroMQ, and "sent" only once delivered.

The sender waits for a receiver before it sends (a daemon still warming up binds
its data socket only when ready), and at the end until the receiver has taken
the last messages; after `--timeout` s of either it says what was not delivered
and exits 1, never "sent" for messages ZeroMQ dropped.
"""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

SEND_TIMEOUT = 300.0  # s: a daemon's first start on a cold numba cache takes about a minute


def add_send_options(p: argparse.ArgumentParser) -> None:
    """--send, --encoding and --timeout of `simulate`."""
    p.add_argument("--send", metavar="ENDPOINT", help="send the scan to a listening peakstream "
                                                      "(e.g. tcp://127.0.0.1:5555)")
    p.add_argument("--encoding", choices=("raw", "bslz4", "lz4"), default="raw",
                   help="frames on the wire with --send (default raw): bslz4 = bitshuffle + LZ4 "
                        "as an Eiger sends them, lz4 = LZ4 (HDF5 filter framing)")
    p.add_argument("--timeout", type=float, default=SEND_TIMEOUT, metavar="S",
                   help=f"--send: seconds to wait for the receiver to connect, to take a "
                        f"point and at the end the last ones (default {SEND_TIMEOUT:g})")


def send(args: argparse.Namespace, sim: Any, progress: Any) -> int:
    """Send the scan; the exit code (0 every message delivered, 1 not)."""
    import zmq

    from stream.sources.simulate import send_scan

    def waiting() -> None:
        if not args.quiet:
            print(f"simulate: waiting for the receiver at {args.send} (up to --timeout "
                  f"{args.timeout:g} s)", file=sys.stderr, flush=True)

    try:
        n = send_scan(sim, args.send, args.scan_id, rate=args.rate, progress=progress,
                      encoding=args.encoding, linger_ms=-1, timeout=args.timeout,
                      receiver_timeout=args.timeout, waiting=waiting)
    except TimeoutError as exc:
        print(f"peakstream simulate: {exc}", file=sys.stderr)
        return 1
    term = threading.Thread(target=zmq.Context.instance().term, daemon=True)
    term.start()  # returns once the receiver has taken every queued message
    term.join(args.timeout)
    if term.is_alive():
        print(f"peakstream simulate: the receiver at {args.send} took not all of the last "
              f"messages within {args.timeout:g} s: up to {n} points (those still queued) "
              f"and the scan's end were not delivered", file=sys.stderr)
        return 1
    progress(n, force=True)
    progress.done()
    print(f"sent {n} points of scan {args.scan_id} to {args.send}")
    return 0
