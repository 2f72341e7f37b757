"""EDF / CBF / TIFF series through fabio, the field's reader for these formats.

Inputs, concatenated in the order given:

* a numbered series, `data_%04d.edf`: files `--first` to `--last` (default: the
  lowest and highest numbers on disk); a file missing from the range leaves its
  points missing, it is not an error;
* a glob, `data_*.cbf`: the matching files in natural order (`img_9` before `img_10`);
* file names (a multi-frame EDF gives one point per frame).

Every file holds as many frames as the first readable one (usually 1); file k's
frame j is point `k * frames_per_file + j`. Motors and counters come from a
value spec (`common.parse_spec`), `header:KEY` reading each frame's own header.
A file or frame that cannot be read is a bad point naming the file and the frame.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import fabio
import numpy as np

from stream.core.messages import Point, Start
from stream.sources.files.common import (
    ValueSpec,
    all_specs,
    check_counts,
    check_dtype,
    error_point,
    header_value,
    make_start,
    native,
    point_values,
    scan_id_from,
    select,
)

log = logging.getLogger(__name__)

PRINTF = re.compile(r"%0?(\d*)d")
GLOB = re.compile(r"[*?\[]")


def is_pattern(text: str) -> bool:
    """A numbered series (printf) or a glob rather than one file name."""
    name = os.path.basename(text)
    return bool(PRINTF.search(name) or GLOB.search(name)) and not os.path.exists(text)


def natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def numbered_files(pattern: str, first: int | None = None, last: int | None = None,
                   warn: bool = True) -> list[str | None]:
    """The files of `pattern` from first to last; None where a file is missing."""
    head, name = os.path.split(pattern)
    m = PRINTF.search(name)
    if first is None or last is None:
        rx = re.compile(re.escape(name[:m.start()]) + r"(\d+)" + re.escape(name[m.end():]) + "$")
        found = sorted(int(g.group(1)) for p in os.listdir(head or ".")
                       if (g := rx.match(p)))
        if not found:
            raise FileNotFoundError(f"{pattern}: no file of this numbered series exists")
        first = found[0] if first is None else first
        last = found[-1] if last is None else last
    if last < first:
        raise ValueError(f"{pattern}: --last {last} is before --first {first}")
    paths = [os.path.join(head, name[:m.start()] + m.group(0) % n + name[m.end():])
             for n in range(first, last + 1)]
    slots = [p if os.path.isfile(p) else None for p in paths]
    if all(s is None for s in slots):
        raise FileNotFoundError(f"{pattern}: no file numbered {first}..{last} exists")
    gone = [p for p, s in zip(paths, slots, strict=True) if s is None]
    if gone and warn:
        log.warning("%s: %d of %d files missing (%s%s): their points will be missing",
                    pattern, len(gone), len(paths), ", ".join(gone[:3]),
                    " ..." if len(gone) > 3 else "")
    return slots


def expand(inputs: list[str], first: int | None = None, last: int | None = None,
           warn: bool = True) -> tuple[list[str | None], bool]:
    """File slots of the series and whether first/last were used as file numbers."""
    slots: list[str | None] = []
    numbered = any(PRINTF.search(os.path.basename(x)) and not os.path.exists(x)
                   for x in inputs)
    for text in inputs:
        name = os.path.basename(text)
        if os.path.exists(text):
            if os.path.isdir(text):
                raise ValueError(f"{text}: is a directory; give a file, a pattern "
                                 f"(data_%04d.edf) or a glob (data_*.edf)")
            slots.append(text)
        elif PRINTF.search(name):
            slots.extend(numbered_files(text, first, last, warn))
        elif GLOB.search(name):
            found = sorted((p for p in glob.glob(text) if os.path.isfile(p)), key=natural_key)
            if not found:
                raise FileNotFoundError(f"{text}: no file matches")
            slots.extend(found)
        else:
            raise FileNotFoundError(f"{text}: no such file")
    return slots, numbered


@dataclass(frozen=True)
class Template:
    """What every frame of the series must be."""

    path: str
    frames: int
    shape: tuple[int, int]
    dtype: str
    header: dict  # of its first frame: header:KEY specs are checked against it


def _template(slots: list[str | None]) -> Template:
    errors = []
    for path in (s for s in slots if s is not None):
        try:
            with fabio.open(path) as img:
                data = img.data
                if data is None or data.ndim != 2 or getattr(img, "incomplete_data", False):
                    raise ValueError("no complete 2D frame")
                dtype = check_dtype(data.dtype, f"{path} frame 0")
                return Template(path, max(int(img.nframes), 1), data.shape, dtype,
                                dict(img.header))
        except Exception as exc:  # fabio raises many kinds on damaged files
            errors.append(f"{path}: {type(exc).__name__}: {exc}")
            if len(errors) >= 3:
                break
    raise ValueError("no readable frame in the series: " + "; ".join(errors))


def read_fabio_series(inputs: list[str], *, motors: Mapping[str, ValueSpec] | None = None,
                      counters: Mapping[str, ValueSpec] | None = None,
                      time: ValueSpec | None = None, scan_id: str | None = None,
                      detector: str | None = None, first: int | None = None,
                      last: int | None = None, trajectory: dict | None = None
                      ) -> tuple[Start, Iterator[Point]]:
    """Start and points of an EDF / CBF / TIFF series (see the module docstring)."""
    if not inputs:
        raise ValueError("no input files")
    slots, numbered = expand(inputs, first, last)
    tpl = _template(slots)
    npoints = len(slots) * tpl.frames
    lo, hi = (0, npoints - 1) if numbered else select(npoints, first, last, inputs[0])
    motors, counters = dict(motors or {}), dict(counters or {})
    every = all_specs(motors, counters, time)
    for spec in every:
        if spec.kind == "hdf5":
            raise ValueError(f"{spec.name}={spec.text}: an HDF5 path needs HDF5 images; for "
                             f"a {tpl.path} series give header:KEY, a range, a list or a file")
    check_counts(every, hi - lo + 1)
    for spec in every:  # a key the first frame lacks is a typo, not 60 bad points
        if spec.kind == "header":
            try:
                header_value(tpl.header, spec.key)
            except ValueError as exc:
                raise ValueError(f"{spec.name}={spec.text}: {tpl.path}: {exc}") from None
    meta = {"source": "fabio", "inputs": list(inputs), "frames_per_file": tpl.frames,
            "motors": {k: v.text for k, v in motors.items()},
            "counters": {k: v.text for k, v in counters.items()}}
    headers = None
    if not trajectory and any(s.kind == "header" for s in motors.values()):
        headers = _header_motors(slots, tpl, lo, hi, motors)
    start = make_start(scan_id or scan_id_from(inputs[0]), detector or "detector", tpl.shape,
                       tpl.dtype, motors, counters, hi - lo + 1, trajectory, meta,
                       headers=headers)
    return start, _points(start, slots, tpl, lo, hi, motors, counters, time)


def _header_motors(slots: list[str | None], tpl: Template, lo: int, hi: int,
                   motors: dict[str, ValueSpec]) -> dict[str, np.ndarray]:
    """The header:KEY motors of every point (NaN where a file is missing or unreadable),
    read before the frames to derive the scan's trajectory (headers only where fabio
    can: one frame per file)."""
    specs = {m: s for m, s in motors.items() if s.kind == "header"}
    out = {m: np.full(hi - lo + 1, np.nan) for m in specs}
    for k, path in enumerate(slots):
        frames = [j for j in range(tpl.frames) if lo <= k * tpl.frames + j <= hi]
        if path is None or not frames:
            continue
        try:
            if tpl.frames == 1:
                headers = [dict(fabio.openheader(path).header)]
            else:
                with fabio.open(path) as img:
                    headers = [dict((img if j == 0 else img.getframe(j)).header)
                               for j in frames]
        except Exception as exc:  # the frame pass reports it as a bad point
            log.debug("%s: no header for the trajectory: %s", path, exc)
            continue
        for j, header in zip(frames, headers, strict=False):
            pid = k * tpl.frames + j - lo
            for m, spec in specs.items():
                try:
                    out[m][pid] = spec.at(pid, header)
                except (ValueError, KeyError):
                    pass
    return out


def _points(start: Start, slots: list[str | None], tpl: Template, lo: int, hi: int,
            motors: dict[str, ValueSpec], counters: dict[str, ValueSpec],
            time: ValueSpec | None) -> Iterator[Point]:
    det, sid = next(iter(start.detectors)), start.scan_id
    for k, path in enumerate(slots):
        frames = [j for j in range(tpl.frames) if lo <= k * tpl.frames + j <= hi]
        if path is None or not frames:
            continue  # a missing file: its points are never sent, so recorded missing
        try:
            img = fabio.open(path)
        except Exception as exc:  # corrupt header, unknown format, ...
            for j in frames:
                yield error_point(sid, k * tpl.frames + j - lo, f"{path} frame {j}", exc)
            continue
        with img:
            for j in frames:
                pid = k * tpl.frames + j - lo
                where = f"{path} frame {j}"
                try:
                    data, header = _frame(img, j, tpl)
                    t = time.at(pid, header) if time else float("nan")
                    point = Point(sid, pid, t, point_values(motors, pid, header),
                                  point_values(counters, pid, header), {det: data})
                except Exception as exc:
                    yield error_point(sid, pid, where, exc)
                    continue
                yield point
        if img.nframes > tpl.frames:
            log.warning("%s: %d frames, the series has %d per file (from %s); the rest are "
                        "not replayed", path, img.nframes, tpl.frames, tpl.path)


def _frame(img, j: int, tpl: Template) -> tuple[np.ndarray, dict]:
    """Frame j of an open fabio image and its header, checked against the series."""
    if j >= img.nframes:
        raise ValueError(f"the file has {img.nframes} frame(s), the series {tpl.frames} "
                         f"per file")
    frame = img if j == 0 else img.getframe(j)
    data = frame.data
    if data is None:
        raise ValueError("no data (truncated or unreadable)")
    if getattr(frame, "incomplete_data", False):
        raise ValueError("data stream is incomplete (truncated file)")
    if data.shape != tpl.shape:
        raise ValueError(f"frame is {'x'.join(map(str, data.shape))}, the series is "
                         f"{tpl.shape[0]}x{tpl.shape[1]} (from {tpl.path})")
    if data.dtype.name != tpl.dtype:
        raise ValueError(f"frame is {data.dtype.name}, the series is {tpl.dtype} "
                         f"(from {tpl.path})")
    return native(data), dict(frame.header)
