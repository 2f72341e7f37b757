"""HDF5 image stacks as ESRF Bliss / Lima and NeXus write them.

The frames are a 3D dataset (frames, rows, cols) named `FILE::/1.1/measurement/eiger`;
several such specs in a row are one scan that continues across files or scans.
Compressed datasets (bitshuffle-LZ4 and the other Eiger / Bliss filters through
hdf5plugin, gzip, lzf) are read one chunk of frames at a time, never the whole
stack. A virtual dataset whose source file is gone would read as fill values:
those frames are marked bad instead. Motors and counters come from datasets of
the same files (see `common.parse_spec`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle / LZ4 / Blosc filters with HDF5)
import numpy as np

from stream.core.messages import Point, Start
from stream.sources.files.common import (
    ValueSpec,
    all_specs,
    check_counts,
    check_dtype,
    detector_name,
    error_point,
    listed,
    make_start,
    native,
    point_values,
    scan_id_from,
    select,
)
from stream.sources.files.rotation import unread_rotation
from stream.sources.files.vds import lost_sources

log = logging.getLogger(__name__)

BLOCK_BYTES = 64 << 20  # frames read at once: one chunk, up to this size


@dataclass
class Segment:
    """One images dataset of the scan: frames [offset, offset + nframes) of the whole."""

    file: str
    path: str
    nframes: int
    shape: tuple[int, int]
    dtype: str
    block: int  # frames per read, aligned to the chunks
    offset: int = 0
    lost: tuple[tuple[int, int, str], ...] = ()  # (first, last, why) of unreadable VDS sources

    @property
    def name(self) -> str:
        return f"{self.file}::{self.path}"

    @property
    def scan_group(self) -> str:
        """The top group of the images path (/1.1 in /1.1/measurement/eiger)."""
        return "/" + self.path.strip("/").split("/")[0]


def parse_images(specs: list[str], files: list[str] | None = None) -> list[tuple[str, str]]:
    """`FILE::/path` specs as (file, path); a bare `/path` is looked for in each of `files`."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        file, sep, path = spec.rpartition("::")
        if sep:
            if not file or not path:
                raise ValueError(f"--images {spec!r}: give FILE::/path/to/dataset")
            out.append((file, "/" + path.lstrip("/")))
        elif files:
            out.extend((f, "/" + spec.lstrip("/")) for f in files)
        else:
            raise ValueError(f"--images {spec!r}: no file given (FILE::/path, or the file "
                             f"as INPUT)")
    return out


