"""peakstream command line: run | replay | simulate | inspect | demo.

Exit codes: 0 done, 1 a scan failed or was aborted, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ConfigError

log = logging.getLogger("peakstream")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, every few s otherwise."""

    def __init__(self, label: str, total: int | None = None, interval: float = 2.0,
                 quiet: bool = False):
        self.label, self.total, self.quiet = label, total, quiet
        self.tty = sys.stderr.isatty()
        self.interval = 0.2 if self.tty else interval
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int, total: int | None = None, extra: str = "",
                 force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < self.interval):
            return
        self.last = now
        total = total if total is not None else self.total
        rate = done / max(now - self.t0, 1e-9)
        of = f"/{total}" if total else ""
        line = f"{self.label}: {done}{of} ({rate:.0f}/s){' ' + extra if extra else ''}"
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


# ------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    from .inspect import format_summary, summary
    from .runner import ScanRunner
    from .sources.zmq import ZmqSource

    config = _config(args)
    runner = ScanRunner(config, output_dir=args.output)
    stop = _stop_flag()
    src = config["source"]
    try:
        source = ZmqSource(src["listen"], src["rcvhwm"])
    except OSError as exc:
        print(f"peakstream run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"peakstream {__version__}: listening on {source.endpoint}, writing to "
          f"{runner.output_dir}", file=sys.stderr, flush=True)
    progress = Progress("run", quiet=args.quiet, interval=args.progress_interval)
    with source:
        while not stop["now"] and (args.scans is None or len(runner.results) < args.scans):
            parts = source.recv(timeout=0.2)
            if parts is not None:
                runner.handle(parts)
            else:
                runner.poll()
            cur = runner.current
            if cur is not None:
                c = cur.counters
                progress(c["linked"], cur.scan.start.npoints,
                         f"scan {cur.scan.scan_id}: {c['processed']} processed, "
                         f"{c['missing']} missing, {c['bad']} bad, {c['cliques']} cliques, "
                         f"lag {cur.lag}")
        runner.close("stopped by signal" if stop["now"] else "stopped")
    progress.done()
    for r in runner.results:
        print(format_summary(summary(r["file"])))
    c = runner.counters
    print(f"session: {len(runner.results)} scan(s), {c['received']} messages, "
          f"{c['rejected']} rejected, {c['duplicate']} duplicate, {c['malformed']} malformed")
    return _exit_code(runner.results)


