"""Resume a scan from its output file, after a crash or a kill at any instant.

    resumed = resume(path, config.text(), start_json)   # ResumeError if it cannot
    store = resumed.store                                 # reopened, ready to append
    collector = Collector(linker, store, counters, ...)   # as for a new scan
    linker.setup(scan)
    collector.restore(resumed)                            # linker, trajectory, counters

The file is as of its last checkpoint (`stream.checkpoint`): every point
before `resumed.next_point` is stored (ok, missing or bad) and is kept; a
copy of it that arrives again is a duplicate. The points from `next_point`
on go through the reorder buffer as in any scan: those that never come are
recorded as missing at the end, those that come (a recorded file replayed
again) are processed. So with every point delivered the file equals an
uninterrupted run, row for row. The processing config (nodes, linker,
detector, trajectory: `processing_hash`) must be the one the file was written
with, and the start message the same scan; endpoints, output, workers and
live settings may differ.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.messages import Start, start_from_json
from stream.core.table import read_table
from stream.store.identity import (
    GIVEN,
    calibration_changes,
    continued_with,
    processing_hash,
    recorded_calibration,
)
from stream.store.layout import now_iso
from stream.store.rows import POINT_STATUS
from stream.store.scanfile import ScanStore
from stream.store.state import read_state

log = logging.getLogger(__name__)

# start-message keys that must match for a resume (meta may differ)
SAME_SCAN = ("scan_id", "detectors", "motors", "counters", "npoints", "trajectory")
# counters of messages rather than stored points: carried over as of the checkpoint
MESSAGE_COUNTERS = ("duplicate", "rejected", "malformed", "overruns", "max_lag", "resumed")
RESUMABLE = ("running", "fail")
SETUP_FAILED = "setup failed"  # how the reason of a scan whose chain was never set up starts
# ended with points to complete from the recording (replay --fill: stream.offline.fill)
FILLABLE = ("incomplete", "abort", "fail")


class ResumeError(ValueError):
    """The file cannot be resumed (other config, other scan, ended, damaged)."""


@dataclass
class Resumed:
    """A scan file reopened at its last checkpoint, with what the collector needs."""

    store: ScanStore
    linker_state: dict[str, Any] | None  # None: nothing was linked yet
    next_point: int  # the first point not stored
    npoints: int | None
    linkable: np.ndarray  # points a later point may still link to
    counters: dict[str, int]
    start_json: str
    points: dict[str, np.ndarray] = field(repr=False)  # the points table as stored
    checkpoint: dict[str, Any] = field(default_factory=dict)  # seq, time of the checkpoint

    def stored(self, point_id: int) -> bool:
        """Is this point in the file already (then it is kept, not processed again)?"""
        return 0 <= point_id < self.next_point

    def observed(self) -> Iterator[tuple[int, dict[str, float]]]:
        """(point_id, motors) as the trajectory saw each stored point: motors for the
        points with data, none for missing and bad ones."""
        motors = {k.split("/", 1)[1]: v for k, v in self.points.items()
                  if k.startswith("motors/")}
        ok = self.points["status"] == POINT_STATUS.index("ok")
        for i, pid in enumerate(self.points["point_id"].tolist()):
            yield pid, ({m: float(v[i]) for m, v in motors.items()} if ok[i] else {})

    def start(self) -> Start:
        """The start message the file was written for."""
        return start_from_json(self.start_json)


def resume(path: str | Path, config_text: str, start_json: str | None = None, *,
           flush_interval: float = 1.0, calibration: dict[str, Any] | None = None) -> Resumed:
    """Reopen `path` at its last checkpoint to continue its scan (see the module
    docstring). ResumeError if the file was written with another config or, given the
    config's `calibration` (`stream.config.calibration`), with calibration files of
    another content (a dark taken again), is for another scan (when `start_json` is
    given), has ended, or holds no checkpoint to resume from."""
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"{path}: no such file to resume")
    try:
        store = ScanStore.reopen(path, flush_interval)
    except (OSError, ValueError, KeyError) as exc:
        raise ResumeError(f"{path}: cannot reopen: {exc}") from exc
    try:
        return _resumed(store, config_text, start_json, calibration)
    except BaseException:
        store.close_unchanged()
        raise


def _resumed(store: ScanStore, config_text: str, start_json: str | None,
             calibration: dict[str, Any] | None) -> Resumed:
    path, f = store.path, store.file
    entry, proc = f["entry"], f["entry/process"]
    theirs, mine = processing_hash(proc["config"].asstr()[()]), processing_hash(config_text)
    if mine not in continued_with(proc):
        raise ResumeError(f"{path}: written with another processing config ([[node]], "
                          f"[linker], [source] detector / trajectory; sha256 {theirs[:16]}..., "
                          f"this one {mine[:16]}...): resume with the config it was written "
                          f"with (/entry/process/config), or give none")
    changed = [] if calibration is None else calibration_changes(recorded_calibration(proc),
                                                                 calibration)
    if changed:
        raise ResumeError(f"{path}: written with other calibration files, which this config "
                          f"names but whose content has changed since: {'; '.join(changed)}")
    stored_start = proc["start"].asstr()[()]
    if start_json is not None:
        a, b = json.loads(stored_start), json.loads(start_json)
        differ = [k for k in SAME_SCAN if a.get(k) != b.get(k)]
        if differ:
            what = "; ".join(f"{k}: file {a.get(k)!r}, now {b.get(k)!r}" for k in differ)
            raise ResumeError(f"{path}: the start message is for another scan ({what})")
    status = str(entry.attrs["status"])
    if not resumable(entry):
        if status in RESUMABLE:  # (its reason says why: a mask of another shape, ...)
            raise ResumeError(f"{path}: the scan failed at its setup and took no point; "
                              f"nothing to resume")
        raise ResumeError(f"{path}: the scan has ended (status {status!r}); nothing to resume")
    ck = proc["checkpoint"]
    rows = store.rows()
    if "state" in ck and "state_rows" in ck.attrs:
        state = read_state(ck)
        linker_state, coll = state["linker"], state["collector"]
        next_point = int(coll["next_point"])
        npoints = None if int(coll["npoints"]) < 0 else int(coll["npoints"])
        linkable = np.asarray(coll["linkable"], np.int64)
        kept = json.loads(ck.attrs["state_rows"])
    else:  # nothing linked before the first state: start afresh
        linker_state, next_point, npoints = None, 0, None
        linkable = np.empty(0, np.int64)
        kept = {k: 0 for k in rows}
    if any(kept.get(k, 0) > n for k, n in rows.items()):
        raise ResumeError(f"{path}: the tables hold fewer rows ({rows}) than its resume "
                          f"state ({kept}): damaged, cannot resume")
    if kept != rows:  # rows committed after the state: the resumed run writes them again
        log.warning("%s: rows after the last resume state are dropped (%s -> %s)", path,
                    rows, kept)
        store.truncate(kept)
        rows = store.rows()
    points = read_table(entry["points"])
    if not np.array_equal(points["point_id"], np.arange(next_point)):
        raise ResumeError(f"{path}: the points table does not hold points 0..{next_point - 1} "
                          f"in order: cannot resume")
    counters = _counters(entry, points, rows)
    seq = int(ck.attrs["seq"])
    store.event("resume", f"resumed at point {next_point} from checkpoint {seq} "
                          f"({ck.attrs['time']}; status was {status})", next_point)
    entry.attrs.update(status="running", reason="")
    proc.attrs["end_time"] = ""
    log.info("%s: resumed at point %d (checkpoint %d of %s)", path, next_point, seq,
             ck.attrs["time"])
    return Resumed(store, linker_state, next_point, npoints, linkable, counters, stored_start,
                   points, {"seq": seq, "time": str(ck.attrs["time"]), "resumed": now_iso()})


def _counters(entry: Any, points: dict[str, np.ndarray], rows: dict[str, int]) -> dict[str, int]:
    """The scan's counters as a resume starts: those of points recounted from the rows,
    those of messages as of the checkpoint, `resumed` one more."""
    old = {k: int(v) for k, v in entry["process/counters"].attrs.items()}
    n = np.bincount(points["status"], minlength=len(POINT_STATUS))
    ok, missing, bad = (int(n[POINT_STATUS.index(s)]) for s in ("ok", "missing", "bad"))
    out = {k: old.get(k, 0) for k in MESSAGE_COUNTERS}
    out["resumed"] += 1
    out.update(received=ok + bad + out["duplicate"], accepted=ok + bad, processed=ok, bad=bad,
               missing=missing, linked=ok + bad + missing, written=ok + bad + missing,
               cliques=rows["cliques"])
    return out


def resumable(entry: Any) -> bool:
    """An output file's /entry that a crash (or a failed write) left to be continued:
    status running or fail, but not a scan that failed at its setup (it took no point:
    its chain is set up again from the start, and fails again unless a calibration file
    changed)."""
    return (str(entry.attrs.get("status")) in RESUMABLE
            and not str(entry.attrs.get("reason", "")).startswith(SETUP_FAILED))


def checkpoint_info(f: Any) -> dict[str, Any]:
    """The last checkpoint of an open output file: seq, time, rows, whether the scan
    can resume and from which point (the points after it are processed again)."""
    ck = f["entry/process/checkpoint"]
    rows = json.loads(ck.attrs["rows"])
    state_rows = json.loads(ck.attrs.get("state_rows", "null"))
    kept = state_rows["points"] if state_rows is not None and "state" in ck else 0
    return {"seq": int(ck.attrs["seq"]), "time": str(ck.attrs["time"]), "rows": rows,
            "resumable": resumable(f["entry"]),
            "resume_at": kept}


def resumable_file(directory: str | Path, scan_id: str, config_text: str) -> Path | None:
    """The output file in `directory` (newest first) of scan `scan_id` that a crash left
    open (status running or fail) and that was written with this config; None if none.
    For a restarted daemon that sees the start of a scan it was writing."""
    return newest_resumable(survey(Path(directory).glob("*.h5"), scan_id), config_text)


@dataclass
class Candidate:
    """What the resume side needs of one file of a scan: read once at the scan's start
    (`survey`), for the file to continue and for the warnings about the others."""

    path: Path
    mtime: float
    status: str
    resumable: bool  # `resumable`: a crash left it to be continued
    ours: bool  # ours to continue: this user's, written by us at this very name and
    # inode (never a copy, a link or another user's file), with a checkpoint
    config: str  # the config text it was written with
    given: str  # the processing hash of the config the process was given, if it differs
    # (a scan started after a control `set`: `stream.store.identity.continued_with`)
    lost: list[str]  # "3 missing", "1 bad": its points not stored

    @cached_property
    def continued_with(self) -> set[str]:
        """The processing hashes of the configs that may continue it (its config parsed
        only when asked for)."""
        return {processing_hash(self.config)} | ({self.given} if self.given else set())

    def continues(self, processing: str) -> bool:
        """Is this the file a start (or a point) of its scan with this config continues?"""
        return self.ours and self.resumable and processing in self.continued_with


def survey(paths: Iterable[Path], scan_id: str) -> list[Candidate]:
    """Each output file of `paths` (in the order given) of scan `scan_id`, opened once
    (`stream.store.outputdir.scan_entries`: links, FIFOs and files that are not ours
    are never opened or skipped)."""
    from stream.store.outputdir import scan_entries

    found = []
    for path, st, entry in scan_entries(paths):
        try:
            if str(entry.attrs.get("scan_id")) != scan_id:
                continue
            proc = entry["process"]
            counts = proc["counters"].attrs
            ours = (st.st_uid == os.geteuid() and proc.attrs.get("file") == path.name
                    and proc.attrs.get("inode") == st.st_ino and "checkpoint" in proc)
            found.append(Candidate(
                path, st.st_mtime, str(entry.attrs.get("status", "?")), resumable(entry),
                ours, proc["config"].asstr()[()], str(proc["config"].attrs.get(GIVEN, "")),
                [f"{int(counts[k])} {k}" for k in ("missing", "bad") if int(counts.get(k, 0))]))
        except (OSError, KeyError, ValueError):
            continue  # not ours, or not readable
    return found


def newest_resumable(candidates: Iterable[Candidate], config_text: str) -> Path | None:
    """Of `candidates`, the newest file a crash left open that this config continues."""
    want = processing_hash(config_text)
    found = [(c.mtime, c.path) for c in candidates if c.continues(want)]
    return max(found)[1] if found else None
