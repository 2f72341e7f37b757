"""`peakstream worker` (per-point work for a `run` or `daemon` on another host) and
`peakstream keys` (the CurveZMQ pairs such a worker and its processor need)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from stream.cli.codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from stream.core.threads import named_thread

WORKER_DESCRIPTION = """\
Join a running `peakstream run` or `daemon` whose [workers] endpoint is a TCP
address, and run the chain on the points it hands out: the same credits,
heartbeats and reassignment as its own workers. Frames come as they arrived
(compressed stays compressed), results go back sparse. A worker that joins
mid-scan gets work from the next point; one that dies loses nothing (its points
go to the others). It stops when the processor says stop, or after --orphan s
without a word from it.

On anything but loopback the endpoint is CurveZMQ: give --keys DIR holding the
processor's server.key and a worker pair (worker.key, worker.key_secret, or
NAME.key and NAME.key_secret with --name NAME) from `peakstream keys DIR [--name
NAME]` on the processor host.
"""
WORKER_EXAMPLES = """\
examples:
  peakstream worker --connect tcp://processor.example:7100 --keys ~/.peakstream/keys
  srun peakstream worker --connect tcp://processor.example:7100 --keys KEYS --threads 8
  (SLURM batch script and systemd unit: configs/slurm-workers.sh, configs/peakstream-worker.service)
"""


def add_remote(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the per-point chain for a processor on another "
                                      "host (its [workers] endpoint)",
                       description=WORKER_DESCRIPTION, epilog=WORKER_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", required=True, metavar="ENDPOINT",
                   help="the processor's [workers] endpoint, e.g. tcp://HOST:7100")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="chains in this process, one thread each (default 1; the "
                        "kernels release the GIL, so one per core)")
    p.add_argument("--keys", metavar="DIR",
                   help="CurveZMQ key directory: server.key, worker.key, worker.key_secret "
                        "(required unless the endpoint is loopback)")
    p.add_argument("--name", default="worker",
                   help="the worker pair in --keys: NAME.key, NAME.key_secret (default "
                        "worker; `peakstream keys DIR --name NAME` made it)")
    p.add_argument("--heartbeat", type=float, default=0.5,
                   help="s between heartbeats (default 0.5; the processor's "
                        "heartbeat_timeout must be well above it)")
    p.add_argument("--orphan", type=float, default=60.0,
                   help="s without a word from the processor before stopping (default 60; "
                        "0: never)")
    p.add_argument("--progress-interval", type=float, default=10.0,
                   help="s between progress lines (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("keys", help="make CurveZMQ key pairs for remote workers",
                       description="Make the processor's pair (server.key, server.key_secret) "
                                   "if DIR has none yet, and a worker pair (NAME.key, "
                                   "NAME.key_secret). The processor admits every *.key in "
                                   "DIR ([workers] keys = \"DIR\"); copy server.key and the "
                                   "worker pair to the worker hosts. Secret files are made "
                                   "readable by their owner only.")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--name", default="worker", help="the worker pair's name (default worker)")
    p.set_defaults(func=cmd_keys)


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.run.spawn import SINGLE_THREADED

    for k, v in SINGLE_THREADED.items():  # one core per chain thread
        os.environ.setdefault(k, v)
    import math

    import zmq

    from stream.run.curve import client_keys, need_keys
    from stream.run.workers import Refused, serve

    if args.threads < 1:
        print("peakstream worker: --threads must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        need_keys(args.connect, args.keys)
        if args.keys:
            client_keys(args.keys, args.name)
    except (ValueError, OSError) as exc:
        print(f"peakstream worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    done = [0]
    cpu: list[float] = []  # process CPU time at the first and at the last result
    lock = threading.Lock()

    def count() -> None:
        with lock:
            done[0] += 1
            now = time.process_time()
            cpu[:] = [cpu[0] if cpu else now, now]

    failed: list[tuple[str, int]] = []  # why a chain thread ended with an error, exit code

    def chain(**kwargs: Any) -> None:
        try:
            serve(args.connect, ctx, **kwargs)
        except Exception as exc:  # the worker ends with it, instead of idling
            if not isinstance(exc, RuntimeError):  # not a failed I/O thread: a bug of ours
                import traceback
                traceback.print_exc()
            failed.append((str(exc) or type(exc).__name__,
                           EXIT_USAGE if isinstance(exc, Refused) else EXIT_FAILED))

    ctx = zmq.Context.instance()
    orphan = math.inf if args.orphan <= 0 else args.orphan
    warm = warmer(args.quiet)
    threads = [named_thread(chain, f"chain-{i}",
                            kwargs=dict(heartbeat=args.heartbeat, orphan=orphan,
                                        keys=args.keys, on_result=count, freeze_gc=True,
                                        warm=warm, name=args.name))
               for i in range(args.threads)]
    for t in threads:
        t.start()
    print(f"peakstream worker pid {os.getpid()}: {args.threads} chain(s) for {args.connect}"
          f"{' (CurveZMQ)' if args.keys else ''}", file=sys.stderr, flush=True)
    t0 = last = time.monotonic()
    try:
        while any(t.is_alive() for t in threads) and not failed:
            threads[0].join(0.1) if threads[0].is_alive() else time.sleep(0.1)
            now = time.monotonic()
            if not args.quiet and now - last >= args.progress_interval:
                last = now
                print(f"worker: {done[0]} points ({done[0] / (now - t0):.1f}/s)",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"worker: interrupted after {done[0]} points", file=sys.stderr)
        return EXIT_OK
    if failed:
        print(f"peakstream worker: {failed[0][0]} (after {done[0]} points)", file=sys.stderr)
        return failed[0][1]
    per = (f", {(cpu[1] - cpu[0]) / (done[0] - 1) * 1e3:.3f} ms CPU per point after the "
           f"first" if done[0] > 1 else "")
    print(f"worker: {done[0]} points{per}; the processor stopped (or went silent)",
          file=sys.stderr)
    return EXIT_OK


def warmer(quiet: bool) -> Callable[[Any], None]:
    """The chains' warm-up on the processor's config: on a cold numba cache (a new
    install, or a config this host never warmed up) the kernels compile once, with a
    progress line, before the worker takes points; otherwise nothing. Without it the
    first points waited at this worker, and the processor's output with them, while
    each chain thread compiled in silence."""
    from stream.cli.warmup import warm_up_if_cold

    lock = threading.Lock()  # one warm-up for all the chain threads

    def warm(config: Any) -> None:
        with lock:
            try:
                warm_up_if_cold(config, "worker", quiet=quiet)
            except Exception as exc:  # the chain compiles on its first points instead
                print(f"worker: warm-up failed ({type(exc).__name__}: {exc}); kernels "
                      f"compile on the first points", file=sys.stderr, flush=True)
    return warm


def cmd_keys(args: argparse.Namespace) -> int:
    from stream.run.curve import make_keys

    try:
        made = make_keys(args.directory, args.name)
    except (OSError, ValueError) as exc:
        print(f"peakstream keys: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for path in made:
        print(f"wrote {path}")
    print(f"processor: [workers] keys = \"{args.directory}\" (server.key_secret stays there)\n"
          f"workers:   copy server.key, {args.name}.key and {args.name}.key_secret; "
          f"peakstream worker --keys DIR "
          f"{'' if args.name == 'worker' else f'--name {args.name} '}--connect tcp://HOST:PORT")
    return EXIT_OK