def open_file(path: str) -> h5py.File:
    """An HDF5 file opened for reading; the error names the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise OSError(f"{path}: cannot open as HDF5 (truncated or not HDF5?): {exc}") from None


def get_dataset(f: h5py.File, path: str, what: str = "dataset",
                frames: bool = True) -> h5py.Dataset:
    """f[path] as a dataset, or a ValueError naming the file and the path (and what it
    could have been: the file's image stacks, or with `frames` false the 1D datasets
    beside the path, for a motor or a counter)."""
    try:
        obj = f.get(path)
    except (KeyError, OSError, RuntimeError) as exc:  # a broken external link
        raise ValueError(f"{f.filename}: cannot open {path!r}: {exc}") from None
    if isinstance(obj, h5py.Dataset):
        return obj
    why = (_broken_link(f, path) or f"no {what} {path!r}" if obj is None
           else f"{path!r} is a group, not a {what}")
    raise ValueError(f"{f.filename}: {why}{_hint(f) if frames else _hint_1d(f, path)}")


def _broken_link(f: h5py.File, path: str) -> str:
    """Why `path` does not resolve when one of its parts is a link to nothing (a Lima
    file moved away from its master, say), or ''."""
    parts = [p for p in path.split("/") if p]
    for k in range(1, len(parts) + 1):
        at = "/" + "/".join(parts[:k])
        try:
            link = f.get(at, getlink=True)
        except (KeyError, OSError, RuntimeError):
            return ""
        if link is None:
            return ""
        if f.get(at) is not None:
            continue
        if isinstance(link, h5py.ExternalLink):
            target = Path(f.filename).parent / link.filename
            why = (f"{link.filename} is there but is not a readable HDF5 file with that "
                   f"path (damaged, truncated, or still being written?)" if target.is_file()
                   else f"is {link.filename} there, beside this file?")
            return (f"{at!r} is an external link to {link.filename}::{link.path}, which "
                    f"cannot be opened ({why})")
        if isinstance(link, h5py.SoftLink):
            return f"{at!r} is a soft link to {link.path!r}, which does not exist"
        return ""
    return ""


def image_stacks(f: h5py.File, limit: int = 8) -> list[str]:
    """Paths of the 3D datasets of a file (what --images could name), at most `limit`,
    soft and external links to them included: a Bliss master file holds its detector's
    frames only as links into the Lima files."""
    found: list[str] = []

    def visit(name: str, link: Any) -> bool | None:
        obj = f.get(name) if isinstance(link, h5py.SoftLink | h5py.ExternalLink) else None
        if obj is None and isinstance(link, h5py.HardLink):
            obj = f[name]
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            found.append("/" + name)
        return True if len(found) >= limit else None

    with contextlib.suppress(Exception):  # a damaged file: no hint, the real error follows
        f.visititems_links(visit)
    return found


def _hint(f: h5py.File) -> str:
    stacks = image_stacks(f)
    return f" (3D datasets in the file: {', '.join(stacks)})" if stacks else ""


def _hint_1d(f: h5py.File, path: str, most: int = 16) -> str:
    """' (1D datasets in GROUP: ...)': what a motor path could name, beside `path`."""
    group = path.rstrip("/").rsplit("/", 1)[0] or "/"
    if group == path:
        group = "/"
    names = []
    with contextlib.suppress(KeyError, OSError, RuntimeError):
        g = f.get(group)
        for k in g if isinstance(g, h5py.Group) else ():
            with contextlib.suppress(KeyError, OSError, RuntimeError):  # a link to nothing
                v = g.get(k)
                if isinstance(v, h5py.Dataset) and v.ndim <= 1:
                    names.append(k)
    return f" (1D datasets in {group}: {listed(sorted(names), most)})" if names else ""


def _segment(f: h5py.File, path: str) -> Segment:
    ds = get_dataset(f, path, "images dataset")
    where = f"{f.filename}::{path}"
    if ds.ndim != 3:
        raise ValueError(f"{where}: is {ds.ndim}D {ds.shape}; an image stack is 3D "
                         f"(frames, rows, cols)")
    dtype = check_dtype(ds.dtype, where)
    frame_bytes = max(ds.shape[1] * ds.shape[2] * ds.dtype.itemsize, 1)
    block = ds.chunks[0] if ds.chunks else 1
    if block * frame_bytes > BLOCK_BYTES:
        block = 1
    lost = lost_sources(ds, f.filename) if ds.is_virtual else ()
    return Segment(f.filename, path, ds.shape[0], (ds.shape[1], ds.shape[2]), dtype, block,
                   lost=lost)


def read_hdf5_stack(images: list[str], *, motors: Mapping[str, ValueSpec] | None = None,
                    counters: Mapping[str, ValueSpec] | None = None,
                    time: ValueSpec | None = None, scan_id: str | None = None,
                    detector: str | None = None, first: int | None = None,
                    last: int | None = None, trajectory: dict | None = None,
                    files: list[str] | None = None) -> tuple[Start, Iterator[Point]]:
    """Start and points of the image stack(s) `images` (FILE::/path; bare paths in `files`)."""
    specs = parse_images(images, files)
    if not specs:
        raise ValueError("no images dataset given (--images FILE::/path)")
    segments: list[Segment] = []
    for file, path in specs:
        with open_file(file) as f:
            seg = _segment(f, path)
        if segments and (seg.shape, seg.dtype) != (segments[0].shape, segments[0].dtype):
            s0 = segments[0]
            raise ValueError(f"{seg.name}: frames are {seg.shape[0]}x{seg.shape[1]} "
                             f"{seg.dtype}, but {s0.name} has {s0.shape[0]}x{s0.shape[1]} "
                             f"{s0.dtype}")
        seg.offset = sum(s.nframes for s in segments)
        segments.append(seg)
    nframes = sum(s.nframes for s in segments)
    lo, hi = select(nframes, first, last, segments[0].name)
    motors, counters = dict(motors or {}), dict(counters or {})
    every = all_specs(motors, counters, time)
    for spec in every:
        read_values(spec, segments, nframes, hi + 1, lo)
    check_counts(every, hi - lo + 1)
    s0 = segments[0]
    if not motors and (rot := unread_rotation(s0.file, s0.scan_group)):
        log.warning("%s: no --motor given, so no position is read (the trajectory is the "
                    "default sweep, a 360-degree scan is not wrapped), but the scan has "
                    "%s: give --motor omega=%s", s0.name, rot, rot)
    det = detector or detector_name(_detector_default(s0.path, s0.file))
    sid = scan_id or scan_id_from(s0.file, _scan_suffix(s0.path))
    meta = {"source": "hdf5", "images": [s.name for s in segments],
            "motors": {k: v.text for k, v in motors.items()},
            "counters": {k: v.text for k, v in counters.items()}}
    start = make_start(sid, det, s0.shape, s0.dtype, motors, counters, hi - lo + 1,
                       trajectory, meta, first=lo)
    return start, _points(start, segments, lo, hi, motors, counters, time)


def _detector_default(path: str, file: str = "") -> str:
    """eiger for /1.1/measurement/eiger and /entry/instrument/eiger/data; for a Lima
    file's /entry_0000/measurement/data, which names no detector, the file's
    (eiger_0000.h5: eiger)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[-1] in ("data", "image", "images"):
        if parts[-2] not in ("measurement", "instrument", "data") and not re.fullmatch(
                r"entry(_\d+)?|\d+\.\d+", parts[-2]):
            return parts[-2]
        stem = re.sub(r"_\d+$", "", Path(file).stem) if file else ""
        return stem or "detector"
    return parts[-1] if parts else "detector"


