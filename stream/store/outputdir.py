"""The scan files of an output directory, read one way for every caller that looks
through them: the start-up list of files a crash left open (`stream.store.leftover`)
and the runner's resume side (`stream.run.resuming`, `stream.store.resume`).

The files are those of the directory and of the two levels of subdirectories an
`[output] pattern` makes. Only regular files are opened: a link or a FIFO planted
under a scan file's name is never opened (a FIFO would block the reader), and a
file that is not ours, or not readable, is skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stream.store.checkpoint import open_h5

LEVELS = ("", "*/", "*/*/")  # the directory and the subdirectories a pattern makes


def output_files(directory: str | Path, name: str = "*.h5") -> list[Path]:
    """The files named `name` (a glob) in `directory` and two levels below it."""
    return [p for level in LEVELS for p in Path(directory).glob(level + name)]


def scan_entries(paths: Iterable[Path], mine: bool = False
                 ) -> Iterator[tuple[Path, os.stat_result, Any]]:
    """(path, its lstat, its open /entry) of each regular file of `paths` (`mine`: of
    this process's user only) that opens as an output file, in the order given; the
    file stays open while the caller looks."""
    for path in paths:
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or (mine and st.st_uid != os.geteuid()):
                continue  # a link, a FIFO ... (or another user's file): never opened
            with open_h5(path) as f:
                yield path, st, f["entry"]
        except (OSError, KeyError, ValueError):
            continue  # not ours, or not readable


def newest_first(paths: Iterable[Path]) -> list[Path]:
    """`paths` by modification time, newest first (those gone meanwhile left out)."""
    dated = []
    for path in paths:
        try:
            dated.append((os.lstat(path).st_mtime, path))
        except OSError:
            continue
    return [p for _, p in sorted(dated, reverse=True)]
