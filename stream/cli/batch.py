"""`peakstream replay ... --cluster SPEC`: the scans as tasks on dask.distributed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from stream.cli.codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from stream.cli.progress import ProgressLine
from stream.config.schema import Config

SLURM_KEYS = ("queue", "account", "cores", "memory", "walltime", "jobs")


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """--cluster and the --slurm-* options of `peakstream replay`."""
    g = p.add_argument_group("cluster (dask.distributed; pip install -e '.[cluster]')")
    g.add_argument("--cluster", metavar="SPEC",
                   help="run the scans as tasks: local[:N] (N worker processes on this "
                        "machine, default one per core), tcp://HOST:8786 (a running dask "
                        "scheduler) or slurm (workers started as SLURM jobs by "
                        "dask-jobqueue); one file per scan in --output DIR, scans whose "
                        "file is finished are skipped")
    g.add_argument("--chunk-points", type=int, default=0, metavar="N",
                   help="cut scans of more than N points into chunks of N that run in "
                        "parallel, linked across the borders at the end (the same file as a "
                        "serial replay; default 0: whole scans)")
    g.add_argument("--slurm-queue", metavar="PARTITION", help="SLURM partition "
                                                              "([cluster] queue)")
    g.add_argument("--slurm-account", metavar="NAME", help="SLURM account ([cluster] account)")
    g.add_argument("--slurm-cores", type=int, metavar="N",
                   help="cores per SLURM job, one worker process each ([cluster] cores, "
                        "default 1)")
    g.add_argument("--slurm-memory", metavar="SIZE",
                   help="memory per SLURM job, e.g. 16GB ([cluster] memory, default 4GB)")
    g.add_argument("--slurm-walltime", metavar="HH:MM:SS",
                   help="walltime per SLURM job ([cluster] walltime, default 01:00:00)")
    g.add_argument("--slurm-jobs", type=int, metavar="N",
                   help="SLURM jobs to start ([cluster] jobs, default 1)")


def replay_on_cluster(args: argparse.Namespace, config: Config, jobs: list[Any]) -> int:
    from stream.cli.warmup import warm_up_if_cold
    from stream.offline.cluster import (
        ClusterStartError,
        exit_status,
        format_table,
        open_client,
        parse_cluster,
        plan,
        run_batch,
        skipped,
        stale_files,
    )

    name = "peakstream replay"
    out = Path(args.output)
    if out.suffix == ".h5":
        print(f"{name}: --cluster writes one file per scan: --output DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.resume:
        print(f"{name}: --cluster resumes by itself (finished scans are skipped, the "
              f"others done again); no --resume", file=sys.stderr)
        return EXIT_USAGE
    slurm = dict(config["cluster"])
    slurm.update({k: getattr(args, f"slurm_{k}") for k in SLURM_KEYS
                  if getattr(args, f"slurm_{k}") is not None})
    slurm["log_directory"] = slurm.get("log_directory") or str(out / "slurm-logs")
    not_opened: list[dict] = []  # scans of the batch that cannot be opened: the rest go on
    try:
        spec = parse_cluster(args.cluster, slurm)
        jobs = plan(jobs, config, out, not_opened)
    except (OSError, ValueError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for row in not_opened:
        print(f"{name}: {row['scan_id']}: not replayed: {row['reason']}", file=sys.stderr)
    stale = stale_files(jobs, config)  # a finished file of another config or recording
    for line in stale:
        print(f"{name}: {line}", file=sys.stderr)
    if stale:
        return EXIT_USAGE
    total = sum(j.npoints or 0 for j in jobs)
    t0 = time.monotonic()
    todo = len(jobs) - len(skipped(jobs, config))
    if todo and spec.kind == "local":
        # A cold numba cache (a new install): compile here, with a progress line, before
        # the workers are forked from this process, so they start with the kernels. Left
        # to the workers, each compiled them apart and in silence (a cold `--cluster
        # local:2` replay of two small scans: 29 s with nothing printed, 55 s of CPU).
        warm_up_if_cold(config, name, quiet=args.quiet)
    try:
        with open_client(spec if todo else None) as client:
            if client is not None:
                print(f"{name}: {todo} of {len(jobs)} scan(s) to do, {total} points in all, "
                      f"on {args.cluster} ({len(client.scheduler_info()['workers'])} "
                      f"worker(s) now); dashboard {client.dashboard_link}", file=sys.stderr,
                      flush=True)
            progress = ProgressLine("cluster", total or None, quiet=args.quiet)

            def say(line: str) -> None:
                print(line, file=sys.stderr, flush=True)

            results = run_batch(client, jobs, config, per_point=args.per_point,
                                chunk=args.chunk_points, say=say, progress=progress)
            progress.done()
    except (ImportError, OSError, ClusterStartError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = [*results, *not_opened]
    print(format_table(results, time.monotonic() - t0))
    return EXIT_OK if exit_status(results) else EXIT_FAILED
