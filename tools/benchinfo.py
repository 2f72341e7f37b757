"""What every benchmark prints about the machine (the CPU model, package versions), and
what a benchmark can read of a process it runs: CPU per thread from /proc, and a
py-spy profile summed by thread name and innermost frame of our own code."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from collections import Counter, defaultdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------ CPU per thread (Linux)


def thread_ticks(pid: int, prefix: str = "") -> dict[int, tuple[str, int]]:
    """tid -> (name, utime + stime in clock ticks) of every thread of `pid` now.

    The name is the thread's kernel name (/proc/PID/task/TID/comm), the main thread's
    marked " (main)", each prefixed with `prefix` (to tell processes apart)."""
    out: dict[int, tuple[str, int]] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        tid = int(task)
        name = prefix + comm + (" (main)" if tid == pid else "")
        out[tid] = (name, int(fields[11]) + int(fields[12]))  # utime, stime
    return out


def thread_cpu(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]
               ) -> dict[str, dict[str, float]]:
    """CPU seconds between two `thread_ticks` snapshots, summed by thread name, with the
    number of threads of that name (a thread that ended in between counts only if the
    `after` snapshot holds its last figure)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"cpu_s": 0.0, "threads": 0})
    for tid, (name, ticks) in after.items():
        then = before.get(tid, (name, 0))[1]
        out[name]["cpu_s"] += (ticks - (then if then <= ticks else 0)) / tick  # tid reused
        out[name]["threads"] += 1
    return dict(out)


# ------------------------------------------------------------------ py-spy


def py_spy() -> str | None:
    """The py-spy binary (on PATH or beside this Python), or None."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


_THREAD = re.compile(r"^thread \((\w+)\)(?:: (.*))?$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def profile_summary(raw: str, names: dict[int, str], own: tuple[str, ...] = ("stream", "nodes"),
                    top: int = 15) -> dict[str, dict]:
    """Summarise py-spy's `--format raw --threads` output: per thread (named by `names`,
    tid -> kernel name, else py-spy's Python name), its samples and the share of them
    by innermost frame from a file under one of the `own` packages (top `top`); a stack
    with no such frame counts under "~ " and its innermost function."""
    packages = "|".join(map(re.escape, own))
    pattern = re.compile(rf"(?:^|/)((?:{packages})/[^()]*\.py)$")
    counts: dict[str, Counter] = defaultdict(Counter)
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        thread = next((m for f in frames[:3] if (m := _THREAD.match(f))), None)
        if thread is None:
            name = "?"
        else:
            tid = int(thread.group(1), 0) if thread.group(1)[:1].isdigit() else -1
            name = names.get(tid) or thread.group(2) or thread.group(0)
        key = None
        for frame in reversed(frames):
            m = _FRAME.match(frame)
            if m and (p := pattern.search(m.group("file"))):
                key = f"{m.group('func')} ({p.group(1)})"
                break
        if key is None:
            leaf = _FRAME.match(frames[-1])
            python = leaf is not None and not _THREAD.match(frames[-1])
            key = "~ " + (leaf.group("func") if python else "(no Python frame)")
        counts[name][key] += int(n)
    out = {}
    for name, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(c.values())
        out[name] = {"samples": total,
                     "top": [[k, v / total] for k, v in c.most_common(top)]}
    return out
