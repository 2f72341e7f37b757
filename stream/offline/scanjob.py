"""One recorded scan into one output file: the unit of work of a batch replay.

`replay_scan` is what `peakstream replay` does for each scan (block replay of a
sparse recording, otherwise every point through the runner and the wire
encoding), on its own runner, so a scan can run anywhere: in this process, or
as a dask task on another host (stream/offline/cluster.py). `scan_jobs` turns
the command's INPUTs into scans, one Bliss master file into one job per scan
entry (/1.1, /2.1, ...), and `output_path` names each scan's file without the
namer's "-1" suffixes, so that a rerun finds the files of the scans it finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.config.schema import Config
from stream.store.naming import safe_name

log = logging.getLogger(__name__)

STABLE_FIELDS = {"scan_id", "sample"}
SOURCE_ATTR = "replay_source"  # /entry/process attribute: what the file is made from


@dataclass
class ScanJob:
    """A recorded scan to replay: its inputs and the open_recording options for it."""

    name: str
    inputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    scan_id: str = ""
    npoints: int | None = None
    path: Path | None = None
    start_json: str = ""  # the start message as a serial replay stores it
    identity: str = ""  # what its file is made from (`source_identity`)


def scan_jobs(groups: list[list[str]], options: dict[str, Any]) -> list[ScanJob]:
    """One job per recorded scan. A relative --images path (`measurement/eiger`) with
    HDF5 inputs makes one scan per entry of each file that holds it (a Bliss master
    file: /1.1, /2.1, ...), named FILESTEM_ENTRY unless --scan-id is given."""
    images = list(options.get("images") or ())
    relative = [p for p in images if "::" not in p and not p.startswith("/")]
    if not relative:
        return [ScanJob(_name(inputs, images), inputs, dict(options)) for inputs in groups]
    if len(relative) != len(images) or len(relative) != 1:
        raise ValueError("a relative --images path (one scan per entry of a Bliss master "
                         "file) is given alone, e.g. --images measurement/eiger")
    jobs = []
    for inputs in groups:
        for path in inputs:
            for entry in bliss_entries(path, relative[0]):
                opts = dict(options, images=[f"{path}::/{entry}/{relative[0]}"])
                stem = Path(path).stem
                opts["scan_id"] = options.get("scan_id") or f"{stem}_{entry}"
                jobs.append(ScanJob(f"{Path(path).name}::/{entry}", [], opts))
    if not jobs:
        raise ValueError(f"no scan entry of {', '.join(x for g in groups for x in g)} holds "
                         f"{relative[0]}")
    return jobs


def bliss_entries(path: str, rel: str) -> list[str]:
    """The scan entries (N.M, in numeric order) of an HDF5 file that hold `rel`."""
    from stream.sources.files.bliss import entries_holding, scan_entries
    from stream.sources.files.hdf5 import open_file

    with open_file(path) as f:
        entries = scan_entries(f)
        names = entries_holding(f, rel)
    if 0 < len(names) < len(entries):  # said once, not left to guess
        log.warning("%s: scan entries %s hold no %s (a ct, another detector): not replayed",
                    path, ", ".join(k for k in entries if k not in names), rel)
    return names


def _name(inputs: list[str], images: list[str]) -> str:
    return Path((inputs or images)[0].split("::")[0]).name


def output_path(directory: str | Path, pattern: str, scan_id: str,
                meta: dict[str, Any] | None = None) -> Path:
    """The file of a scan under [output] pattern, the same on every run (so only
    {scan_id} and {sample}: a number or a time would name a new file each time)."""
    fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    if fields - STABLE_FIELDS:
        raise ValueError(f"[output] pattern {pattern!r}: a batch on a cluster names files "
                         f"by {{scan_id}} and {{sample}} only, so that a rerun finds them "
                         f"(not {', '.join(sorted(fields - STABLE_FIELDS))})")
    return Path(directory) / pattern.format(scan_id=safe_name(scan_id),
                                            sample=safe_name((meta or {}).get("sample")))


def source_identity(inputs: list[str], options: dict[str, Any]) -> str:
    """What a scan's file is made from, as JSON: each input file by its absolute path and
    its size and modification time; an HDF5 dataset (`FILE::/1.1/measurement/eiger`) by
    its file's absolute path, the dataset, its shape and dtype and its entry's start_time
    (a Bliss master file grows while an experiment goes on: its size and time say nothing
    of the scans it holds already); and the replay's options (motors, counters, ...)."""
    from stream.sources.files.hdf5 import open_file

    files = []
    for spec in [*inputs, *(options.get("images") or ())]:
        name, _, inner = str(spec).partition("::")
        path = Path(name).resolve()
        if inner:
            try:
                with open_file(str(path)) as f:
                    ds = f[inner]
                    top = f[inner.strip("/").split("/")[0]]
                    started = top["start_time"][()] if "start_time" in top else b""
                    files.append([str(path), inner, list(ds.shape), str(ds.dtype),
                                  started.decode() if isinstance(started, bytes)
                                  else str(started)])
            except (OSError, KeyError, ValueError, AttributeError):
                files.append([str(path), inner])
        elif path.exists():
            st = path.stat()
            files.append([str(path), st.st_size, st.st_mtime_ns])
        else:  # a pattern (data_%04d.edf) or a glob: as given
            files.append([str(path)])
    opts = {k: dict(str(x).split("=", 1) for x in v) if k in ("motors", "counters")
            and not isinstance(v, dict) else v for k, v in options.items()
            if k != "images" and v not in (None, [], {}, (), "auto")}  # the defaults: left out
    return json.dumps({"files": files, "options": opts}, sort_keys=True, default=str)


