"""A long scan in chunks: ranges of points replayed in parallel, linked at the end.

Each chunk is a replay of points a..b (`--first a --last b`: a file of its own,
`.NAME.chunkK.h5`, point ids from 0). The per-point chain is pure per point,
so the chunks' points, labelled pixels and 2D peaks are the serial replay's.
`merge_chunks` puts them together in point order (ids shifted back) and links
the whole scan once, block by block (`relink.write_linked`, the block replay's
linker path): the links across chunk borders are made there, and the file is
the one a serial replay writes. Chunk files are removed once the scan is written.
A chunk with bad or missing points (a Lima file gone or cut short, a motor shorter
than the frames) is merged with them: the scan is incomplete, as a serial replay's
is (a chunk of bad points only is kept for that, though it failed alone).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stream.config.schema import Config
from stream.core.messages import start_from_json
from stream.core.table import read_table
from stream.store.reader import detector_of


def chunk_ranges(npoints: int, size: int) -> list[tuple[int, int]]:
    """(first, last) of each chunk, inclusive."""
    return [(a, min(a + size, npoints) - 1) for a in range(0, npoints, size)]


def chunk_path(final: Path, k: int) -> Path:
    return final.with_name(f".{final.stem}.chunk{k:04d}{final.suffix}")


def read_chunk(path: Path) -> dict[str, Any]:
    """Everything of a chunk file the merge needs."""
    with h5py.File(path, "r", locking=False) as f:
        entry = f["entry"]
        det = detector_of(f)
        sp = entry[f"{det}/sparse"]
        return {
            "det": det, "status": str(entry.attrs["status"]),
            "reason": str(entry.attrs["reason"]),
            "points": read_table(entry["points"]),
            "sparse": {k: sp[k][()] for k in ("row", "col", "intensity", "label", "nnz")},
            "peaks": read_table(entry[f"{det}/peaks2d"]),
            "events": read_table(entry["process/events"]),
            "counters": {k: int(v) for k, v in entry["process/counters"].attrs.items()},
            "shape": (int(sp.attrs["shape0"]), int(sp.attrs["shape1"])),
            "itype": str(sp.attrs["itype"]),
        }


def _joined(parts: list[dict], firsts: list[int], key: str) -> dict[str, np.ndarray]:
    out = {}
    for col in parts[0][key]:
        values = [np.where(p[key][col] >= 0, p[key][col] + a, p[key][col])
                  if col == "point_id" else p[key][col]
                  for p, a in zip(parts, firsts, strict=True)]
        out[col] = np.concatenate(values) if values else values
    return out


def merged_status(parts: list[dict[str, Any]], counters: dict[str, int],
                  events: dict[str, np.ndarray]) -> tuple[str, str]:
    """The scan's (status, reason) from its chunks': success if they all are, else what
    the serial replay's collector says from the whole scan's counts, its first bad point
    by its id in the scan (a chunk's reason counts from the chunk's first point)."""
    from stream.run.ending import lowered

    if all(p["status"] == "success" for p in parts):
        return "success", ""
    bad = [i for i, kind in enumerate(events["kind"]) if kind == "bad"]
    first_bad = (f"point {int(events['point_id'][bad[0]])}: {events['message'][bad[0]]}"
                 if bad else "")
    return lowered("success", "", counters.get("missing", 0), counters.get("bad", 0),
                   counters.get("processed", 0), first_bad)


def merge_chunks(chunks: list[dict[str, Any]], firsts: list[int], start_json: str,
                 config_text: str, config_base: str, path: str,
                 identity: str = "") -> dict[str, Any]:
    """A dask task: the chunks' results (run_job summaries, in point order) into the
    scan's file `path`, linked as one scan; the chunk files are removed after."""
    from stream.offline.relink import write_linked
    from stream.offline.scanjob import failed, partial_path, record_identity
    from stream.store.reader import summary

    t0 = time.monotonic()
    final = Path(path)
    # a chunk with bad or missing points (incomplete, or fail with none ok) has a row
    # for each of its points: merged as they are, as a serial replay writes them
    lost = [c for c in chunks if c["status"] not in ("success", "incomplete", "fail")
            or not c.get("points")]
    if lost:
        return failed(final, f"chunk {lost[0]['file']}: {lost[0].get('reason', '')}", t0)
    parts = [read_chunk(Path(c["file"])) for c in chunks]
    counters: dict[str, int] = {}
    for p in parts:
        for k, v in p["counters"].items():
            counters[k] = counters.get(k, 0) + v
    config = Config.from_text(config_text, "<batch config>", config_base)
    part = partial_path(final)
    part.unlink(missing_ok=True)
    points, events = _joined(parts, firsts, "points"), _joined(parts, firsts, "events")
    status, reason = merged_status(parts, counters, events)
    if status == "fail":  # no point of the scan processed: no file, as for a whole scan
        for c in chunks:
            Path(c["file"]).unlink(missing_ok=True)
        return failed(final, reason, t0)
    try:
        write_linked(part, start_from_json(start_json), start_json, config, parts[0]["det"],
                     parts[0]["shape"], parts[0]["itype"], points,
                     _joined(parts, firsts, "sparse"), _joined(parts, firsts, "peaks"),
                     events, counters, status, reason, {})
        record_identity(part, identity)
    except OSError as exc:  # a full disk: no half-written file, the chunks are kept
        part.unlink(missing_ok=True)
        return failed(final, f"merge: {exc} (not kept: {part.name} removed)", t0)
    os.replace(part, final)
    for c in chunks:
        Path(c["file"]).unlink(missing_ok=True)
    out = summary(final)
    # the scan's wall time: from its first chunk's start (chunks run side by side: the
    # sum of their times said 159 s of a replay that took 89)
    began = min([c["started"] for c in chunks if "started" in c], default=None)
    out.update(file=str(final), host=os.uname().nodename,
               seconds=time.monotonic() - t0 if began is None else time.time() - began)
    return out
