"""Read an output file back: a summary for people and scripts, and its tables.

Files left by a crash read as of their last checkpoint (`stream.checkpoint.open_h5`
reads through the journal of an interrupted commit; nothing on disk changes).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream.core.table import read_table
from stream.store.checkpoint import journal_path, open_h5
from stream.store.identity import recorded_calibration
from stream.store.rows import POINT_STATUS

BAD_LISTED = 10  # bad points listed with their reason by format_summary (--json: all)


def detector_of(f: h5py.File) -> str:
    """The detector group of an output file (the one with peaks2d); ValueError naming
    the file if it is not one (an ImageD11 sparse file, say)."""
    if "entry" not in f or "process" not in f["entry"]:
        raise ValueError(f"{f.filename}: not a peakstream output file (no /entry/process)")
    for name, obj in f["entry"].items():
        if isinstance(obj, h5py.Group) and "peaks2d" in obj:
            return name
    raise ValueError(f"{f.filename}: no detector group with peaks2d (not a peakstream file?)")


def open_output(path: str | Path) -> h5py.File:
    """An output file opened to read; OSError naming it when it is not there or is not
    HDF5 (a file that is not ours: `detector_of`, `not_ours`)."""
    if not Path(path).is_file():
        raise OSError(f"{path}: no such file")
    try:
        return open_h5(path)
    except OSError as exc:
        raise OSError(f"{path}: cannot open as HDF5: {exc}") from None


def not_ours(path: str | Path, exc: KeyError) -> ValueError:
    """The error for an HDF5 file that lacks what an output file holds (h5py's KeyError)."""
    return ValueError(f"{path}: not a peakstream output file ({exc.args[0] if exc.args else exc})")


def load(path: str | Path) -> dict[str, Any]:
    """All tables of an output file as dicts of columns (OSError, ValueError naming the
    file if it is not one)."""
    with open_output(path) as f:
        try:
            return _tables(f)
        except KeyError as exc:
            raise not_ours(path, exc) from None


def _tables(f: h5py.File) -> dict[str, Any]:
    """`load`'s tables (KeyError when the file lacks one)."""
    det = detector_of(f)
    return {
        "detector": det,
        "points": read_table(f["entry/points"]),
        "peaks2d": read_table(f[f"entry/{det}/peaks2d"]),
        "overlaps": read_table(f[f"entry/{det}/overlaps"]),
        "cliques": read_table(f[f"entry/{det}/cliques"]),
        "shares": (read_table(f[f"entry/{det}/shares"]) if "shares" in f[f"entry/{det}"]
                   else {}),
        "sparse": read_table(f[f"entry/{det}/sparse"]),
        "events": read_table(f["entry/process/events"]),
    }


def summary(path: str | Path) -> dict[str, Any]:
    """What a scientist asks first: status, points, peaks, cliques, what went wrong
    (OSError, ValueError naming the file if it is not an output file)."""
    with open_output(path) as f:
        try:
            return _summary(f, path)
        except KeyError as exc:
            raise not_ours(path, exc) from None


def _summary(f: h5py.File, path: str | Path) -> dict[str, Any]:
    """`summary` of the open file (KeyError when it lacks a dataset or attribute)."""
    det = detector_of(f)  # (a file that is not ours: ValueError saying so)
    entry = f["entry"]
    # a file still being written may commit between two reads of this handle (its
    # columns then differ in length): the rows all columns hold
    status, point_id = entry["points/status"][()], entry["points/point_id"][()]
    n = min(status.shape[0], point_id.shape[0])
    status, point_id = status[:n], point_id[:n]
    counts = np.bincount(status, minlength=len(POINT_STATUS))
    events = Counter(entry["process/events/kind"].asstr()[()])
    proc = entry["process"]
    return {
        "file": str(path),
        "scan_id": str(entry.attrs["scan_id"]),
        "status": str(entry.attrs["status"]),
        "reason": str(entry.attrs["reason"]),
        "detector": det,
        "points": int(len(status)),
        **{f"points_{name}": int(counts[i]) for i, name in enumerate(POINT_STATUS)},
        "sparse_pixels": int(entry[f"{det}/sparse/row"].shape[0]),
        "peaks2d": int(entry[f"{det}/peaks2d/npx"].shape[0]),
        "overlaps": int(entry[f"{det}/overlaps/peak_a"].shape[0]),
        "cliques": int(entry[f"{det}/cliques/clique_id"].shape[0]),
        "shared_peaks": _shared_peaks(entry[det]),
        "config_sha256": proc["config_sha256"].asstr()[()],
        "calibration": recorded_calibration(proc),  # None: written before it was recorded
        "start_time": str(proc.attrs["start_time"]),
        "end_time": str(proc.attrs["end_time"]),
        "counters": {k: int(v) for k, v in proc["counters"].attrs.items()},
        "events": dict(events),
        "missing_points": point_id[status == POINT_STATUS.index("missing")].tolist(),
        "bad_points": _bad_points(entry["process/events"],
                                  point_id[status == POINT_STATUS.index("bad")]),
        "filled": json.loads(proc.attrs.get("filled", "[]")),
        "checkpoint": _checkpoint(f, path),
        "warnings": _warnings(entry["process/events"]),
    }


def _warnings(events: h5py.Group) -> list[str]:
    """The distinct messages of the events `warning` (what the scan's start or its
    config likely did not mean: nodes not run on sparse frames, ...), in order."""
    kind = events["kind"].asstr()[()]
    rows = np.flatnonzero(kind[:events["message"].shape[0]] == "warning")
    if not rows.size:
        return []
    messages = events["message"].asstr()[()]
    return list(dict.fromkeys(str(messages[i]) for i in rows))


def _bad_points(events: h5py.Group, bad: np.ndarray) -> list[dict[str, Any]]:
    """The points still bad (`bad`: their ids) and why, from their last event of kind
    `bad`, in point order: a point a `--fill` made good keeps its old event, not its place."""
    kind = events["kind"].asstr()[()]
    n = min(kind.shape[0], events["point_id"].shape[0], events["message"].shape[0])
    rows = np.flatnonzero(kind[:n] == "bad")
    if not rows.size or not bad.size:
        return []
    ids, messages = events["point_id"][()], events["message"].asstr()[()]
    last = {int(ids[i]): str(messages[i]) for i in rows}  # a later event wins
    return [{"point_id": p, "reason": last.get(p, "(no event recorded)")}
            for p in sorted(set(bad.tolist()))]


def _checkpoint(f: h5py.File, path: str | Path) -> dict[str, Any]:
    """The last checkpoint (files written before checkpoints existed: {})."""
    from stream.store.resume import checkpoint_info

    if "checkpoint" not in f["entry/process"]:
        return {}
    return {**checkpoint_info(f), "journal": journal_path(path).exists()}


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{s['file']}",
        f"  scan {s['scan_id']}: {s['status']}" + (f" ({s['reason']})" if s["reason"] else "")
        + (", but no process is writing it: its writer died or stopped (a full disk: "
           "the log says why); it holds what its last checkpoint wrote"
           if s.get("writer") is False else ""),
        f"  points      {s['points']} ({s['points_ok']} ok, {s['points_missing']} missing, "
        f"{s['points_bad']} bad)",
        f"  detector    {s['detector']}: {s['sparse_pixels']} sparse pixels",
        f"  2D peaks    {s['peaks2d']}",
        f"  overlaps    {s['overlaps']}",
        f"  cliques     {s['cliques']}"
        + (f" ({s['shared_peaks']} 2D peaks shared between cliques: see shares)"
           if s.get("shared_peaks") else "")
        + (f" ({fit_failed} whose Gaussian fit failed: fit_intensity NaN)"
           if (fit_failed := s.get("counters", {}).get("fit_failed")) else ""),
        f"  config      sha256 {s['config_sha256'][:16]}",
        *[f"  calibration {c['file']}: sha256 {c['sha256'][:16] or '(unreadable)'} "
          f"([[node]] #{c['node']} {c['kind']} {c['key']}; {c['path']})"
          for c in (s.get("calibration") or {}).get("files", [])],
        f"  time        {s['start_time']} .. {s['end_time']}",
    ]
    if s.get("missing_points"):
        lines.append(f"  missing     points {id_ranges(s['missing_points'])}")
    bad = s.get("bad_points") or []
    if bad:
        lines.append(f"  bad         points {id_ranges(sorted(b['point_id'] for b in bad))}")
        lines += [f"              point {b['point_id']}: {b['reason']}" for b in bad[:BAD_LISTED]]
        if len(bad) > BAD_LISTED:
            lines.append(f"              ({len(bad) - BAD_LISTED} more: --json, or the file's "
                         f"/entry/process/events)")
    lines += [f"  warning     {w}" for w in s.get("warnings", [])[:BAD_LISTED]]
    for fill in s.get("filled", []):
        lines.append(f"  filled      {fill['time']} from {', '.join(fill['inputs'])}: "
                     f"points {id_ranges(fill['points'])}")
    ck = s.get("checkpoint") or {}
    if ck and s["status"] in ("running", "fail", "incomplete"):
        journal = " (read through the journal of an interrupted commit)" if ck["journal"] else ""
        resumable = f"resumable at point {ck['resume_at']}" if ck["resumable"] else \
            "not resumable"
        lines.append(f"  checkpoint  #{ck['seq']} at {ck['time']}, {resumable}{journal}")
    if s["events"]:
        events = ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items()))
        lines.append(f"  events      {events}")
    return "\n".join(lines)


