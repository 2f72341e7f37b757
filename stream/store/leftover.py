"""The files a crash left open in an output directory (status running: the process
writing them died), for a restarted daemon to say so at start-up."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stream.store.identity import continued_with, processing_hash
from stream.store.outputdir import newest_first, output_files, scan_entries

log = logging.getLogger(__name__)

MAX_LOOKED_AT = 500  # the newest files opened at start-up; older ones are not looked at


def open_files(directory: str | Path, config_text: str) -> tuple[list[tuple[Path, str, bool]],
                                                                  int]:
    """(path, scan_id, written with this processing config) of each file in `directory`
    or the two levels of subdirectories a pattern makes whose status is running, newest
    first; and how many older files were not looked at (beyond MAX_LOOKED_AT)."""
    paths = newest_first(output_files(directory))
    want = processing_hash(config_text)
    found = []
    for path, _, entry in scan_entries(paths[:MAX_LOOKED_AT]):
        try:
            if str(entry.attrs.get("status")) != "running":
                continue
            same = want in continued_with(entry["process"])
            found.append((path, str(entry.attrs.get("scan_id")), same))
        except (OSError, KeyError, ValueError):
            continue  # not ours, or not readable
    return found, max(len(paths) - MAX_LOOKED_AT, 0)


def describe(found: list[tuple[Path, str, bool]], unchecked: int, limit: int = 5) -> str:
    """One line for the log: at most `limit` files named, then a count."""
    named = [f"{path} (scan {scan_id!r}{'' if same else ', another config: not resumed'})"
             for path, scan_id, same in found[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    older = f" ({unchecked} older files not looked at)" if unchecked else ""
    return (f"{len(found)} scan file(s) a crash left open (status running): "
            f"{', '.join(named)}{more}{older}; each is continued when its scan's start or "
            f"points arrive again (same config), or complete it with `peakstream replay "
            f"RECORDING --fill FILE`")


def warn_open_files(directory: str | Path, config: Any) -> None:
    """At a daemon's start-up: a WARNING naming the files a crash left open, if any."""
    found, unchecked = open_files(directory, config.text())
    if found:
        log.warning("%s", describe(found, unchecked))