def record_identity(path: Path, identity: str) -> None:
    """Write `identity` into a scan file (`/entry/process` attribute replay_source)."""
    import h5py

    if identity:
        with h5py.File(path, "r+", locking=False) as f:
            f["entry/process"].attrs[SOURCE_ATTR] = identity


def partial_path(path: Path) -> Path:
    """Where a scan is written until it has ended: a killed task never leaves a
    half-written file under the final name."""
    return path.with_name(f".{path.name}.partial")


def replay_scan(config: Config, inputs: list[str], options: dict[str, Any], path: str | Path,
                *, per_point: bool = False, chunk: bool = False,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Replay one recorded scan into `path` as `peakstream replay` does; the summary
    (status, reason, counters). A recording that cannot be opened is OSError/ValueError.
    A `chunk` (points --first..--last of a scan, counted from 0 in its file) says in its
    start where they lie in the scan (meta point_offset), so that its log lines and its
    reason name the scan's point ids: "point 83 is bad", not "point 3"."""
    from stream.offline.batch import open_blocks, replay_blocks
    from stream.run.runner import ScanRunner
    from stream.sources.base import open_source
    from stream.sources.files import open_recording

    def placed(start: Any) -> Any:
        if not chunk:
            return start
        return dataclasses.replace(start, meta={**start.meta, "point_offset": options["first"]})

    blocks = None if per_point else open_blocks(inputs, config, **options)
    if blocks is not None:
        start, stream_blocks = placed(blocks[0]), blocks[1]
        try:
            return replay_blocks(config, start, stream_blocks, path, progress)
        except (OSError, ValueError) as exc:  # the file is closed with status fail
            return {"scan_id": start.scan_id, "status": "fail", "reason": str(exc),
                    "file": str(path)}
    start, points = open_recording(inputs, **options)
    recording = placed(start), points
    runner = ScanRunner(config, output_file=path)
    try:
        with open_source(config, recording, _name(inputs, options.get("images") or [])) \
                as source:
            while not source.done:  # through the wire encoding, as a live scan
                for parts in source.receive(0.0):
                    runner.handle(parts)
                if progress is not None:
                    progress(source.points)
    finally:
        runner.close()
    scan_id = recording[0].scan_id
    if not runner.results:
        return {"scan_id": scan_id, "status": "fail", "file": str(path),
                "reason": runner.last_error or "the scan did not start"}
    return runner.results[-1]


def run_job(config_text: str, config_base: str, inputs: list[str], options: dict[str, Any],
            path: str, per_point: bool = False, identity: str = "",
            chunk: bool = False) -> dict[str, Any]:
    """A dask task: replay one scan into `path` through a partial file, renamed when the
    scan has ended, with `identity` (what it is made from) in it. A scan that failed
    (a full disk, a recording that broke off) is no finished file: its partial file is
    removed and the summary says fail and why. A partial file of an earlier, killed
    attempt is replaced. Returns the file's summary and the wall time. A `chunk` (the
    points --first..--last of a scan) whose every point was bad is kept: it failed
    alone, but its rows are the scan's bad points, which the merge needs."""
    t0 = time.monotonic()
    config = Config.from_text(config_text, "<batch config>", config_base)
    # a task has one core of its own (one single-threaded worker process per core):
    # worker threads would only contend for it (the results are the same), so its file
    # records the config as given, which a serial replay's file holds too
    config.override("workers", "kind", "inline")
    config.text = lambda: config_text  # type: ignore[method-assign]
    final = Path(path)
    part = partial_path(final)
    remove_partial(part)  # an earlier attempt's, killed with its worker
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        from stream.offline.watch import task_progress

        result = replay_scan(config, inputs, options, part, per_point=per_point, chunk=chunk,
                             progress=task_progress())  # points done, to the driver
        rows = options["last"] - options["first"] + 1 if chunk else None
        return finish_partial(part, final, result, identity, t0, rows)
    except (OSError, ValueError) as exc:
        remove_partial(part)
        return failed(final, str(exc), t0)


def finish_partial(part: Path, final: Path, result: dict[str, Any], identity: str,
                   t0: float, rows: int | None = None) -> dict[str, Any]:
    """Rename the partial file `part` of an ended scan to `final` and return its summary;
    a scan that failed, or a file that does not say it ended (its last writes never
    reached the disk), is removed instead: the summary is then fail and why. With
    `rows`, a file that failed holding that many points, none of them ok (every point
    bad or missing), is kept: a chunk's rows for the merge."""
    from stream.store.reader import summary

    if not part.exists():
        return failed(final, result.get("reason") or "no file written", t0)
    try:
        s = summary(part)
        status = s["status"]
        whole = rows is not None and s["points"] == rows and not s["points_ok"]
    except (OSError, ValueError, KeyError) as exc:
        status, result = "fail", {**result, "reason": result.get("reason") or str(exc)}
        whole = False
    bad_chunk = status == "fail" and whole  # kept, with its status: the merge's rows
    if not bad_chunk and (result.get("status") == "fail" or status in ("running", "fail")):
        remove_partial(part)
        reason = result.get("reason") or f"the file was left with status {status}"
        return failed(final, f"{reason} (not kept: {part.name} removed)", t0)
    record_identity(part, identity)
    os.replace(part, final)
    out = summary(final)
    out.update(file=str(final), seconds=time.monotonic() - t0, host=os.uname().nodename,
               started=time.time() - (time.monotonic() - t0))  # wall clock, for a merge
    return out


def remove_partial(part: Path) -> None:
    """A partial file and its checkpoint journal, if any."""
    from stream.store.checkpoint import journal_path

    for stale in (part, journal_path(part), Path(f"{journal_path(part)}.tmp")):
        stale.unlink(missing_ok=True)


def failed(final: Path, reason: str, t0: float) -> dict[str, Any]:
    """The summary of a task that made no file."""
    return {"file": str(final), "status": "fail", "reason": reason, "points": 0,
            "cliques": 0, "seconds": time.monotonic() - t0, "host": os.uname().nodename}