def _scan_suffix(path: str) -> str:
    top = path.strip("/").split("/")[0]
    return f"_{top}" if top and top[0].isdigit() else ""


# ------------------------------------------------------------------ values


def read_values(spec: ValueSpec, segments: list[Segment], nframes: int,
                needed: int | None = None, lo: int = 0) -> None:
    """Fill `spec.values` (one per frame) for an HDF5 spec; other kinds are left as they are.
    A column shorter than its frames (an interrupted scan's counters stop short of its
    frames; with one entry per pass, in any entry) leaves the frames past its end without
    a value: `spec.gaps`, whose points are bad with the reason (`needed`: the frames
    replayed end there, --last, so later ones need none; `lo`: they start there,
    --first); longer ones are cut."""
    needed = nframes if needed is None else needed
    if spec.kind == "header":
        raise ValueError(f"{spec.name}={spec.text}: HDF5 frames have no header; give a "
                         f"dataset, a range, a list or a number")
    if spec.kind != "hdf5":
        return
    parts, short = [], []
    for file, path in spec.sources:
        if file is None and not path.startswith("/"):  # relative: under each scan group
            for seg in segments:
                parts.append(_read_column(spec, seg.file, f"{seg.scan_group}/{path}",
                                          seg.nframes, short))
        else:
            parts.append(_read_column(spec, file or segments[0].file, "/" + path.lstrip("/"),
                                      None, short))
    values = np.concatenate([v for v, _ in parts]) if parts else np.empty(0)
    gaps = np.concatenate([g for _, g in parts]) if parts else np.empty(0, bool)
    if len(values) == 1 and nframes > 1 and all(len(v) == 1 for v, _ in parts):
        values, gaps = np.full(nframes, values[0]), np.zeros(nframes, bool)
    if len(values) > nframes:
        log.warning("%s=%s: %d values for %d frames; the extra ones are not used", spec.name,
                    spec.text, len(values), nframes)
    elif len(values) < nframes:
        short.append(f"{len(values)} values for {nframes} frames")
        values = np.concatenate([values, np.full(nframes - len(values), np.nan)])
        gaps = np.concatenate([gaps, np.ones(nframes - len(gaps), bool)])
    spec.values, gaps = values[:nframes], gaps[:nframes]
    lost = int(gaps[lo:needed].sum())
    if lost:
        spec.gaps, spec.gap_reason = gaps, "; ".join(short) + ": an interrupted scan?"
        first = lo + int(np.flatnonzero(gaps[lo:])[0])
        hint = (f"; --last {first - 1} replays the frames before them"
                if first > lo and gaps[first:needed].all() else "")
        log.warning("%s=%s: %s: the %d frame(s) without a value are bad points%s",
                    spec.name, spec.text, "; ".join(short), lost, hint)