def cmd_replay(args: argparse.Namespace) -> int:
    from .inspect import format_summary, summary
    from .message import encode
    from .runner import ScanRunner
    from .sources.simulate import read_scan

    config = _config(args)
    out = Path(args.output)
    if len(args.inputs) > 1 and out.suffix == ".h5":
        print("peakstream replay: several inputs need --output DIR", file=sys.stderr)
        return EXIT_USAGE
    single = out if out.suffix == ".h5" else None
    if single is not None and single.exists():
        print(f"peakstream replay: {single} exists; remove it or choose another name",
              file=sys.stderr)
        return EXIT_USAGE
    runner = ScanRunner(config, output_dir=None if single else out, output_file=single)
    for path in args.inputs:
        try:
            start, points = read_scan(path)
        except (OSError, ValueError) as exc:
            print(f"peakstream replay: {exc}", file=sys.stderr)
            return EXIT_USAGE
        progress = Progress(f"replay {Path(path).name}", start.npoints, quiet=args.quiet)
        runner.handle(encode(start))  # through the wire encoding, as a live scan
        n = 0
        for point in points:
            runner.handle(encode(point))
            n += 1
            progress(n)
        from .message import End

        runner.handle(encode(End(start.scan_id, "success", n)))
        progress(n, force=True)
        progress.done()
    runner.close()
    for r in runner.results:
        print(format_summary(summary(r["file"])))
    return _exit_code(runner.results)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .sources.simulate import SimConfig, Simulation, send_scan, write_scan

    if not args.output and not args.send:
        print("peakstream simulate: give --output FILE.h5 or --send ENDPOINT", file=sys.stderr)
        return EXIT_USAGE
    sim = Simulation(_sim_config(args, SimConfig))
    progress = Progress("simulate", args.points, quiet=args.quiet)
    if args.output:
        if Path(args.output).exists():
            print(f"peakstream simulate: {args.output} exists", file=sys.stderr)
            return EXIT_USAGE
        write_scan(sim, args.output, args.scan_id, progress=progress)
        progress(args.points, force=True)
        progress.done()
        print(f"wrote {args.output}: {args.points} points {args.shape[0]}x{args.shape[1]}, "
              f"{len(sim.truth['s'])} spots ({int(sim.truth['clean'].sum())} clean)")
    if args.send:
        n = send_scan(sim, args.send, args.scan_id, rate=args.rate, progress=progress)
        progress(n, force=True)
        progress.done()
        print(f"sent {n} points of scan {args.scan_id} to {args.send}")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import format_summary, summary, to_json

    status = EXIT_OK
    for path in args.files:
        try:
            s = summary(path)
        except (OSError, ValueError) as exc:
            print(f"peakstream inspect: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        print(to_json(s) if args.json else format_summary(s))
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulated acquisition -> ZeroMQ -> processor -> HDF5 -> summary and truth check."""
    from .inspect import format_summary, load, summary
    from .runner import ScanRunner
    from .sources.simulate import SimConfig, Simulation
    from .sources.zmq import ZmqSource
    from .truth import score

    config = _config(args)
    runner = ScanRunner(config, output_dir=args.output)
    source = ZmqSource("tcp://127.0.0.1:0", config["source"]["rcvhwm"])
    cmd = [sys.executable, "-m", "stream.cli", "simulate", "--quiet", "--send", source.endpoint,
           "--points", str(args.points), "--shape", *map(str, args.shape),
           "--spots", str(args.spots), "--seed", str(args.seed), "--scan-id", args.scan_id]
    if args.rate:
        cmd += ["--rate", str(args.rate)]
    print(f"demo: simulated acquisition ({args.points} points, {args.shape[0]}x{args.shape[1]}, "
          f"{args.spots} spots) -> {source.endpoint} -> {runner.output_dir}", file=sys.stderr)
    sender = subprocess.Popen(cmd)
    progress = Progress("demo", args.points, quiet=args.quiet)
    deadline = time.monotonic() + args.timeout
    with source:
        while not runner.results and time.monotonic() < deadline:
            parts = source.recv(timeout=0.2)
            if parts is not None:
                runner.handle(parts)
            else:
                runner.poll()
            if runner.current is not None:
                progress(runner.current.counters["linked"])
            if sender.poll() not in (None, 0):
                break
        runner.close("demo timed out or sender failed")
    progress.done()
    sender.wait(timeout=30)
    if not runner.results:
        print("demo: no scan was received", file=sys.stderr)
        return EXIT_FAILED
    path = runner.results[0]["file"]
    print(format_summary(summary(path)))
    truth = Simulation(_sim_config(args, SimConfig)).truth
    found, total = score(load(path)["cliques"], truth, "clean")
    print(f"  truth       {found}/{total} isolated spots found as exactly one clique "
          f"(centroid within 1 px and 0.5 point)")
    return _exit_code(runner.results)


# ------------------------------------------------------------------ helpers


def _config(args: argparse.Namespace) -> Config:
    config = Config.load(args.config)
    if getattr(args, "listen", None):
        config.override("source", "listen", args.listen)
    return config


def _sim_config(args: argparse.Namespace, cls: Any) -> Any:
    return cls(npoints=args.points, shape=tuple(args.shape), spots=args.spots, seed=args.seed)


def _exit_code(results: list[dict[str, Any]]) -> int:
    return EXIT_OK if all(r["status"] == "success" for r in results) else EXIT_FAILED


def _stop_flag() -> dict[str, bool]:
    flag = {"now": False}

    def handler(signum: int, frame: Any) -> None:
        flag["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return flag


def _add_sim_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--points", type=int, default=90, help="scan points (default 90)")
    p.add_argument("--shape", type=int, nargs=2, default=[256, 256], metavar=("NY", "NX"),
                   help="frame shape (default 256 256)")
    p.add_argument("--spots", type=int, default=40, help="true spots (default 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scan-id", default="sim-0001", help="scan_id (default sim-0001)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="peakstream",
        description="Online peak search for scanning X-ray diffraction: frames arrive over "
                    "ZeroMQ (or are replayed from files), pass correct / normalise / threshold "
                    "/ label / properties, 2D peaks are linked into 3D peaks (cliques) while "
                    "the scan runs, and everything is written to HDF5.",
        epilog="Exit codes: 0 done, 1 a scan failed or was aborted, 2 bad usage or config.")
    top.add_argument("--version", action="version", version=f"peakstream {__version__}")
    top.add_argument("-v", "--verbose", action="count", default=0,
                     help="more log output (-v info, -vv debug)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="listen for scans over ZeroMQ and process them",
                       description="Bind a PULL socket (PROTOCOL.md), process every scan that "
                                   "arrives and write one HDF5 file per scan, named after its "
                                   "scan_id, into the output directory.")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults)")
    p.add_argument("--listen", help="endpoint to bind (overrides [source] listen; "
                                    "default tcp://127.0.0.1:5555)")
    p.add_argument("--output", help="output directory (overrides [output] directory)")
    p.add_argument("--scans", type=int, help="exit after this many scans (default: run until "
                                             "SIGINT/SIGTERM)")
    p.add_argument("--progress-interval", type=float, default=2.0,
                   help="seconds between progress lines when not on a terminal (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="process recorded scans through the same chain",
                       description="Replay recorded scans (for now: files written by "
                                   "'peakstream simulate --output') through the same nodes, "
                                   "linker and store as a live run.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="recorded scan file(s)")
    p.add_argument("--config", help="TOML config (default: built-in defaults)")
    p.add_argument("--output", required=True,
                   help="output FILE.h5 (one input) or directory (several inputs)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("simulate", help="a synthetic scan with known truth: write or send it",
                       description="Make a synthetic scan (Poisson background, hot and dead "
                                   "pixels, a detector gap, 3D Gaussian spots, some touching) "
                                   "and write it to HDF5 with its truth table, or send it over "
                                   "ZeroMQ as an acquisition would.")
    _add_sim_options(p)
    p.add_argument("--output", help="write the scan (frames, motors, truth) to FILE.h5")
    p.add_argument("--send", metavar="ENDPOINT", help="send the scan to a listening peakstream "
                                                      "(e.g. tcp://127.0.0.1:5555)")
    p.add_argument("--rate", type=float, help="points per second when sending (default: as "
                                              "fast as the receiver takes them)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("inspect", help="summarise output files",
                       description="Print what an output file holds: status, points (ok, "
                                   "missing, bad), 2D peaks, overlaps, cliques, config hash, "
                                   "counters and recorded events.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="end to end: simulator -> ZeroMQ -> processor -> HDF5",
                       description="Start a simulated acquisition in a separate process that "
                                   "streams over ZeroMQ (loopback, ephemeral port) into the "
                                   "processor; write HDF5; print the summary and the check "
                                   "against the simulation's truth.")
    _add_sim_options(p)
    p.add_argument("--config", default=None,
                   help="TOML config (default: configs/simulated.toml if present)")
    p.add_argument("--output", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--rate", type=float, help="points per second (default: full speed)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many s")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_demo)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo" and args.config is None:
        default = Path(__file__).resolve().parent.parent / "configs" / "simulated.toml"
        args.config = str(default) if default.exists() else None
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"peakstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