def id_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out: list[str] = []
    for i in ids:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in out)


def to_json(s: dict[str, Any]) -> str:
    return json.dumps(s, indent=2, sort_keys=True)


def _shared_peaks(det: h5py.Group) -> int:
    """2D peaks whose intensity is split between cliques (linker split "pixels")."""
    if "shares" not in det or not det["shares/peak_id"].shape[0]:
        return 0
    share = det["shares/share"][()]
    return int(np.unique(det["shares/peak_id"][()][share < 1.0]).shape[0])


LIVE_PEAK_COLUMNS = ("point_id", "s_raw", "f_raw", "sum_intensity", "npx", "clique_id")


def points_before(f: h5py.File, before: int) -> dict[str, dict[str, np.ndarray]]:
    """What an output file holds of its points 0..before-1 (those a resumed scan took
    before its restart, for the live view): `points`, their rows of the points table;
    `peaks`, their 2D peaks (LIVE_PEAK_COLUMNS, in the file's order: a peak's row is its
    id); `cliques`, every clique the file holds."""
    det = detector_of(f)
    points = read_table(f["entry/points"])
    keep = points["point_id"] < before
    table = f[f"entry/{det}/peaks2d"]
    n = int(np.searchsorted(table["point_id"][()], before))  # in point order
    return {"points": {k: v[keep] for k, v in points.items()},
            "peaks": {k: table[k][:n] for k in LIVE_PEAK_COLUMNS if k in table},
            "cliques": read_table(f[f"entry/{det}/cliques"])}
