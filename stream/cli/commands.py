"""The commands behind `peakstream` (parsing is in stream/cli/main.py; simulate has its
own module, stream/cli/simulate.py).

Each `cmd_*` takes the parsed arguments and returns the exit code: 0 done,
1 a scan failed or was aborted, 2 bad usage or config.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stream import __version__
from stream.cli.codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from stream.cli.presets import CONFIGS, presets
from stream.cli.progress import ProgressLine, StatusLine
from stream.config.base import ConfigError
from stream.config.schema import Config

log = logging.getLogger("peakstream")


# ------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    from stream.run.runner import ScanRunner
    from stream.sources.base import open_source
    from stream.store.reader import format_summary, summary

    config = _config(args)
    if unsafe := _unsafe_output(config, args.output):  # as the daemon (security.md)
        print(f"peakstream run: {unsafe}", file=sys.stderr)
        return EXIT_USAGE
    stop = _stop_flag()
    if not _warm_up(config, "run", stop, args.quiet):  # before the data socket is bound
        return EXIT_OK  # no scan was taken: as the daemon
    try:
        source = open_source(config)
    except (OSError, ValueError) as exc:
        print(f"peakstream run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        runner = ScanRunner(config, output_dir=args.output)
        runner.freeze_gc = True  # a process of its own: see freeze_long_lived
        runner.live = lane = _live_lane(args.config, config)
    except OSError as exc:  # the workers' endpoint, the live lane's
        source.close()
        print(f"peakstream run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    live = f", live lane on {lane.endpoint}" if lane else ""
    print(f"peakstream {__version__}: {_reading(source)}, writing to {runner.output_dir}{live}",
          file=sys.stderr, flush=True)
    progress, lane_next = StatusLine(runner, quiet=args.quiet,
                                     interval=args.progress_interval), 0.0
    with source:
        try:
            while not stop["now"] and (args.scans is None or len(runner.results) < args.scans):
                runner.step(source)
                progress()
                if lane is not None and time.monotonic() >= lane_next:  # as the daemon's
                    lane_next = time.monotonic() + lane.interval
                    lane.progress(runner.status(), "running" if runner.current else "idle",
                                  force=True)
        finally:
            runner.close("stopped by signal" if stop["now"] else "stopped")
            if lane is not None:
                lane.close()
    progress.done()
    for r in runner.results:
        print(format_summary(summary(r["file"])))
    c = runner.counters
    print(f"session: {len(runner.results)} scan(s), {c['received']} messages, "
          f"{c['rejected']} rejected, {c['duplicate']} duplicate, {c['malformed']} malformed")
    return _exit_code(runner.results)


def _unsafe_output(config: Config, output: str | None) -> str:
    """Why the output directory must not be written in (world-writable without the
    sticky bit, unless [output] shared_directory), or "": the daemon's own check."""
    from stream.service.daemon import unsafe_directory

    return unsafe_directory(Path(output or config["output"]["directory"]),
                            config["output"]["shared_directory"])


