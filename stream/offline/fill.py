"""Complete a scan file that ended with missing or bad points, from the scan's recording.

A daemon killed mid-scan and restarted resumes the file from its last
checkpoint; the points sent while it was down are lost and the scan ends
`incomplete`, its missing point ids in `peakstream inspect`; a frame that could
not be read (a Lima file gone) makes a bad point, and the scan `incomplete`
too. Given the
recording, `peakstream replay RECORDING --fill FILE` (or `--resume` on such a
file) processes the scan again through the file's own processing config into
a new file next to it, checks that the points the file holds came out the
same (so the recording is this scan's), keeps the values the recording lacks
(a point's time) as the file held them, carries the file's events over, and
replaces the file with it: every table equals an uninterrupted run, bit for
bit, cliques across the gap included. The file records the fill
(`/entry/process` attribute `filled`: when, from what, which points; an event
"fill"); the incomplete file is kept as `FILE.before-fill`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.table import STR
from stream.offline.scanjob import SOURCE_ATTR
from stream.store.checkpoint import open_h5
from stream.store.identity import calibration_changes, processing_hash, recorded_calibration
from stream.store.layout import now_iso
from stream.store.reader import id_ranges
from stream.store.resume import FILLABLE
from stream.store.rows import POINT_STATUS


class FillError(ValueError):
    """The file cannot be filled from this recording (the text says why)."""


@dataclass
class FillTarget:
    """What a fill needs of the file to complete."""

    path: Path
    scan_id: str
    status: str
    config_text: str
    missing: list[int]  # the points to process again: missing or bad in the file
    npoints: int
    recorded: dict[str, Any] = field(default_factory=dict)  # the start's meta: what was read
    # the calibration files it was made with (stream.config.calibration); None: not recorded
    calibration: dict[str, Any] | None = None

    @property
    def work_path(self) -> Path:
        """The new file, written beside the old one (same file system: atomic rename)."""
        return self.path.with_name(f".{self.path.name}.fill.h5")


def fill_target(path: str | Path) -> FillTarget:
    """Read the file to complete; FillError if it has ended whole or is still open."""
    path = Path(path)
    try:
        f = open_h5(path)
    except OSError as exc:
        raise FillError(f"{path}: cannot open: {exc}") from None
    with f:
        if "entry" not in f or "process" not in f["entry"]:
            raise FillError(f"{path}: not a peakstream output file")
        entry = f["entry"]
        status = str(entry.attrs["status"])
        points = entry["points"]
        ids = points["point_id"][()]
        missing = ids[np.isin(points["status"][()], [POINT_STATUS.index("missing"),
                                                     POINT_STATUS.index("bad")])].tolist()
        text = entry["process/config"].asstr()[()]
        start = json.loads(entry["process/start"].asstr()[()])
        scan_id = str(entry.attrs["scan_id"])
        calibration = recorded_calibration(entry["process"])
    if status == "running":
        raise FillError(f"{path}: the scan is still open (status running): continue it "
                        f"with --resume first")
    if status not in FILLABLE and not missing:
        raise FillError(f"{path}: the scan ended {status} with every point; nothing to fill")
    npoints = int(start.get("npoints") or len(ids))
    return FillTarget(path, scan_id, status, text, missing, npoints, dict(start.get("meta") or {}),
                      calibration)


def check_config(target: FillTarget, config: Any) -> None:
    """The fill must process with the file's own processing config, and calibration
    files of the content the file was made with (else its points come out otherwise:
    the calibration, not the recording, would be to blame)."""
    if processing_hash(config.text()) != processing_hash(target.config_text):
        raise FillError(f"{target.path}: written with another processing config ([[node]], "
                        f"[linker], [source] detector / trajectory); fill with the file's "
                        f"own (give no --config)")
    changed = calibration_changes(target.calibration, config.calibration())
    if changed:
        raise FillError(f"{target.path}: made with calibration files of another content than "
                        f"the config's now: {'; '.join(changed)}; put those back (or give "
                        f"--config naming them) to fill it")


def finish_fill(target: FillTarget, inputs: list[str]) -> dict[str, Any]:
    """Check the new file against the old, carry the old events over, record the fill
    and put the new file in place of the old (kept as FILE.before-fill)."""
    new = target.work_path
    old_rows = _point_rows(target.path)
    new_rows = _point_rows(new)
    differ = [p for p, row in old_rows.items()
              if row["status"] == POINT_STATUS.index("ok") and new_rows.get(p) != row]
    if differ:
        new.unlink(missing_ok=True)
        raise FillError(f"{target.path}: the recording is not this scan: points "
                        f"{differ[:5]} came out other than the file holds them (motors, "
                        f"pixels); the file is left as it was")
    ok, gone, bad = (POINT_STATUS.index(s) for s in ("ok", "missing", "bad"))
    filled = [p for p in target.missing if new_rows.get(p, {}).get("status") == ok]
    still = [p for p, r in new_rows.items() if r["status"] == gone]
    if not filled:
        # the recording itself lacks them or cannot be read there either: nothing can
        new.unlink(missing_ok=True)
        raise FillError(f"{target.path}: the recording holds none of its "
                        f"{len(target.missing)} missing or bad point(s) "
                        f"({id_ranges(target.missing)}) readable: nothing to fill; the file "
                        f"is left as it was")
    record = {"time": now_iso(), "inputs": [os.fspath(x) for x in inputs],
              "points": filled, "still_missing": still,
              "still_bad": [p for p, r in new_rows.items() if r["status"] == bad],
              "was": target.status}
    with open_h5(target.path) as f:
        events = {k: f[f"entry/process/events/{k}"][()] for k in ("time", "point_id", "kind",
                                                                   "message")}
        history = json.loads(f["entry/process"].attrs.get("filled", "[]"))
        # what a replay --cluster made it from (the same recording): a rerun keeps it
        source = f["entry/process"].attrs.get(SOURCE_ATTR)
    import h5py

    with h5py.File(new, "r+") as f:
        _keep_values(target.path, f["entry/points"])
        proc = f["entry/process"]
        _append_events(proc["events"], events, record)
        proc.attrs["filled"] = json.dumps([*history, record])
        if source is not None:
            proc.attrs[SOURCE_ATTR] = source
    backup = target.path.with_name(target.path.name + ".before-fill")
    os.replace(target.path, backup)
    os.replace(new, target.path)
    return {**record, "backup": str(backup)}


def _point_rows(path: Path) -> dict[int, dict[str, Any]]:
    """Per point: status, motors and its pixel count, to recognise the same scan."""
    with open_h5(path) as f:
        entry = f["entry"]
        pts = entry["points"]
        det = next(k for k in entry if k not in ("process", "points"))
        nnz = entry[f"{det}/sparse/nnz"][()]
        ids, status = pts["point_id"][()], pts["status"][()]
        motors = {k: pts[f"motors/{k}"][()] for k in pts["motors"]} if "motors" in pts else {}
    return {int(p): {"status": int(status[i]), "nnz": int(nnz[i]) if i < len(nnz) else -1,
                     **{m: float(v[i]) for m, v in motors.items()}}
            for i, p in enumerate(ids)}


def _keep_values(old_path: Path, points: Any) -> None:
    """What the file held and the recording does not give (a recording without times, a
    counter it lacks: NaN in the new file) stays as the file held it, so a point's time
    survives a fill from frames alone."""
    with open_h5(old_path) as f:
        old = f["entry/points"]
        old_ids = old["point_id"][()]
        names = [n for n in _float_columns(old) if n in points]
        held = {n: old[n][()] for n in names}
    ids = points["point_id"][()]
    where = {int(p): i for i, p in enumerate(old_ids)}
    rows = np.array([where.get(int(p), -1) for p in ids], np.int64)
    for name, values in held.items():
        new = points[name][()]
        keep = (rows >= 0) & np.isnan(new)
        keep[keep] &= np.isfinite(values[rows[keep]])
        if keep.any():
            new[keep] = values[rows[keep]]
            points[name][...] = new


def _float_columns(points: Any) -> list[str]:
    """The per-point float columns: time, motors/<m>, counters/<c>."""
    names = ["time"] if "time" in points else []
    for group in ("motors", "counters"):
        if group in points:
            names += [f"{group}/{k}" for k in points[group]
                      if points[f"{group}/{k}"].dtype.kind == "f"]
    return names


def _append_events(group: Any, old: dict[str, np.ndarray], record: dict[str, Any]) -> None:
    """The old file's events (its crashes, resumes, parameter changes), then the fill."""
    n0 = group["time"].shape[0]
    msg = (f"filled from {', '.join(record['inputs'])}: {len(record['points'])} point(s) "
           f"that were missing or bad ({record['was']}); still missing: "
           f"{len(record['still_missing'])}; still bad: {len(record['still_bad'])}")
    rows = {"time": np.append(old["time"], time.time()),
            "point_id": np.append(old["point_id"], -1),
            "kind": [*(k.decode() if isinstance(k, bytes) else k for k in old["kind"]),
                     "fill"],
            "message": [*(m.decode() if isinstance(m, bytes) else m for m in old["message"]),
                        msg]}
    n = len(rows["time"])
    for name, values in rows.items():
        ds = group[name]
        ds.resize((n0 + n,))
        ds[n0:] = np.asarray(values, dtype=object if ds.dtype == STR or
                             ds.dtype.kind == "O" else ds.dtype)