def _read_column(spec: ValueSpec, file: str, path: str, n: int | None,
                 short: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One HDF5 source of a spec as float64, and its gaps (True: no value): a scalar
    repeats (n times if n is given); a column shorter than the n frames of its entry
    is padded with gaps (`short` says so)."""
    with open_file(file) as f:
        ds = get_dataset(f, path, f"dataset for {spec.name}", frames=False)
        if ds.ndim > 1 or ds.dtype.kind not in "iufb":
            raise ValueError(f"{file}::{path} ({spec.name}): must be a number or one number "
                             f"per frame, is {ds.dtype} {ds.shape}")
        scalar = ds.ndim == 0
        values = np.atleast_1d(ds[()]).astype(np.float64)
    if scalar:
        values = np.full(n or 1, values[0])
    elif n is not None:
        got = min(len(values), n)
        if got < n:
            short.append(f"{file}::{path}: {got} values for the {n} frames of this entry")
        values = np.concatenate([values[:got], np.full(n - got, np.nan)])
        return values, np.arange(n) >= got
    return values, np.zeros(len(values), bool)


# ------------------------------------------------------------------ frames


def _points(start: Start, segments: list[Segment], lo: int, hi: int,
            motors: dict[str, ValueSpec], counters: dict[str, ValueSpec],
            time: ValueSpec | None) -> Iterator[Point]:
    det, sid = next(iter(start.detectors)), start.scan_id
    for seg in segments:
        a, b = max(lo, seg.offset), min(hi, seg.offset + seg.nframes - 1)
        if a > b:
            continue
        try:
            f = open_file(seg.file)
            ds = get_dataset(f, seg.path)
        except (OSError, ValueError) as exc:  # gone since the start: every frame is bad
            for k in range(a, b + 1):
                yield error_point(sid, k - lo, f"{seg.name} frame {k - seg.offset}", exc)
            continue
        with f:
            for k, frame in _frames(ds, seg, a - seg.offset, b - seg.offset):
                pid, index = k + seg.offset - lo, k + seg.offset
                where = f"{seg.name} frame {k}"
                if isinstance(frame, Exception):
                    yield error_point(sid, pid, where, frame)
                    continue
                try:
                    t = time.at(pid, frame=index) if time else float("nan")
                    yield Point(sid, pid, t, point_values(motors, pid, frame=index),
                                point_values(counters, pid, frame=index), {det: frame})
                except ValueError as exc:
                    yield error_point(sid, pid, where, exc)


def _frames(ds: h5py.Dataset, seg: Segment, a: int, b: int
            ) -> Iterator[tuple[int, np.ndarray | Exception]]:
    """(frame index, frame or the read error) for frames a..b of one dataset, read a
    chunk of frames at a time; a failed chunk is retried frame by frame."""
    i0 = (a // seg.block) * seg.block
    while i0 <= b:
        i1 = min(i0 + seg.block, seg.nframes)
        lo, hi = max(i0, a), min(i1 - 1, b)
        lost = [(x, y, name) for x, y, name in seg.lost if x <= hi and y >= lo]
        block = None
        if not lost:
            try:
                block = native(ds[lo:hi + 1])
            except Exception as exc:  # h5py raises OSError, RuntimeError, ValueError ...
                log.debug("%s: frames %d..%d: %s; reading them one by one", seg.name, lo, hi,
                          exc)
        for k in range(lo, hi + 1):
            if block is not None:
                yield k, block[k - lo]
                continue
            gone = [why for x, y, why in lost if x <= k <= y]
            if gone:
                yield k, OSError(gone[0])
                continue
            try:
                yield k, native(ds[k])
            except Exception as exc:
                yield k, exc
        i0 = i1
