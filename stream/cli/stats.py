"""`peakstream stats`'s command line: images over the frames of a recording
(`stream.offline.stats`), with a progress bar."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stream.cli.progress import ProgressLine
from stream.offline.stats import (
    DEFAULT_MAX_BYTES,
    STATS,
    frame_stats,
    parse_points,
    recording_frames,
    write_stats,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`peakstream stats`: register the subcommand (its function is `run`)."""
    from stream.sources.files import FORMATS

    p = subparsers.add_parser(
        "stats", help="max / min / mean / median / percentile images over frames",
        description="Images over the frames of a recording (any format replay reads), for "
                    "dark, flat and background making. mean/min/max are running; median and "
                    "percentiles are computed in bands of image rows, so memory stays below "
                    "--memory (frames that do not fit are spilled to a temporary file). "
                    "A config loads the output as FILE.h5::/entry/stats/NAME, FILE.npy or "
                    "FILE.edf.")
    p.add_argument("inputs", nargs="*", metavar="RECORDING",
                   help="files, FILE::/path stacks, data_%%04d.edf patterns or quoted globs")
    p.add_argument("--stat", nargs="+", action="extend", default=[], choices=STATS,
                   help="the images to make (default mean; several allowed)")
    p.add_argument("--percentile", nargs="+", action="extend", default=[], type=float,
                   metavar="Q", help="percentile(s) in 0..100 (implies --stat percentile)")
    p.add_argument("--points", metavar="A:B", help="point ids A to B-1 (default all)")
    p.add_argument("--output", required=True,
                   help="FILE.h5 (every image), or FILE.npy / FILE.edf (one image)")
    p.add_argument("--images", nargs="+", action="extend", default=[], metavar="FILE::/PATH",
                   help="HDF5 frames (as for replay)")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="input format (default auto: from the content)")
    p.add_argument("--detector", help="detector (default: the recording's first)")
    p.add_argument("--memory", type=float, default=DEFAULT_MAX_BYTES / 2**20, metavar="MiB",
                   help=f"memory bound for median / percentiles "
                        f"(default {DEFAULT_MAX_BYTES >> 20} MiB)")
    p.add_argument("--spill-dir", help="where frames that do not fit in memory go "
                                       "(default: the system's temporary directory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """`peakstream stats ...`: 0 written, 2 bad usage or input."""
    stats = list(args.stat) or (["percentile"] if args.percentile else ["mean"])
    bar = ProgressLine("stats", interval=1.0, quiet=args.quiet, bar=True)
    counts: dict[str, int] = {}
    try:
        points = parse_points(args.points)
        inputs = list(args.inputs)
        if not args.images:  # a Lima file's frames (a dark series), a Bliss master's
            from stream.sources.files import frame_inputs

            inputs, said = frame_inputs(inputs, args.format)
            for line in said:
                print(f"peakstream stats: {line}", file=sys.stderr)
        frames, total = recording_frames(inputs, points, format=args.format,
                                         images=args.images, detector=args.detector,
                                         counts=counts)
        images, info = frame_stats(frames, stats, args.percentile,
                                   max_bytes=int(args.memory * 2**20), spill_dir=args.spill_dir,
                                   progress=bar.stages, total=total)
        provenance = {"inputs": [*args.inputs, *args.images], "points": args.points or ":",
                      "bad": counts.get("bad", 0), **info}
        paths = write_stats(args.output, images, provenance)
    except (OSError, ValueError) as exc:
        bar.done()
        print(f"peakstream stats: {exc}", file=sys.stderr)
        return 2
    bar.done()
    print(f"peakstream stats: {info['nframes']} frames ({counts.get('bad', 0)} bad, "
          f"{info['rejected']} rejected); wrote {', '.join(paths)}", file=sys.stderr)
    return 0
