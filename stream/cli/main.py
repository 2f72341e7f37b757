"""peakstream command line: run | daemon | status | get | set | watch | web | replay | relink |
simulate | inspect | export | demo | worker | keys.

Exit codes: 0 done, 1 a scan failed or was aborted, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from stream import __version__
from stream.cli import simulate
from stream.cli.clients import add_clients
from stream.cli.codes import EXIT_USAGE
from stream.cli.presets import presets
from stream.config.base import ConfigError

# the clients of a running daemon: parsed and run without importing numpy, h5py or the
# processing code, so that they answer at once
CLIENTS = ("status", "get", "set", "watch")


def _command(name: str):
    """A `cmd_*` of stream.cli.commands, imported when the command runs."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        module = importlib.import_module(
            "stream.cli." + (name if name in ("replay", "warmup") else "commands"))
        return getattr(module, f"cmd_{name}")(args)
    return run


cmd_demo, cmd_export, cmd_inspect, cmd_relink, cmd_replay, cmd_run, cmd_warmup = map(
    _command, ("demo", "export", "inspect", "relink", "replay", "run", "warmup"))


TRAJECTORY_KINDS = ("sweep", "interlaced", "grid", "snake", "free")
REPLAY_FORMATS = ("simulate", "peakstream", "imaged11", "hdf5", "fabio", "framecache")
REPLAY_DESCRIPTION = """\
Replay a recorded scan through the same nodes, linker and store as a live run
(through the wire encoding, so it gives the same cliques). The format is
detected from each file's content:

  simulate    files of 'peakstream simulate --output'
  peakstream  our own output: its sparse pixels again (re-link with other criteria)
  imaged11    ImageD11 sparse HDF5 (row/col/intensity/nnz)
  framecache  hexrd frame-cache .npz (omega = mean of each start/end pair)
  hdf5        HDF5 image stacks (Bliss / Lima / NeXus; bitshuffle-LZ4, gzip, lzf):
              --images FILE::/1.1/measurement/eiger, several = one continuing scan;
              a Bliss master file: its entries' frames without --images
  fabio       EDF / CBF / TIFF series: data_%04d.edf (a missing file = missing
              points), 'data_*.cbf' (natural order), files; multi-frame EDF

The trajectory is the recording's own, else --trajectory / [replay] trajectory,
else the one the motor positions show (printed, and kept in the output file).

Image inputs given together are one scan; every other file is a scan of its own.
A frame that cannot be read is recorded as a bad point naming the file and the
frame; an input that cannot be used at all exits 2 with the reason.

SPEC (--motor, --counter, --time):
  0.5                   a constant
  range:START,STEP      START + STEP * point_id
  list:V0,V1,...        one value per point
  file:PATH             a text file (one value a line) or .npy, one value per point
  header:KEY            each frame's header (EDF keys, CBF mini-header, TIFF tags)
  /path, FILE::/path    an HDF5 dataset, one value per frame (a scalar: a constant);
                        a bare /path is in the first images file
  rel/path              the same path under each images scan (/1.1/rel/path, ...)
  A,B                   HDF5 sources concatenated, in order
"""
REPLAY_EXAMPLES = """\
examples:
  peakstream replay scan.h5 --output out.h5
  peakstream replay sample.h5 --images /1.1/measurement/eiger \\
      --motor omega=/1.1/measurement/rot_center --counter monitor=/1.1/measurement/mon \\
      --config configs/simulated.toml --output out.h5
  peakstream replay --images a.h5::/1.1/measurement/eiger b.h5::/1.1/measurement/eiger \\
      --motor omega=measurement/rot_center --output out.h5
  peakstream replay 'data_%04d.edf' --first 1 --last 360 --motor omega=header:omega \\
      --counter monitor=header:mon --output out.h5
  peakstream replay 'frames_*.cbf' --motor omega=header:Start_angle --output out.h5
  peakstream replay grains.npz --output out.h5
  peakstream replay out.h5 --config relink.toml --output relinked.h5
"""


