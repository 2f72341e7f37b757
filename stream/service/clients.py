"""Command-line clients of a running daemon: status, get, set (control socket) and watch
(live lane). Exit codes: 0 done, 1 the daemon refused or did not answer, 2 bad usage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _token(args: argparse.Namespace) -> str | None:
    """The control token: from --token-file, $PEAKSTREAM_TOKEN_FILE, or the file the
    daemon's status names (readable by the daemon's user only)."""
    from stream.service.control import read_token, request

    path = getattr(args, "token_file", None) or os.environ.get("PEAKSTREAM_TOKEN_FILE")
    if not path:
        path = request(args.control, {"cmd": "status"}, timeout=args.timeout).get("token_file")
    if not path:
        return ""
    try:
        return read_token(path)
    except OSError as exc:
        print(f"peakstream {args.command}: cannot read the control token {path}: "
              f"{exc.strerror} (run as the daemon's user, or give --token-file)",
              file=sys.stderr)
        return None


def _ask(args: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any] | None:
    from stream.service.control import PRIVILEGED, request

    try:
        if req["cmd"] in PRIVILEGED:
            token = _token(args)
            if token is None:
                return None
            req = {**req, "token": token}
        reply = request(args.control, req, timeout=args.timeout)
    except TimeoutError as exc:
        print(f"peakstream {args.command}: {exc} (is the daemon running? give its "
              f"endpoint with --control)", file=sys.stderr)
        return None
    if not reply.get("ok"):
        print(f"peakstream {args.command}: the daemon refused: {reply.get('error')}",
              file=sys.stderr)
        return None
    return reply


def parse_value(text: str) -> Any:
    """A value from the command line: int, float, true/false, or the text itself."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def cmd_status(args: argparse.Namespace) -> int:
    reply = _ask(args, {"cmd": "status"})
    if reply is None:
        return EXIT_FAILED
    if args.json:
        print(json.dumps(reply, indent=2, default=str))
    else:
        print(format_status(reply))
    return EXIT_OK


def format_status(s: dict[str, Any]) -> str:
    """`peakstream status`'s text: only what the daemon said (a key it did not send is
    left out, never printed as None)."""
    version = f" {s['version']}" if s.get("version") else ""
    pid = f" (pid {s['pid']})" if s.get("pid") else ""
    warm = s.get("warmup") or {}  # while warming: the kernels loaded (of the total)
    kernels = (f" (kernels {warm.get('kernels', 0)}"
               f"{'/' + str(warm['total']) if warm.get('total') else ''})" if warm else "")
    lines = [f"peakstream daemon{version}{pid}: {s.get('state') or 'state unknown'}{kernels}, "
             f"{s.get('scans_done') or 0} scan(s) done, up {s.get('uptime') or 0:.0f} s, "
             f"RSS {(s.get('rss') or 0) / 2**20:.0f} MiB"]
    ep = s.get("endpoints") or {}
    data = ep.get("data") or "-"
    if not ep.get("data") and s.get("state") in ("warming", "starting"):  # not open yet
        data = ("bound after the warm-up" if (s.get("source") or {}).get("kind", "zmq")
                in ("zmq", "dectris") else "not open yet")
    lines.append(f"  endpoints   data {data}, control {ep.get('control') or '-'}, "
                 f"live {ep.get('live') or '-'}")
    web = s.get("web")
    if web:
        lines.append(f"  web view    {web['url']} {web['state']}"
                     + (f", {web['restarts']} restart(s)" if web.get("restarts") else ""))
    scan = s.get("scan")
    if scan:
        of = f"/{scan['npoints']}" if scan.get("npoints") is not None else ""
        lines.append(f"  scan        {scan['scan_id']}: {scan['linked']}{of} linked, "
                     f"{scan['received']} received, lag {scan['lag']}, {scan['missing']} "
                     f"missing, {scan['bad']} bad, {scan['cliques']} cliques -> {scan['file']}")
    last = s.get("last_scan")
    if last:
        lines.append(f"  last scan   {last['scan_id']}: {last['status']}"
                     f"{' (' + last['reason'] + ')' if last.get('reason') else ''} -> "
                     f"{last['file']}")
    source = {k: v for k, v in (s.get("source") or {}).items()
              if not isinstance(v, dict | list) and v not in ("", None)}
    warning = source.pop("warning", "")  # a scan quiet for long (blissdata): a line of its own
    if source:  # the source's own counters (blissdata, pva, dectris)
        lines.append("  source      " + ", ".join(f"{k} {v}" for k, v in source.items()))
    if warning:
        lines.append(f"  warning     {warning}")
    w = s.get("workers") or {}
    if w:
        lines.append(f"  workers     {w.get('workers', 0)} {w.get('kind', '')}, "
                     f"{s.get('in_flight') or 0}/{s.get('queue') or 0} points out")
    if s.get("params"):
        lines.append(f"  params      {json.dumps(s['params'])}")
    if s.get("last_error"):
        lines.append(f"  last error  {s['last_error']}")
    return "\n".join(lines)


