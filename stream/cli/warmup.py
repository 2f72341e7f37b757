"""`peakstream warmup`, and the warm-up with a progress line that run, daemon and demo do
before they bind the data socket (stream/run/warmup.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from stream.cli.codes import EXIT_FAILED, EXIT_OK
from stream.config.schema import Config

log = logging.getLogger("peakstream")


def warm_up(config: Config, label: str, quiet: bool = False, verbose: bool = False,
            stop: Callable[[], None] | None = None) -> Any:
    """Load (or compile) the config's kernels with a progress line on stderr; returns the
    `WarmupReport`. Called before the data socket is bound: a sender that connects
    meanwhile waits in ZeroMQ's queue. `stop()`: raises to end the warm-up early."""
    from stream.run.warmup import expected_seconds, warmup

    tty = sys.stderr.isatty()
    about = expected_seconds(config)
    state = {"last": 0.0, "said_cold": False}

    def progress(done: int, total: int | None, compiling: bool) -> None:
        now = time.monotonic()
        if quiet or (now - state["last"] < (0.2 if tty else 5.0) and not
                     (compiling and not state["said_cold"])):
            return
        state["last"] = now
        state["said_cold"] |= compiling
        of = f"/{total}" if total else " kernels"
        why = f" (first start after install or upgrade: about {about:.0f} s)" if compiling \
            else ""
        line = f"{label}: warming up kernels{why} {done}{of}"
        sys.stderr.write(("\r" + line + "\033[K") if tty else line + "\n")
        sys.stderr.flush()

    report = warmup(config, progress, stop)
    if not quiet:
        if tty:
            sys.stderr.write("\r\033[K")
        how = f"{len(report.compiled)} compiled" if report.compiled else "all from the cache"
        print(f"{label}: {report.kernels} kernels ready in {report.seconds:.1f} s ({how}; "
              f"frames {', '.join(report.frames) or 'none'})", file=sys.stderr, flush=True)
    for problem in report.problems:
        log.warning("warm-up: %s", problem)
    if verbose:
        for c in sorted(report.compiled, key=lambda c: -c.seconds):
            print(f"  {c.seconds:7.2f} s  {'  ' * c.depth}{c.name}({c.signature})")
    return report


def warm_up_if_cold(config: Config, label: str, quiet: bool = False) -> bool:
    """`warm_up` only if this numba cache was never warmed up for this config and version
    (a new install): for processes whose kernels would otherwise compile later, out of
    sight (forked cluster workers, a remote worker's chains). True if it ran."""
    from stream.run.warmup import warmed_before

    if warmed_before(config):
        return False
    warm_up(config, label, quiet=quiet)
    return True


def cmd_warmup(args: argparse.Namespace) -> int:
    """Load (or compile) the kernels a config uses, then exit (install scripts, systemd
    ExecStartPre)."""
    config = Config.load(args.config)
    report = warm_up(config, "warmup", verbose=args.verbose_kernels)
    if args.verbose_kernels:
        total = sum(c.seconds for c in report.compiled if c.depth == 0)
        print(f"  {total:7.2f} s  in {len(report.compiled)} compiles "
              f"({sum(c.depth == 0 for c in report.compiled)} top level)")
    return EXIT_FAILED if report.problems else EXIT_OK