def parser(clients_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line (`clients_only`: just the daemon's clients, fast)."""
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
    if clients_only:
        add_clients(sub)
        return top

    p = sub.add_parser("run", help="take live scans from the config's source and process them",
                       description="Take scans from [source] kind: 'zmq' (our protocol on a "
                                   "bound PULL, docs/protocol.md), 'dectris' (a DECTRIS detector), "
                                   "'blissdata' (ESRF Bliss scans from Redis) or 'pva' (an "
                                   "EPICS areaDetector over pvAccess); process every scan and "
                                   "write one HDF5 file per scan, named after its scan_id, "
                                   "into the output directory.")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults)")
    p.add_argument("--listen", help="endpoint to bind (overrides [source] listen; "
                                    "default tcp://127.0.0.1:5555; with kind = 'dectris' the "
                                    "motor lane; kinds blissdata and pva do not listen)")
    p.add_argument("--output", help="output directory (overrides [output] directory)")
    p.add_argument("--scans", type=int, help="exit after this many scans (default: run until "
                                             "SIGINT/SIGTERM)")
    p.add_argument("--progress-interval", type=float, default=2.0,
                   help="seconds between progress lines when not on a terminal (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_run)
    _add_service(sub)
    _add_maps(sub)
    from stream.cli.batch import add_cluster_options  # (not for the clients: light imports)
    from stream.cli.remote import add_remote

    add_remote(sub)

    p = sub.add_parser("replay", help="process recorded scans through the same chain",
                       description=REPLAY_DESCRIPTION, epilog=REPLAY_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="recorded scan(s): files, FILE::/path stacks, data_%%04d.edf patterns "
                        "or quoted globs (put INPUT before the options)")
    p.add_argument("--config", help="TOML config (default: built-in defaults)")
    p.add_argument("--preset", metavar="NAME",
                   help="a config shipped in configs/NAME.toml instead of --config "
                        f"({', '.join(presets()) or 'none'})")
    p.add_argument("--per-point", action="store_true",
                   help="replay a sparse recording point by point through the wire "
                        "encoding, not in blocks (same result, much slower)")
    p.add_argument("--output",
                   help="output FILE.h5 (one scan) or directory (several scans)")
    p.add_argument("--resume", action="store_true",
                   help="continue --output FILE.h5, left open by a crash or a kill, from its "
                        "last checkpoint: its points are kept, the recording's other points "
                        "(those lost or never reached) are processed; a file whose scan has "
                        "ended with points missing is filled (--fill). The config is the "
                        "file's own unless --config is given (same [[node]], [linker], "
                        "detector and trajectory)")
    p.add_argument("--fill", metavar="FILE.h5",
                   help="complete FILE.h5, whose scan ended with points missing (a daemon "
                        "killed mid-scan), from its recording: the scan is processed again "
                        "with the file's config, checked against the points it holds, and "
                        "replaces it (kept as FILE.h5.before-fill); the result equals an "
                        "uninterrupted run and records the fill")
    p.add_argument("--images", nargs="+", action="extend", default=[], metavar="FILE::/PATH",
                   help="HDF5 frames: 3D datasets, one scan across them; a bare /PATH: in the "
                        "HDF5 INPUT(s); a PATH: in each scan entry (default: a Bliss master's)")
    p.add_argument("--motor", nargs="+", action="extend", default=[], metavar="NAME=SPEC",
                   help="a motor and where its values come from (see SPEC above)")
    p.add_argument("--counter", nargs="+", action="extend", default=[], metavar="NAME=SPEC",
                   help="a counter (monitor, srcur, ...) and where its values come from")
    p.add_argument("--time", metavar="SPEC", help="where the point times come from "
                                                 "(default: recorded, or none)")
    p.add_argument("--format", default="auto", choices=("auto", *REPLAY_FORMATS),
                   help="input format (default auto: detected from the file's content)")
    p.add_argument("--first", type=int, metavar="N",
                   help="first file number of a %%d pattern (default: the lowest on disk), "
                        "otherwise the first frame (0-based); point ids count from it")
    p.add_argument("--last", type=int, metavar="N",
                   help="last file number of a %%d pattern (default: the highest on disk), "
                        "otherwise the last frame (inclusive)")
    p.add_argument("--scan-id", help="scan_id (default: recorded, or from the file name)")
    p.add_argument("--detector", help="detector name for image inputs (default: from the "
                                      "dataset path, or 'detector')")
    p.add_argument("--trajectory", choices=TRAJECTORY_KINDS,
                   help="how the scan ran, when the recording does not say (default: [replay] "
                        "trajectory of the config, else derived from the motor positions, else "
                        "a sweep); see docs/trajectories.md")
    p.add_argument("--fast", metavar="MOTOR", help="the fast motor (default: the first)")
    p.add_argument("--slow", metavar="MOTOR", help="grid / snake: the slow motor (e.g. dty)")
    p.add_argument("--nfast", type=int, metavar="N", help="grid / snake: points per row")
    p.add_argument("--iflip", action="store_true", help="interlaced: the 2nd pass backwards")
    p.add_argument("--wrap", action="store_true", help="the fast motor covers whole turns: "
                                                        "the last point neighbours the first")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines (each file's summary still goes to stdout)")
    add_cluster_options(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("relink", help="make the cliques of an output file again with other "
                                      "linker criteria",
                       description="Re-cut the cliques of a peakstream output file from its "
                                   "stored labelled pixels and 2D peaks (no frames needed), "
                                   "with other [linker] settings; write a new file. Settings "
                                   "not given keep the file's own.")
    p.add_argument("file", metavar="FILE", help="a peakstream output file")
    p.add_argument("--criterion", nargs="+", metavar="NAME",
                   choices=("any_pixel", "fraction", "distance"),
                   help="any_pixel | fraction | distance; several must all hold "
                        "(e.g. --criterion fraction distance)")
    p.add_argument("--fraction", type=float, metavar="F",
                   help="fraction: shared pixels / smaller blob >= F")
    p.add_argument("--distance", type=float, metavar="D",
                   help="distance: centroids at most D pixels apart")
    p.add_argument("--split", choices=("none", "local_max", "pixels"),
                   help="how closed cliques are cut: pixels (divided between the spots "
                        "they hold), local_max (at significant maxima), none (ImageD11); "
                        "default: the file's own")
    p.add_argument("--background", type=float, metavar="B",
                   help="split pixels: the level under the spots, taken off for "
                        "fit_intensity; default: the file's own")
    p.add_argument("--output", required=True, help="the new output FILE.h5")
    p.set_defaults(func=cmd_relink)

    simulate.add_parser(sub)

    p = sub.add_parser("inspect", help="summarise output files",
                       description="Print what an output file holds: status, points (ok, "
                                   "missing, bad), 2D peaks, overlaps, cliques, config hash, "
                                   "counters and recorded events.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--clique", type=int, metavar="N",
                   help="the rocking curve of clique N: per point its motors and the "
                        "summed intensity of the clique's 2D peaks there")
    p.add_argument("--png", metavar="OUT.png",
                   help="with --clique: plot it against each motor that moves "
                        "(needs matplotlib: pip install -e '.[plot]')")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export",
                       help="write an output file's results for ImageD11, hexrd or ptypy",
                       description="flt: ImageD11 columnfile of the cliques (3D peaks); "
                                   "sparse: ImageD11 sparse HDF5 of the kept pixels; "
                                   "framecache: hexrd frame-cache .npz of the kept pixels; "
                                   "ptyd: ptypy prepared data (frames, positions, weights) of a "
                                   "run whose chain had a ptyd node.")
    p.add_argument("file", metavar="FILE", help="a peakstream output file")
    p.add_argument("--format", required=True, choices=("flt", "sparse", "framecache", "ptyd"))
    p.add_argument("--output", required=True, help="the file to write")
    p.add_argument("--omega", metavar="NAME",
                   help="the scan's rotation motor (default: omega, or a usual name such "
                        "as diffrz, or the fast motor of a sweep)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="end to end: simulator -> ZeroMQ -> processor -> HDF5",
                       description="Start a simulated acquisition in a separate process that "
                                   "streams over ZeroMQ (loopback, ephemeral port) into the "
                                   "processor; write HDF5; print the summary and the check "
                                   "against the simulation's truth.")
    simulate.add_sim_options(p)
    p.add_argument("--config", default=None,
                   help="TOML config (default: configs/simulated.toml if present)")
    p.add_argument("--output", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--rate", type=float, help="points per second (default: full speed)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (300)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("warmup", help="load (or compile) the kernels a config uses, then exit",
                       description="Push a tiny synthetic scan of each [source] warmup frame "
                                   "kind (dtype/encoding) through the config's chain, linker "
                                   "and store, so numba's cache holds every kernel the config "
                                   "uses (run it after an install or upgrade, or as a "
                                   "systemd ExecStartPre). run, daemon and demo do the same "
                                   "before they bind the data socket.")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults)")
    p.add_argument("--verbose", dest="verbose_kernels", action="store_true",
                   help="print the compile time of every kernel (nested ones indented)")
    p.set_defaults(func=cmd_warmup)
    return top


def _daemon(args: argparse.Namespace) -> int:
    from stream.cli.warmup import warm_up
    from stream.service.daemon import cmd_daemon
    from stream.service.warming import check_stop

    return cmd_daemon(args, warm=lambda config: warm_up(config, "daemon", stop=check_stop))


def _add_maps(sub) -> None:
    """stats, map and diffmap."""
    from stream.cli import diffmap, stats
    from stream.maps import render

    stats.add_parser(sub)
    render.add_parser(sub)
    diffmap.add_parser(sub)


def _add_service(sub) -> None:
    """daemon and its clients: status, get, set, stop, watch."""
    p = sub.add_parser("daemon", help="a headless service: scan after scan, control socket, "
                                      "live lane",
                       description="Take scan after scan from [source] kind: 'zmq' (our "
                                   "protocol on the data PULL), 'dectris' (a DECTRIS "
                                   "detector), 'blissdata' (Bliss scans from Redis) or 'pva' "
                                   "(an EPICS areaDetector over pvAccess); one "
                                   "HDF5 file per scan named by [output] pattern (never "
                                   "overwritten), control requests on [control] endpoint, "
                                   "the live lane on [live] endpoint, logs to stderr and a "
                                   "rotating log file. SIGTERM / SIGINT: finish the scan in "
                                   "progress, write it, exit 0; a second signal aborts it.")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults, as "
                                             "for run)")
    p.add_argument("--listen", help="data endpoint to bind (overrides [source] listen; with "
                                    "kind = 'dectris' the motor lane; blissdata, pva: none)")
    p.add_argument("--control", help="control endpoint to bind (overrides [control] "
                                     "endpoint; port 0: any free port)")
    p.add_argument("--live", help='live lane endpoint to bind (overrides [live] endpoint; '
                   '"" turns the live lane off)')
    p.add_argument("--output", help="output directory (overrides [output] directory)")
    p.set_defaults(func=_daemon)
    add_clients(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser(clients_only=command in CLIENTS).parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo" and args.config is None:
        from stream.cli.presets import CONFIGS

        default = CONFIGS / "simulated.toml"
        args.config = str(default) if default.exists() else None
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"peakstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run() -> int:
    """The `peakstream` command: `main`, then the objects made so far are frozen out of
    the garbage collector. The interpreter's last collections at exit walked every object
    of numpy, numba, h5py and dask: ~0.4 s of every command, 0.6 s after a
    `--cluster local` replay (measured). Files are closed and committed before this, and
    atexit handlers still run. A reader that closes our stdout early (`| head`) ends the
    command quietly (Python's own advice: stdout to /dev/null, exit 1), not with a
    BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(run())