def cmd_get(args: argparse.Namespace) -> int:
    req: dict[str, Any] = {"cmd": "get"}
    if args.node is not None:
        req["node"] = args.node
    if args.key is not None:
        req["key"] = args.key
    reply = _ask(args, req)
    if reply is None:
        return EXIT_FAILED
    print(json.dumps(reply["params"], indent=2, default=str))
    # what `set` may change, and what it may not and why, on stderr: stdout stays the JSON
    shown = [args.node] if args.node is not None else list(reply.get("settable") or {})
    settable = [f"{node}.{key}" for node in shown
                for key in (reply.get("settable") or {}).get(node, ())]
    print(f"settable (peakstream set): {', '.join(settable) or 'none'}", file=sys.stderr)
    for node, keys in (reply.get("unused") or {}).items():
        if node in shown:
            for key, why in keys.items():
                print(f"{node}.{key} is not used by this chain: {why}", file=sys.stderr)
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    reply = _ask(args, {"cmd": "set", "node": args.node, "key": args.key,
                        "value": parse_value(args.value)})
    if reply is None:
        return EXIT_FAILED
    print(f"{reply['node']}.{reply['key']} = {reply['value']!r} (was {reply['old']!r}), "
          f"from the next point")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    reply = _ask(args, {"cmd": "stop"})
    if reply is None:
        return EXIT_FAILED
    print("the daemon is stopping: it finishes the scan in progress, writes it and exits")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """One line of live status, rewritten in place (or printed once with --once)."""
    import zmq

    from stream.service.live import unpack

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100)
    for topic in (b"progress ", b"cliques "):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(args.live)
    tty = sys.stdout.isatty() and not args.once
    closed, last = 0, time.monotonic()
    try:
        while True:
            if not sock.poll(int(args.timeout * 1000)):
                if args.once:
                    print(f"peakstream watch: nothing from {args.live} within "
                          f"{args.timeout:g} s (is the daemon running with its live lane?)",
                          file=sys.stderr)
                    return EXIT_FAILED
                continue
            topic, body = unpack(sock.recv())
            if topic == "cliques":
                closed += body.get("count", 0)
                continue
            line = format_progress(body, closed / max(time.monotonic() - last, 1e-9))
            closed, last = 0, time.monotonic()
            if args.once:
                print(line)
                return EXIT_OK
            sys.stdout.write(("\r" + line + "\033[K") if tty else line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        if tty:
            sys.stdout.write("\n")
        return EXIT_OK
    finally:
        sock.close(linger=0)


def format_progress(p: dict[str, Any], cliques_rate: float = 0.0) -> str:
    scan = p.get("scan")
    if not scan:
        ended = p.get("ended")
        tail = f"; last scan {ended['scan_id']}: {ended['status']}" if ended else ""
        return f"{p.get('state', '?')}: no scan in progress{tail}"
    rates = p.get("rates") or {}
    of = f"/{scan['npoints']}" if scan.get("npoints") is not None else ""
    return (f"{p['state']}: {scan['scan_id']} {scan['linked']}{of} points, "
            f"{rates.get('received', 0):.0f}/s in, {rates.get('linked', 0):.0f}/s linked, "
            f"lag {scan['lag']}, {scan['cliques']} cliques ({cliques_rate:.0f}/s), "
            f"{scan['missing']} missing, {scan['bad']} bad, "
            f"RSS {p.get('rss', 0) / 2**20:.0f} MiB")
