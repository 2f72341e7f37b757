"""`peakstream replay`: recorded scans through the same chain, resumed, or filled in.

`cmd_replay` takes the parsed arguments and returns the exit code (0 done, 1 a
scan failed or was aborted, 2 bad usage or config).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stream.cli.commands import EXIT_FAILED, EXIT_USAGE, _config, _exit_code
from stream.cli.progress import ProgressLine
from stream.config.base import ConfigError
from stream.config.schema import Config


def cmd_replay(args: argparse.Namespace) -> int:
    from stream.offline.batch import open_blocks, replay_blocks
    from stream.offline.fill import FillError, check_config, fill_target, finish_fill
    from stream.offline.scanjob import scan_jobs
    from stream.run.runner import ScanRunner
    from stream.run.warmup import compile_notices
    from stream.sources.base import open_source
    from stream.sources.files import default_images, open_recording, recordings
    from stream.store.reader import format_summary, summary

    if args.fill:
        args.output = args.fill
    if not args.output:
        print("peakstream replay: give --output FILE.h5 or DIR (or --fill FILE.h5)",
              file=sys.stderr)
        return EXIT_USAGE
    target = None
    try:
        if args.fill or (args.resume and _ended(Path(args.output))):
            target = fill_target(args.output)
        config = _file_config(args) if (args.resume or target) else _config(args)
        if target is not None:
            check_config(target, config)
            args.scan_id = args.scan_id or target.scan_id
            args.resume = False
            recorded_options(args, target.recorded, target.path)
    except FillError as exc:
        print(f"peakstream replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.inputs and not args.images:
        print("peakstream replay: give the recorded INPUT(s), or --images FILE::/path",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        trajectory = replay_trajectory(args, config)
    except ValueError as exc:
        print(f"peakstream replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:  # a Bliss master file without --images: the frames its scan entries hold
        args.images, taken = default_images(args.inputs, args.format, args.images)
        if taken:
            print(f"peakstream replay: {taken}", file=sys.stderr)
        options = dict(format=args.format, images=args.images, motors=args.motor,
                       counters=args.counter, time=args.time, scan_id=args.scan_id,
                       detector=args.detector, first=args.first, last=args.last,
                       trajectory=trajectory)
        scans = scan_jobs(recordings(args.inputs, args.format, args.images), options)
    except (OSError, ValueError) as exc:
        print(f"peakstream replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.output)
    if len(scans) > 1 and out.suffix == ".h5":
        print(f"peakstream replay: the inputs are {len(scans)} scans; they need --output DIR",
              file=sys.stderr)
        return EXIT_USAGE
    if args.chunk_points and not args.cluster or args.chunk_points < 0:
        print("peakstream replay: --chunk-points N (N >= 1) cuts scans for --cluster; "
              "0, the default, replays them whole", file=sys.stderr)
        return EXIT_USAGE
    config.build_nodes()  # a chain that cannot be built: exit 2 before any file is made
    if args.cluster:
        from stream.cli.batch import replay_on_cluster

        return replay_on_cluster(args, config, scans)
    single = out if out.suffix == ".h5" else None
    if target is not None:  # processed again whole into a new file beside it
        single = target.work_path
        single.unlink(missing_ok=True)
    if args.resume and (single is None or not single.exists() or len(scans) != 1):
        print("peakstream replay: --resume continues one existing output FILE.h5 from one "
              "recorded scan", file=sys.stderr)
        return EXIT_USAGE
    if single is not None and single.exists() and not args.resume:
        print(f"peakstream replay: {single} exists; remove it or choose another name",
              file=sys.stderr)
        return EXIT_USAGE
    runner = ScanRunner(config, output_dir=None if single else out, output_file=single)
    if args.resume:  # points the file holds are kept, the others processed
        runner.resumer.resume_file = single
    skipped = []  # scans of a batch that could not be opened: the others go on
    for job in scans:
        inputs, opts = job.inputs, job.options
        try:
            _check_frames(inputs, opts, config)
            per_point = args.per_point or args.resume
            blocks = None if per_point else open_blocks(inputs, config, **opts)
            if blocks is None:
                recording = open_recording(inputs, **opts)
            _check_start(blocks[0] if blocks is not None else recording[0], config)
        except (OSError, ValueError) as exc:
            if len(scans) == 1:
                print(f"peakstream replay: {exc}", file=sys.stderr)
                runner.close()
                return EXIT_USAGE
            print(f"peakstream replay: {job.name}: not replayed: {exc}", file=sys.stderr)
            skipped.append(f"{job.name}: not replayed: {exc}")
            continue
        name = job.name
        if blocks is not None:  # a sparse recording: label, properties, linker in blocks
            start, stream_blocks = blocks
            progress = ProgressLine(f"replay {name}", start.npoints, quiet=args.quiet)
            path = runner.output_path(start.scan_id, start.meta)
            try:
                with compile_notices(progress.compiled):
                    runner.results.append(replay_blocks(config, start, stream_blocks, path,
                                                        progress))
            except (OSError, ValueError) as exc:  # the file is closed with status fail
                print(f"peakstream replay: {name}: {exc}", file=sys.stderr)
                runner.results.append({"status": "fail", "file": str(path)})
            progress(start.npoints or 0, force=True)
            progress.done()
            continue
        with open_source(config, recording, name) as source:
            progress = ProgressLine(f"replay {name}", source.start.npoints, quiet=args.quiet)
            if not args.quiet:
                how = source.start.meta.get("trajectory_from", "recorded")
                print(f"replay {name}: trajectory {json.dumps(source.start.trajectory)} "
                      f"({how})", file=sys.stderr)
            with compile_notices(progress.compiled):
                while not source.done:  # through the wire encoding, as a live scan
                    for parts in source.receive(0.0):
                        runner.handle(parts)
                    progress(source.points)
                    if runner.current is None and runner.refused == source.start.scan_id:
                        break  # it failed (set-up, disk): the rest would be dropped unread
            if source.error:  # the recording broke off: the scan failed
                print(f"peakstream replay: {name}: {source.error}", file=sys.stderr)
            progress(source.points, force=True)
            progress.done()
    runner.close()
    if runner.last_error:  # a scan that could not start (or resume), or be written
        print(f"peakstream replay: {runner.last_error}", file=sys.stderr)
        if not runner.results:
            return EXIT_FAILED
    if len(runner.results) < len(scans) - len(skipped):  # never a silent success
        print(f"peakstream replay: {len(scans) - len(skipped) - len(runner.results)} "
              f"scan(s) wrote no output file (the log above says why)", file=sys.stderr)
        return EXIT_FAILED
    if target is not None and runner.results:
        try:
            done = finish_fill(target, args.inputs + args.images)
        except FillError as exc:
            print(f"peakstream replay: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"filled {target.path}: {len(done['points'])} point(s) that were missing or bad "
              f"processed, cliques across the gaps linked again; the file before the fill "
              f"is {done['backup']}", file=sys.stderr)
        runner.results[-1]["file"] = str(target.path)
    for r in runner.results:
        print(format_summary(summary(r["file"])))
    for line in skipped:  # again after the summaries, where a batch's reader looks
        print(line)
    return EXIT_FAILED if skipped else _exit_code(runner.results)


def replay_trajectory(args: argparse.Namespace, config: Config) -> dict[str, Any] | None:
    """The trajectory map of --trajectory and its options, else of [replay] trajectory,
    else None (the recording's, or derived from its motors)."""
    extra = [k for k in ("fast", "slow", "nfast") if getattr(args, k, None) is not None]
    extra += [k for k in ("iflip", "wrap") if getattr(args, k, False)]
    if not args.trajectory:
        if extra:
            raise ValueError(f"--{', --'.join(extra)} go with --trajectory KIND")
        return dict(config["replay"]["trajectory"]) or None
    fast = args.fast or (args.motor[0].split("=")[0] if args.motor else "omega")
    traj: dict[str, Any] = {"kind": args.trajectory, "fast": fast}
    if args.trajectory in ("grid", "snake"):
        if not args.nfast:
            raise ValueError(f"--trajectory {args.trajectory} needs --nfast N (points per row)")
        traj.update(nfast=args.nfast, slow=args.slow)
    elif args.slow or args.nfast:
        raise ValueError("--slow and --nfast go with --trajectory grid or snake")
    if args.iflip:
        if args.trajectory != "interlaced":
            raise ValueError("--iflip goes with --trajectory interlaced")
        traj["iflip"] = True
    if args.wrap:
        traj["wrap"] = True
    if args.trajectory == "free":
        raise ValueError("--trajectory free needs tolerances: give it as [replay] trajectory "
                         "in the config, e.g. {kind = \"free\", tolerance = {omega = 0.4}}")
    return traj




def recorded_options(args: argparse.Namespace, meta: dict[str, Any], path: Path) -> None:
    """--fill: the images (or image files), motors and counters the file's scan was read
    with, for those not given again (its start's meta records them); said on stderr."""
    taken = []
    if not args.images and meta.get("source") == "hdf5" and meta.get("images"):
        args.images = list(meta["images"])
        taken.append(f"--images {' '.join(args.images)}")
    elif not args.inputs and not args.images and meta.get("inputs"):
        args.inputs = list(meta["inputs"])
        taken.append(" ".join(args.inputs))
    for option, key in (("motor", "motors"), ("counter", "counters")):
        if not getattr(args, option) and meta.get(key):
            setattr(args, option, [f"{k}={v}" for k, v in meta[key].items()])
            taken.append(" ".join(f"--{option} {v}" for v in getattr(args, option)))
    if taken:
        print(f"peakstream replay: --fill {path}: as recorded there: {' '.join(taken)}",
              file=sys.stderr)


def _check_start(start: Any, config: Config) -> None:
    """ValueError if the processor would refuse this recording's start with this config
    (e.g. its [source] detector is not the recording's): said before a replay that
    would write no file."""
    from stream.run.admission import admit_start

    if isinstance(problem := admit_start(start, config), str):
        problem = problem.removeprefix("start: ")
        named = config["source"]["detector"]
        raise ValueError(f"{problem}; [source] detector = {named!r} in the config must "
                         f"name one of them" if "no detector" in problem else
                         f"{problem}; the config does not fit this recording")


def _check_frames(inputs: list[str], opts: dict[str, Any], config: Config) -> None:
    """ValueError if the chain takes sparse frames only (no threshold before label, as
    --preset imaged11) and the recording holds detector frames: every point failed,
    each with 'label: point N has no sparse frame'."""
    from stream.run.warmup import takes_sparse
    from stream.sources.files import SPARSE_FORMATS, recording_format

    kind = recording_format(inputs, opts.get("format") or "auto", opts.get("images") or ())
    if kind not in SPARSE_FORMATS and takes_sparse(config):
        kinds = ", ".join(t["kind"] for t in config["node"])
        raise ValueError(f"{config.origin}: the chain ({kinds}) has no threshold before label, "
                         f"so it takes sparse frames only (our own output, ImageD11 sparse "
                         f"files, hexrd frame-caches), but this recording holds detector "
                         f"frames ({kind}); use a config with a threshold before label (e.g. "
                         f"--preset simulated)")


def _ended(path: Path) -> bool:
    """Has this output file's scan ended (then --resume means fill)?"""
    from stream.store.checkpoint import open_h5

    try:
        with open_h5(path) as f:
            return str(f["entry"].attrs["status"]) not in ("running", "fail")
    except (OSError, KeyError):
        return False


def _file_config(args: argparse.Namespace) -> Config:
    """--resume / --fill: the config given, else the one the file was written with."""
    if args.config or getattr(args, "preset", None):
        return _config(args)
    from stream.store.checkpoint import open_h5

    if not Path(args.output).exists():
        raise ConfigError(f"{args.output} does not exist: there is nothing to resume; run "
                          f"without --resume to write it")
    from stream.store.identity import recorded_calibration

    try:
        with open_h5(args.output) as f:
            text = f["entry/process/config"].asstr()[()]
            calibration = recorded_calibration(f["entry/process"])
    except (OSError, KeyError) as exc:
        raise ConfigError(f"{args.output}: no config to resume with: {exc}") from None
    # its calibration files relative to the directory of the config it was written with
    # (files written before that was recorded: to the current directory)
    base = calibration["base"] if calibration else None
    return Config.from_text(text, f"{args.output}::/entry/process/config", base)