def cmd_relink(args: argparse.Namespace) -> int:
    from stream.offline.relink import relink
    from stream.run.warmup import compile_notices
    from stream.store.reader import format_summary, summary

    if Path(args.output).exists():
        print(f"peakstream relink: {args.output} exists; remove it or choose another name",
              file=sys.stderr)
        return EXIT_USAGE
    criterion = args.criterion[0] if len(args.criterion or ()) == 1 else args.criterion
    progress = ProgressLine("relink", quiet=getattr(args, "quiet", False))
    try:
        with compile_notices(progress.compiled):  # a new install: the linker's kernels
            result = relink(args.file, args.output, criterion, args.fraction, args.distance,
                            **{k: v for k in ("split", "background")
                               if (v := getattr(args, k, None)) is not None})
    except (OSError, ValueError) as exc:
        print(f"peakstream relink: {exc}", file=sys.stderr)
        return EXIT_USAGE if not Path(args.output).exists() else EXIT_FAILED
    progress.done()
    print(format_summary(summary(result["file"])))
    print(f"  linker      {result['criterion']}")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from stream.store.journal import writer_holds
    from stream.store.reader import format_summary, summary, to_json

    if args.clique is not None or args.png:
        return _rocking(args)
    status = EXIT_OK
    for path in args.files:
        try:
            s = summary(path)
        except (OSError, ValueError) as exc:  # not there, not HDF5, not ours: as export
            print(f"peakstream inspect: {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        if s["status"] == "running":  # is a process still writing it?
            s["writer"] = writer_holds(path)
        print(to_json(s) if args.json else format_summary(s))
    return status


def _rocking(args: argparse.Namespace) -> int:
    """inspect FILE --clique N [--png OUT]: the clique's intensity per point."""
    import json

    from stream.offline.rocking import as_json, format_curve, plot, rocking_curve

    if args.clique is None or len(args.files) != 1:
        print("peakstream inspect: --clique N takes one FILE (and --png needs --clique)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        curve = rocking_curve(args.files[0], args.clique)
    except (OSError, ValueError) as exc:  # no such file or clique, not ours
        print(f"peakstream inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(as_json(curve), indent=2) if args.json else format_curve(curve, args.clique))
    if args.png:
        try:
            plot(curve, args.clique, args.png)
        except ImportError as exc:
            print(f"peakstream inspect: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"wrote {args.png}", file=sys.stderr)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from stream.offline.export import export

    if Path(args.output).exists():
        print(f"peakstream export: {args.output} exists; remove it or choose another name",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        result = export(args.file, args.format, args.output, getattr(args, "omega", None))
    except (OSError, ValueError, KeyError) as exc:  # as relink: 2 if nothing was written
        print(f"peakstream export: {exc}", file=sys.stderr)
        return EXIT_USAGE if not Path(args.output).exists() else EXIT_FAILED
    if result.get("warning"):
        print(f"peakstream export: warning: {result['warning']}", file=sys.stderr)
    what = "cliques" if args.format == "flt" else "frames"
    print(f"wrote {result['file']}: {result['rows']} {what} ({args.format})")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulated acquisition -> ZeroMQ -> processor -> HDF5 -> summary and truth check."""
    from stream.cli.simulate import sim_config
    from stream.run.runner import ScanRunner
    from stream.sources.simulate import Simulation
    from stream.sources.simulate.config import SimConfig
    from stream.sources.simulate.truth import score
    from stream.sources.zmq import ZmqSource
    from stream.store.reader import format_summary, load, summary

    config = _config(args)
    config.override("source", "warmup", ["uint16/raw"])  # what the simulator sends
    stop = _stop_flag()
    if not _warm_up(config, "demo", stop, args.quiet):
        return EXIT_FAILED  # no scan was processed
    source = ZmqSource("tcp://127.0.0.1:0", config["source"]["rcvhwm"])
    runner = ScanRunner(config, output_dir=args.output)
    cmd = [sys.executable, "-m", "stream.cli", "simulate", "--quiet", "--send", source.endpoint,
           "--points", str(args.points), "--shape", *map(str, args.shape),
           "--spots", str(args.spots), "--seed", str(args.seed), "--scan-id", args.scan_id]
    if args.rate:
        cmd += ["--rate", str(args.rate)]
    print(f"demo: simulated acquisition ({args.points} points, {args.shape[0]}x{args.shape[1]}, "
          f"{args.spots} spots) -> {source.endpoint} -> {runner.output_dir}", file=sys.stderr)
    sender = subprocess.Popen(cmd)
    progress = StatusLine(runner, quiet=args.quiet, label="demo")
    deadline = time.monotonic() + args.timeout
    with source:
        try:
            while not runner.results and time.monotonic() < deadline and not stop["now"]:
                runner.step(source)
                progress()
                if sender.poll() not in (None, 0):
                    break
        finally:
            runner.close("stopped by signal" if stop["now"]
                         else "demo timed out or sender failed")
    progress.done()
    if stop["now"]:
        sender.terminate()
    sender.wait(timeout=30)
    if not runner.results:
        print("demo: no scan was received", file=sys.stderr)
        return EXIT_FAILED
    path = runner.results[0]["file"]
    print(format_summary(summary(path)))
    truth = Simulation(sim_config(args, SimConfig)).truth
    found, total = score(load(path)["cliques"], truth, "clean")
    print(f"  truth       {found}/{total} isolated spots found as exactly one clique "
          f"(centroid within 1 px and 0.5 point)")
    return _exit_code(runner.results)


# ------------------------------------------------------------------ helpers


def _live_lane(path: str | None, config: Config) -> Any:
    """The daemon's live lane (`peakstream web`, `watch`) when the config file has a
    [live] group with an endpoint; None otherwise (the defaults alone bind nothing)."""
    import tomllib

    live = config["live"]
    if not path or "live" not in tomllib.loads(Path(path).read_text()) \
            or not live["endpoint"]:
        return None
    from stream.service.live import LiveLane

    return LiveLane(live["endpoint"], live["interval"], live["frame_rate"], live["frame_bin"],
                    live["sndhwm"], max_map_cells=live["max_map_cells"])


def _config(args: argparse.Namespace) -> Config:
    preset = getattr(args, "preset", None)
    if preset:
        if args.config:
            raise ConfigError("give --config or --preset, not both")
        if preset not in presets():
            raise ConfigError(f"no preset {preset!r} (presets: {', '.join(presets())})"
                              if presets() else f"no preset {preset!r}: no configs in "
                              f"{CONFIGS} (reinstall peakstream)")
        args.config = str(CONFIGS / f"{preset}.toml")
    config = Config.load(args.config)
    if getattr(args, "listen", None):
        config.override("source", "listen", args.listen)
    return config


def _reading(source: Any) -> str:
    """What a live source reads, for the banner ("listening on ENDPOINT" for our lane:
    scripts and tests read the bound endpoint from it, and wait for it: a DECTRIS
    source says it too, its motor lane's endpoint or "-" as the daemon, or the
    documented wait for "listening on" never ended)."""
    status = source.status()
    if getattr(source, "reading", ""):  # a control system's source says what it follows
        return source.reading
    if status.get("kind") == "dectris":
        lane = (f"{source.endpoint_bound} (motor lane)" if source.endpoint_bound
                else "- (no motor lane)")
        return (f"listening on {lane}, reading DECTRIS stream v{status['stream_version']} "
                f"from {source.endpoint}")
    return f"listening on {source.endpoint}"


def _exit_code(results: list[dict[str, Any]]) -> int:
    """0 when every scan ended success or incomplete (all it was given is processed; the
    summary lists the points missing), 1 when one failed or was aborted."""
    ok = ("success", "incomplete")
    return EXIT_OK if all(r["status"] in ok for r in results) else EXIT_FAILED


def _stop_flag() -> dict[str, Any]:
    """SIGINT and SIGTERM set "now" (and "signal", the first one's name): the command
    stops at its next step. A handler that raised (Python's KeyboardInterrupt) could
    land anywhere, in a callback the HDF5 library makes into our file object too, where
    it became a write error and the stop was lost."""
    flag: dict[str, Any] = {"now": False, "signal": ""}

    def handler(signum: int, frame: Any) -> None:
        flag["now"], flag["signal"] = True, flag["signal"] or signal.Signals(signum).name

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return flag


def _warm_up(config: Config, label: str, stop: dict[str, Any], quiet: bool) -> bool:
    """The warm-up of run and demo (`warm_up`), ended by a stop signal (`_stop_flag`)
    before its next message, its scan closed as it is: False then, said on stderr. A
    cold warm-up takes a minute; it ran to its end, or a ^C raised inside it."""
    from stream.cli.warmup import warm_up
    from stream.service.warming import StoppedStarting

    def check() -> None:
        if stop["now"]:
            raise StoppedStarting(stop["signal"])

    with contextlib.suppress(StoppedStarting):
        warm_up(config, label, quiet=quiet, stop=check)
    if stop["now"]:  # in the warm-up, or after its last message
        print(f"peakstream {label}: stopped ({stop['signal']}) during the warm-up",
              file=sys.stderr, flush=True)
        return False
    return True
