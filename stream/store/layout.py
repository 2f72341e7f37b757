"""The layout of a new scan file (see `stream.store.scanfile` for the tree): its
groups, attributes and empty column tables, and the names of its tables."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

import h5py

from stream import __version__
from stream.core.table import STR, make_columns
from stream.store.identity import GIVEN, chunk_sizes, processing_hash
from stream.store.rows import POINT_STATUS


def now_iso() -> str:
    """Now, UTC, ISO 8601 to the millisecond (the file's times)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def config_hash(text: str) -> str:
    """The sha256 of a config's text (a resume needs the same)."""
    return hashlib.sha256(text.encode()).hexdigest()


# tables of a scan: name -> its group below /entry ("{det}": the detector's group)
TABLES = {"events": "process/events", "points": "points", "links": "points/links",
          "sparse": "{det}/sparse", "nnz": "{det}/sparse", "peaks": "{det}/peaks2d",
          "overlaps": "{det}/overlaps", "cliques": "{det}/cliques", "shares": "{det}/shares"}
# (2D peak, clique, the part of the peak's intensity that is the clique's): one row per
# member (share 1), several for a 2D peak split between cliques (linker split "pixels")
SHARE_COLUMNS = {"peak_id": "int64", "clique_id": "int64", "share": "float64"}
SPARSE_COLUMNS = {"row": "uint16", "col": "uint16", "intensity": "float32", "label": "int32"}


def create_layout(file: h5py.File, scan_id: str, detector: str, motors: list[str],
                  counters: list[str], peak_columns: dict[str, str],
                  clique_columns: dict[str, str], config_text: str, start_json: str,
                  trajectory: dict | None, calibration: str = "", given_text: str = "") -> None:
    """The groups, attributes and empty column tables of a new scan file; `calibration`:
    the JSON of the config's calibration files and their sha256
    (`stream.config.calibration`), "" for none; `given_text`: the config as the process
    was given it, when `config_text` holds values a control `set` changed since."""
    entry = file.create_group("entry")
    entry.attrs.update(NX_class="NXentry", scan_id=scan_id, status="running", reason="",
                       program="peakstream", version=__version__)
    proc = entry.create_group("process")
    proc.attrs["NX_class"] = "NXprocess"
    proc.create_dataset("config", data=config_text, dtype=STR)
    proc.create_dataset("config_sha256", data=config_hash(config_text), dtype=STR)
    if given_text and processing_hash(given_text) != processing_hash(config_text):
        proc["config"].attrs[GIVEN] = processing_hash(given_text)
    proc.create_dataset("start", data=start_json, dtype=STR)
    if calibration:
        proc.create_dataset("calibration", data=calibration, dtype=STR)
    proc.attrs.update(start_time=now_iso(), end_time="")
    proc.create_group("counters")
    proc.create_group("checkpoint").attrs.update(seq=0, time="", rows="{}")
    make_columns(proc.create_group("events"),
                 {"time": "float64", "point_id": "int64", "kind": STR, "message": STR}, 1024)
    points = entry.create_group("points")
    points.attrs["status_names"] = json.dumps(POINT_STATUS)
    points.attrs["trajectory"] = json.dumps(trajectory or {})
    cols: dict[str, Any] = {"point_id": "int64", "time": "float64", "status": "uint8",
                            "flags": STR}
    cols.update({f"motors/{m}": "float64" for m in motors})
    cols.update({f"counters/{c}": "float64" for c in counters})
    rows, peaks, pixels = chunk_sizes(start_json)  # sized to the scan when it says
    make_columns(points, cols, rows)
    links = points.create_group("links")
    links.attrs["table"] = "links"  # its own table, not columns of /entry/points
    make_columns(links, {"point_a": "int64", "point_b": "int64", "kind": STR}, rows)
    det = entry.create_group(detector)
    sparse = det.create_group("sparse")
    make_columns(sparse, SPARSE_COLUMNS, pixels)
    make_columns(sparse, {"nnz": "int64"}, rows)
    make_columns(det.create_group("peaks2d"),
                 {"point_id": "int64", **peak_columns, "clique_id": "int64"}, peaks)
    make_columns(det.create_group("overlaps"), {"peak_a": "int64", "peak_b": "int64",
                                                "npixels": "int32", "score": "float32"}, peaks)
    make_columns(det.create_group("cliques"), dict(clique_columns), peaks)
    make_columns(det.create_group("shares"), SHARE_COLUMNS, peaks)
