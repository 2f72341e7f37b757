"""Output file names: one file per scan, from the `[output] pattern`, never overwritten.

Fields: {scan_id}; {sample} (the start message's meta "sample", "unknown" if
absent); {scan_number} (per target directory: 1 + the highest number
already there under this pattern, and above the last one this session gave
there, so a restarted daemon goes on counting); {date} (YYYYMMDD) and {time} (HHMMSS),
local time at the start. Values from the network are made safe for a file
name (letters, digits, '.', '_', '-'; never a path). A name already taken
gets -1, -2, ... before its suffix.
"""

from __future__ import annotations

import os
import re
import string
import time
from pathlib import Path
from typing import Any

UNSAFE = re.compile(r"(?:[^A-Za-z0-9._-]|\.\.+)+")


def safe_name(value: Any, default: str = "unknown") -> str:
    """A value from a start message as a piece of a file name."""
    text = UNSAFE.sub("_", str(value)).strip("._") if value not in (None, "") else ""
    return text[:100] or default


class Namer:
    """Names the output file of each scan in one directory after one pattern."""

    def __init__(self, directory: str | Path, pattern: str = "{scan_id}.h5"):
        self.directory = Path(directory)
        self.pattern = pattern
        self.last_number: dict[Path, int] = {}  # per target directory, this session
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
        self.numbered = "scan_number" in fields

    def path(self, scan_id: str, meta: dict[str, Any] | None = None,
             now: float | None = None) -> Path:
        """A path for a new scan's file, which does not exist yet; creates the directory
        (OSError when it cannot be made)."""
        t = time.localtime(time.time() if now is None else now)
        values: dict[str, Any] = {
            "scan_id": safe_name(scan_id), "sample": safe_name((meta or {}).get("sample")),
            "date": time.strftime("%Y%m%d", t), "time": time.strftime("%H%M%S", t),
            "scan_number": 0}
        rel = Path(self.pattern.format(**values))
        target = self.directory / rel.parent
        target.mkdir(parents=True, exist_ok=True)
        if rel.parent != Path(".") and (os.path.realpath(target) != os.path.join(
                os.path.realpath(self.directory), rel.parent)):
            raise OSError(f"{target} leads out of the output directory (a symlink the "
                          f"daemon did not make): not written to")
        if self.numbered:
            values["scan_number"] = max(self.last_number.get(target, 0),
                                        self._highest(target)) + 1
            self.last_number[target] = values["scan_number"]
            rel = Path(self.pattern.format(**values))
        path = self.directory / rel
        n = 1
        while os.path.lexists(path):  # never overwrite an earlier scan's file (nor a link)
            path = path.with_name(f"{rel.stem}-{n}{rel.suffix}")
            n += 1
        return path

    def _highest(self, directory: Path) -> int:
        """The highest scan number among the files there that the pattern names."""
        regex = self._regex()
        best = 0
        try:
            names = [p.name for p in directory.iterdir()]
        except OSError:
            return 0
        for name in names:
            m = regex.fullmatch(name)
            if m:
                best = max(best, int(m.group("n")))
        return best

    def _regex(self) -> re.Pattern:
        name = Path(self.pattern).name
        out, seen = [], False
        for literal, field, _, _ in string.Formatter().parse(name):
            out.append(re.escape(literal))
            if field is None:
                continue
            if field == "scan_number" and not seen:
                out.append(r"(?P<n>\d+)")
                seen = True
            elif field == "scan_number":
                out.append(r"\d+")
            else:
                out.append(r".+?")
        stem, dot, suffix = "".join(out).rpartition(r"\.")
        if dot and stem:  # name-1.h5, name-2.h5: the same number
            return re.compile(f"{stem}(?:-\\d+)?\\.{suffix}")
        return re.compile("".join(out) + r"(?:-\d+)?")
